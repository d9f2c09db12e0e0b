"""The stream-quality steps (dedupe, outlier, stuck, rate_limit) and their bounded state."""

from __future__ import annotations

import random
import statistics
from array import array
from bisect import bisect_left
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.outlier import (
    HampelWindow,
    OutlierStep,
    ZScoreWindow,
    median_and_mad,
    position,
    shortest_span,
)
from edge_agent.pipeline.series_state import DeviceTable, add_series
from edge_agent.pipeline.steps import CleaningStepConfig, build_step
from fieldline.wire import FlagRecord, Point

STEP_CONFIG: TypeAdapter[Any] = TypeAdapter(CleaningStepConfig)


class Run:
    """A step with a context whose drop counter and sink the test can read."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.step = build_step(STEP_CONFIG.validate_python(config))
        self.sink = ListSink()
        self.drops: Counter[tuple[str, str]] = Counter()
        self.ctx = StepContext(self.sink, self._count)

    def _count(self, step: str, reason: str, n: int = 1) -> None:
        self.drops[(step, reason)] += n

    def __call__(
        self, metrics: dict[str, Any], ts: float = 1000.0, device: str = "dev-1"
    ) -> dict[str, Any] | None:
        point = self.step.apply(Point(device, ts, dict(metrics)), self.ctx)
        return None if point is None else point.metrics

    def series(self, values: list[float], metric: str = "x", device: str = "dev-1") -> list[Any]:
        """Feed one value per second; returns what came out for the metric (``None`` where it was removed)."""
        out = []
        for i, value in enumerate(values):
            kept = self({metric: value}, ts=float(i), device=device)
            out.append(None if kept is None else kept.get(metric))
        return out

    @property
    def flags(self) -> list[FlagRecord]:
        return [r for r in self.sink.records if isinstance(r, FlagRecord)]


def invalid(config: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        STEP_CONFIG.validate_python(config)
    return str(err.value)


# --------------------------------------------------------------------------------------------------- dedupe


def test_dedupe_drops_repeated_timestamps_per_device() -> None:
    run = Run({"type": "dedupe"})
    assert run({"t": 1}, ts=10) == {"t": 1}
    assert run({"t": 2}, ts=10) is None
    assert run({"t": 1}, ts=10, device="dev-2") == {"t": 1}
    assert run({"t": 1}, ts=11) == {"t": 1}
    assert run({"t": 1}, ts=9) == {"t": 1}  # late but new
    assert run({"t": 1}, ts=9) is None
    assert run.drops == {("dedupe", "duplicate"): 2}


def test_dedupe_remembers_only_the_last_window_timestamps() -> None:
    run = Run({"type": "dedupe", "window": 4})
    for ts in range(1, 6):
        assert run({"t": ts}, ts=ts) is not None
    assert run({"t": 0}, ts=1) is not None  # forgotten: the window holds 2..5
    assert run({"t": 0}, ts=3) is None
    seen = run.step._devices["dev-1"]  # type: ignore[attr-defined]
    assert len(seen.recent) == 4


def test_dedupe_config_errors() -> None:
    assert "greater than or equal to 1" in invalid({"type": "dedupe", "window": 0})
    assert "less than or equal to 4096" in invalid({"type": "dedupe", "window": 10_000})


# --------------------------------------------------------------------------------------------------- outlier


def noisy_series(seed: int, n: int = 3000, every: int = 97) -> tuple[list[float], set[int]]:
    """A level of 20 with gaussian noise (sigma 0.5) and a spike of 5 to 10 every ``every`` samples."""
    rng = random.Random(seed)
    values = [20 + rng.gauss(0, 0.5) for _ in range(n)]
    spikes = set(range(every // 2, n, every))
    for i in spikes:
        values[i] += rng.choice((-1, 1)) * rng.uniform(5, 10)
    return values, spikes


@pytest.mark.parametrize("method", ["hampel", "zscore"])
def test_outlier_finds_injected_spikes(method: str) -> None:
    values, spikes = noisy_series(seed=11)
    run = Run({"type": "outlier", "method": method, "window": 30, "threshold": 4})
    out = run.series(values)
    dropped = {i for i, v in enumerate(out) if v is None}
    assert spikes <= dropped
    assert len(dropped - spikes) <= len(values) // 200  # false positives under 0.5%
    assert run.drops == {("outlier", "outlier"): len(dropped)}
    assert all(out[i] == values[i] for i in range(len(values)) if i not in dropped)


def test_hampel_resists_outliers_already_in_the_window_where_zscore_does_not() -> None:
    warm_up = [20.0, 20.2, 19.9, 20.1, 40.0, 20.0, 19.8, 0.0, 20.3, 20.1]  # accepted before judging starts
    config = {"type": "outlier", "window": 30, "min_samples": 10, "threshold": 3}
    hampel = Run({**config, "method": "hampel"}).series([*warm_up, 26.0])
    zscore = Run({**config, "method": "zscore"}).series([*warm_up, 26.0])
    assert hampel[-1] is None
    assert zscore[-1] == 26.0


def test_outlier_flag_keeps_the_value() -> None:
    values, spikes = noisy_series(seed=3, n=500)
    run = Run({"type": "outlier", "action": "flag", "threshold": 4})
    assert run.series(values) == values
    flagged = {int(f.ts) for f in run.flags if f.flag == "outlier"}
    assert spikes <= flagged
    assert all(f.device_id == "dev-1" and f.metric == "x" and f.detail for f in run.flags)
    assert not run.drops


@pytest.mark.parametrize(("method", "center"), [("hampel", 20.0), ("zscore", 20.4)])
def test_outlier_replace_uses_the_window_center(method: str, center: float) -> None:
    base = [21.0, 20.0, 21.0, 20.0, 20.0, 21.0, 20.0, 21.0, 20.0, 20.0, 21.0]  # the window: six 20s, four 21s
    run = Run({"type": "outlier", "method": method, "window": 10, "min_samples": 10, "action": "replace"})
    out = run.series([*base, 90.0])
    assert out[-1] == pytest.approx(center)
    assert run.drops == {("outlier", "outlier"): 1}


@pytest.mark.parametrize("method", ["hampel", "zscore"])
def test_outlier_level_shift_restarts_the_window(method: str) -> None:
    rng = random.Random(5)
    before = [20 + rng.gauss(0, 0.1) for _ in range(100)]
    after = [50 + rng.gauss(0, 0.1) for _ in range(100)]
    run = Run({"type": "outlier", "method": method, "window": 30})  # max_consecutive = 10
    out = run.series([*before, *after, 80.0, 50.0])
    assert out[100:109] == [None] * 9
    assert out[109:200] == after[9:]
    assert out[200] is None  # a spike on the new level is still caught
    assert out[201] == 50.0
    shifts = [f for f in run.flags if f.flag == "level_shift"]
    assert [f.ts for f in shifts] == [109.0]
    assert run.drops == {("outlier", "outlier"): out[:100].count(None) + 10}


def test_outlier_runs_are_broken_by_any_accepted_value() -> None:
    values = [20.0, 20.1, 19.9] * 10
    for i in range(30):
        values.extend([20.0, 90.0] if i % 2 else [20.1, -50.0])
    run = Run({"type": "outlier", "window": 9, "max_consecutive": 2})
    out = run.series(values)
    assert out.count(None) == 30
    assert not run.flags


def test_outlier_judges_only_finite_numbers_after_min_samples() -> None:
    run = Run({"type": "outlier", "window": 10, "min_samples": 5, "metrics": ["x*"]})
    assert run.series([20.0, 20.0, 20.1, 1000.0]) == [20.0, 20.0, 20.1, 1000.0]  # not judged yet
    for value in (True, "high", None, float("nan"), float("inf"), 10**400):
        assert run({"x": value}) == {"x": value}
    assert run({"y": 1e9}) == {"y": 1e9}
    window = run.step._devices["dev-1"]["x"]  # type: ignore[attr-defined]
    assert window.values() == [20.0, 20.0, 20.1, 1000.0]


def test_outlier_min_deviation_and_quantised_windows() -> None:
    # More than half the window is one value: the MAD is 0 and the mean absolute deviation takes over.
    steady = [21.0, 21.0, 21.1] * 10
    run = Run({"type": "outlier", "window": 30})
    assert run.series([*steady, 21.1, 21.5]) == [*steady, 21.1, None]
    flat = Run({"type": "outlier", "window": 10, "min_deviation": 0.5})
    assert flat.series([*[7.0] * 10, 7.4, 7.6]) == [*[7.0] * 10, 7.4, None]


def test_outlier_windows_stay_bounded_and_sorted() -> None:
    rng = random.Random(9)
    run = Run({"type": "outlier", "window": 25, "action": "flag"})
    run.series([rng.gauss(0, 1) for _ in range(5000)])
    window = run.step._devices["dev-1"]["x"]  # type: ignore[attr-defined]
    assert isinstance(window, HampelWindow)
    assert window.count == 25
    assert window.sorted_values() == sorted(window.values())


def test_zscore_running_statistics_do_not_drift() -> None:
    rng = random.Random(2)
    run = Run({"type": "outlier", "method": "zscore", "window": 50, "threshold": 100})
    run.series([1e6 + rng.gauss(0, 1) for _ in range(20_000)])
    window = run.step._devices["dev-1"]["x"]  # type: ignore[attr-defined]
    assert isinstance(window, ZScoreWindow)
    assert window.mean == pytest.approx(statistics.fmean(window.ring), rel=1e-12)
    assert window.sq_dev / 50 == pytest.approx(statistics.pvariance(window.ring), rel=1e-6)


@given(st.lists(st.one_of(st.integers(-5, 5).map(float), st.floats(-1e6, 1e6)), min_size=1, max_size=60))
def test_median_and_mad_match_the_definition(values: list[float]) -> None:
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    assert median_and_mad(array("d", sorted(values)), len(values)) == (
        pytest.approx(median),
        pytest.approx(mad),
    )


@given(
    st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6)), max_size=70),
    st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6)),
    st.integers(1, 70),
)
def test_sorted_window_searches_match_bisect_and_the_definition(
    values: list[float], x: float, run: int
) -> None:
    """The searches the compiled Hampel window uses (C loops where compiled, ``bisect`` otherwise)."""
    ordered = array("d", sorted(values))
    n = len(ordered)
    assert position(ordered, n, x) == bisect_left(sorted(values), x)
    if run <= n:
        spans = [ordered[i + run - 1] - ordered[i] for i in range(n - run + 1)]
        assert shortest_span(ordered, n, run) == min(spans)


@given(st.integers(3, 12), st.lists(st.integers(-4, 4).map(float) | st.floats(-1e3, 1e3), max_size=80))
def test_hampel_window_keeps_the_last_values_in_order_and_sorted(size: int, values: list[float]) -> None:
    """Duplicates included: each add replaces the oldest value in the sorted buffer in place."""
    config = STEP_CONFIG.validate_python({"type": "outlier", "window": size})
    window = HampelWindow(build_step(config)._params)  # type: ignore[attr-defined]
    for i, x in enumerate(values):
        window.add(x)
        last = values[max(0, i + 1 - size) : i + 1]
        assert window.values() == last
        assert window.sorted_values() == sorted(last)


def reference_hampel(
    values: list[float],
    window: int,
    threshold: float,
    min_samples: int,
    max_consecutive: int,
    min_deviation: float,
) -> list[tuple[str, float]]:
    """The Hampel step of docs/pipeline-cleaning.md written plainly: ``statistics.median`` over a list, every
    judgement from scratch. Returns one ``(verdict, center)`` per value: ``keep``, ``outlier`` or ``shift``."""
    accepted: list[float] = []
    rejected: list[float] = []
    out = []
    for x in values:
        verdict, center = "keep", 0.0
        if len(accepted) >= min_samples:
            center = statistics.median(accepted)
            mad = statistics.median(abs(v - center) for v in accepted)
            if mad > 0:
                scale = 1.4826 * mad
            else:
                below = [v for v in accepted if v < center]
                above = [v for v in accepted if v >= center]
                mean_abs = sum(above) - sum(below) + center * (2 * len(below) - len(accepted))
                scale = 1.2533 * mean_abs / len(accepted)
            if abs(x - center) > max(threshold * scale, min_deviation):
                verdict = "outlier"
        if verdict == "keep":
            rejected = []
            accepted = [*accepted, x][-window:]
        else:
            rejected.append(x)
            if len(rejected) >= max_consecutive:
                verdict, accepted, rejected = "shift", rejected, []
        out.append((verdict, center))
    return out


def _series(draw: st.DrawFn) -> list[float]:
    """Noise around a level (scaled, quantised or not), with spikes, level shifts and runs of one value."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    level = draw(st.sampled_from([0.0, 20.0, -3.5, 1e6, 1e-6]))
    sigma = draw(st.sampled_from([1e-9, 0.01, 0.5, 3.0, 1e4]))
    quantum = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]))
    values = []
    for _ in range(draw(st.integers(1, 400))):
        roll = rng.random()
        if roll < 0.01:
            level += rng.choice((-1, 1)) * sigma * rng.uniform(5, 50)  # a level shift
        x = level + rng.gauss(0, sigma)
        if roll > 0.97:
            x += rng.choice((-1, 1)) * sigma * rng.uniform(2, 20)  # a spike, some of them near the limit
        if quantum:
            x = round(x / quantum) * quantum
        values.append(x)
    return values


@given(
    st.composite(lambda draw: _series(draw))(),
    st.integers(3, 64),
    st.sampled_from([1.0, 2.0, 3.0, 3.5]),
    st.sampled_from([0.0, 0.0, 0.05, 2.0]),
    st.data(),
)
def test_hampel_matches_a_plain_reference(
    values: list[float], window: int, threshold: float, min_deviation: float, data: st.DataObject
) -> None:
    """The sure band and the sorted window give exactly the verdicts of a from-scratch Hampel filter."""
    min_samples = data.draw(st.integers(3, window))
    max_consecutive = data.draw(st.integers(2, window))
    config = {
        "type": "outlier",
        "window": window,
        "threshold": threshold,
        "min_samples": min_samples,
        "max_consecutive": max_consecutive,
        "min_deviation": min_deviation,
        "action": "flag",
    }
    run = Run(config)
    run.series(values)
    flags = {int(f.ts): f.flag for f in run.flags}
    got = [
        {"outlier": "outlier", "level_shift": "shift"}.get(flags.get(i, ""), "keep")
        for i in range(len(values))
    ]
    expected = reference_hampel(values, window, threshold, min_samples, max_consecutive, min_deviation)
    assert got == [verdict for verdict, _ in expected]


@given(
    st.lists(
        st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3), st.floats(1e9, 1e9 + 1)),
        min_size=3,
        max_size=60,
    ),
    st.lists(
        st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3), st.floats(1e9, 1e9 + 1)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([0.5, 1.0, 3.0]),
    st.sampled_from([0.0, 0.5]),
)
def test_hampel_sure_band_is_within_every_later_limit(
    start: list[float], later: list[float], threshold: float, min_deviation: float
) -> None:
    """Every value inside the band is within the exact limit after each of the adds the band is valid for."""
    config = STEP_CONFIG.validate_python(
        {"type": "outlier", "window": len(start), "threshold": threshold, "min_deviation": min_deviation}
    )
    window = HampelWindow(build_step(config)._params)  # type: ignore[attr-defined]
    for x in start:
        window.add(x)
    window.outlier(start[0])  # judges exactly and computes the band of this content
    if not window.credit:
        return
    lo, hi, credit = window.lo, window.hi, window.credit
    probes = [lo, hi, (lo + hi) / 2]
    for x in [None, *later][:credit]:
        if x is not None:
            window.add(x)
        exact = HampelWindow(window.params)
        exact.restart(window.values())
        for probe in probes:
            assert not exact.outlier(probe)


def test_hampel_sure_band_serves_most_judgements_of_steady_noise() -> None:
    rng = random.Random(4)
    window = HampelWindow(build_step(STEP_CONFIG.validate_python({"type": "outlier", "window": 30}))._params)  # type: ignore[attr-defined]
    inside = 0
    for _ in range(3000):
        x = rng.gauss(0, 1)
        if window.credit and window.lo <= x <= window.hi:
            inside += 1
        elif window.outlier(x):
            continue
        window.add(x)
    assert inside > 1500


def test_outlier_defaults_follow_the_window() -> None:
    config = STEP_CONFIG.validate_python({"type": "outlier", "window": 60})
    assert (config.effective_min_samples, config.effective_max_consecutive) == (30, 20)
    small = STEP_CONFIG.validate_python({"type": "outlier", "window": 3})
    assert (small.effective_min_samples, small.effective_max_consecutive) == (3, 2)
    assert isinstance(build_step(config), OutlierStep)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"window": 2}, "greater than or equal to 3"),
        ({"window": 2048}, "less than or equal to 1024"),
        ({"window": 10, "min_samples": 20}, "min_samples (20) cannot exceed window (10)"),
        ({"window": 10, "max_consecutive": 11}, "max_consecutive (11) cannot exceed window (10)"),
        ({"min_samples": 2}, "greater than or equal to 3"),
        ({"max_consecutive": 1}, "greater than or equal to 2"),
        ({"threshold": 0}, "greater than 0"),
        ({"method": "iqr"}, "'hampel' or 'zscore'"),
        ({"action": "replace_median"}, "'drop', 'flag' or 'replace'"),
        ({"min_deviation": -1}, "greater than or equal to 0"),
    ],
)
def test_outlier_config_errors(config: dict[str, Any], message: str) -> None:
    assert message in invalid({"type": "outlier", **config})


# --------------------------------------------------------------------------------------------------- stuck


def test_stuck_flags_once_and_clears_when_the_value_moves() -> None:
    run = Run({"type": "stuck", "count": 4})
    values = [5.0, 1.0, 1.0, 1, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert run.series(values) == values
    assert [(f.flag, f.ts) for f in run.flags] == [("stuck", 4.0), ("stuck_cleared", 7.0), ("stuck", 10.0)]
    assert not run.drops


def test_stuck_tolerance_is_measured_from_the_first_reading_of_the_run() -> None:
    run = Run({"type": "stuck", "count": 3, "tolerance": 0.05, "clear_flag": False})
    run.series([1.0, 1.04, 0.96, 1.2, 1.24, 1.28, 1.32])  # 1.2..1.32 drifts: never 3 within 0.05 of 1.2
    assert [(f.flag, f.ts) for f in run.flags] == [("stuck", 2.0)]


def test_stuck_needs_min_duration_of_point_time() -> None:
    run = Run({"type": "stuck", "count": 3, "min_duration": "10s"})
    run.series([7.0] * 12)
    assert [(f.flag, f.ts) for f in run.flags] == [("stuck", 10.0)]


def test_stuck_drop_removes_readings_once_stuck() -> None:
    run = Run({"type": "stuck", "count": 3, "action": "drop", "metrics": ["level"]})
    out = [run({"level": 4, "other": 4}, ts=i) for i in range(5)]
    assert out == [{"level": 4, "other": 4}] * 2 + [{"other": 4}] * 3
    assert run({"level": 5}, ts=6) == {"level": 5}
    assert run.drops == {("stuck", "stuck"): 3}
    assert [f.flag for f in run.flags] == ["stuck", "stuck_cleared"]


def test_stuck_ignores_booleans_strings_and_nulls() -> None:
    run = Run({"type": "stuck", "count": 2})
    for value in (True, True, True, "ok", "ok", None, None):
        run({"x": value})
    assert not run.flags
    run.series([float("nan")] * 5)
    assert not run.flags


def test_stuck_config_errors() -> None:
    assert "greater than or equal to 2" in invalid({"type": "stuck", "count": 1})
    assert "greater than or equal to 0" in invalid({"type": "stuck", "tolerance": -0.1})
    assert "'flag' or 'drop'" in invalid({"type": "stuck", "action": "null"})


# ------------------------------------------------------------------------------------------------ rate_limit


def test_rate_limit_whole_points_by_point_time() -> None:
    run = Run({"type": "rate_limit", "interval": "1s"})
    kept = [ts for ts in [i / 10 for i in range(25)] if run({"t": 1}, ts=ts) is not None]
    assert kept == [0.0, 1.0, 2.0]
    assert run({"t": 1}, ts=0.5, device="dev-2") is not None
    assert run.drops == {("rate_limit", "rate_limited"): 22}


def test_rate_limit_takes_a_big_step_back_for_a_clock_reset() -> None:
    run = Run({"type": "rate_limit", "interval": "10s"})
    assert run({"t": 1}, ts=1000) is not None
    assert run({"t": 1}, ts=995) is None
    assert run({"t": 1}, ts=5) is not None
    assert run({"t": 1}, ts=6) is None
    assert run({"t": 1}, ts=15) is not None


def test_rate_limit_per_metric() -> None:
    run = Run({"type": "rate_limit", "interval": "5s", "metrics": ["temp*"]})
    assert run({"temperature": 1, "door": True}, ts=0) == {"temperature": 1, "door": True}
    assert run({"temperature": 2, "door": False}, ts=1) == {"door": False}
    assert run({"temperature": 3}, ts=2) == {}
    assert run({"temp2": 3}, ts=2) == {"temp2": 3}
    assert run({"temperature": 4}, ts=5) == {"temperature": 4}
    assert run.drops == {("rate_limit", "rate_limited"): 2}


def test_rate_limit_config_errors() -> None:
    assert "greater than 0" in invalid({"type": "rate_limit", "interval": 0})
    assert "invalid duration" in invalid({"type": "rate_limit", "interval": "fast"})
    assert "Field required" in invalid({"type": "rate_limit"})


# --------------------------------------------------------------------------------------------------- bounds


def test_device_table_forgets_the_oldest_device() -> None:
    table: DeviceTable[int] = DeviceTable(max_devices=2)
    table.add("a", 1)
    table.add("b", 2)
    table.add("c", 3)
    assert list(table) == ["b", "c"]


def test_series_per_device_are_capped() -> None:
    series: dict[str, int] = {}
    for i in range(10):
        add_series(series, f"m{i}", i, limit=4)
    assert series == {"m6": 6, "m7": 7, "m8": 8, "m9": 9}
