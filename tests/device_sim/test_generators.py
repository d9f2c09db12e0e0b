"""Metric generators with a fixed seed: statistics within tolerance, bounds respected, periods and schedules kept."""

from __future__ import annotations

import itertools
import math
import statistics

import orjson
import pytest

from device_sim.fleet import load_fleet
from device_sim.population import build_devices

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _series(
    metric: str, n: int, *, interval: str = "10s", extra: str = "", seed: int = 11
) -> list[tuple[float, dict]]:
    """(time, metrics) of ``n`` readings of one device whose metrics are ``metric`` (YAML lines)."""
    text = f"""\
seed: {seed}
devices:
  - type: probe
    id: probe-{{n}}
    interval: {interval}
    metrics:
{metric}
{extra}"""
    (device,) = build_devices(load_fleet("gen.yaml", text=text))
    at = device.first_tick_at(START)
    out = []
    for _ in range(n):
        tick = device.tick(at)
        out.append((at, orjson.loads(tick.messages[0].payload)["metrics"]))
        at = tick.next_at
    return out


def _values(metric: str, n: int, **kwargs: object) -> list:
    return [m["x"] for _, m in _series(f"      x: {metric}", n, **kwargs)]  # type: ignore[arg-type]


def test_constant() -> None:
    assert set(_values("{type: constant, value: 7.5}", 20)) == {7.5}
    assert set(_values("{type: constant, value: idle}", 5)) == {"idle"}


def test_sine_mean_amplitude_and_period() -> None:
    points = _series("      x: {type: sine, period: 10m, amplitude: 3, offset: 20}", 1800, interval="1s")
    values = [m["x"] for _, m in points[:600]]
    assert statistics.fmean(values) == pytest.approx(20, abs=0.01)  # exactly one period
    assert max(values) == pytest.approx(23, abs=0.01)
    assert min(values) == pytest.approx(17, abs=0.01)
    for at, metrics in points:
        expected = 20 + 3 * math.sin(2 * math.pi * (at - START) / 600)
        assert metrics["x"] == pytest.approx(expected, abs=1e-9)
    upward = [at for (at, a), (_, b) in itertools.pairwise(points) if a["x"] < 20 <= b["x"]]
    assert len(upward) == 2  # at 10 and 20 minutes
    assert upward[1] - upward[0] == pytest.approx(600, abs=1)


def test_sine_phase_shifts_and_random_phase_differs_per_device() -> None:
    for at, metrics in _series(
        "      x: {type: sine, period: 40s, amplitude: 1, phase: 10s}", 10, interval="3s"
    ):
        assert metrics["x"] == pytest.approx(
            math.cos(2 * math.pi * (at - START) / 40)
        )  # a quarter period ahead
    text = """\
devices:
  - {type: p, id: "p-{n}", count: 2, interval: 1s, metrics: {x: {type: sine, period: 1h, random_phase: true}}}
"""
    a, b = build_devices(load_fleet("f.yaml", text=text))
    a.first_tick_at(START)
    b.first_tick_at(START)
    assert (
        orjson.loads(a.tick(START + 5).messages[0].payload)["metrics"]
        != orjson.loads(b.tick(START + 5).messages[0].payload)["metrics"]
    )


def test_noise_mean_and_variance() -> None:
    values = _values("{type: noise, sigma: 2, mean: 5}", 10_000)
    # standard error of the mean 0.02; of the variance about 4 * sqrt(2 / n) = 0.057
    assert statistics.fmean(values) == pytest.approx(5, abs=0.08)
    assert statistics.variance(values) == pytest.approx(4, abs=0.25)


def test_random_walk_bounds_and_step() -> None:
    for reflect in ("true", "false"):
        values = _values(
            f"{{type: random_walk, start: 0, step: 1, min: -5, max: 5, reflect: {reflect}}}", 5000
        )
        assert values[0] == 0
        assert min(values) >= -5
        assert max(values) <= 5
        assert min(values) < -4
        assert max(values) > 4  # it really wanders
    free = _values("{type: random_walk, step: 0.5}", 5000)
    steps = [b - a for a, b in itertools.pairwise(free)]
    assert statistics.fmean(steps) == pytest.approx(0, abs=0.03)
    assert statistics.stdev(steps) == pytest.approx(0.5, rel=0.05)


def test_drift_and_composite_sum() -> None:
    points = _series("      x: {type: drift, per_hour: 1.5, start: 10}", 10, interval="1h")
    for at, metrics in points:
        assert metrics["x"] == pytest.approx(10 + 1.5 * (at - START) / 3600)
    composite = """\
      x:
        type: composite
        components:
          - {type: constant, value: 100}
          - {type: drift, per_hour: -2}
          - {type: noise, sigma: 0.1}"""
    residual = [
        m["x"] - (100 - 2 * (at - START) / 3600) for at, m in _series(composite, 2000, interval="36s")
    ]
    assert statistics.fmean(residual) == pytest.approx(0, abs=0.02)
    assert statistics.stdev(residual) == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize(("combine", "expected"), [("product", 6.0), ("min", 2.0), ("max", 3.0)])
def test_composite_combinations(combine: str, expected: float) -> None:
    metric = f"{{type: composite, combine: {combine}, components: [{{type: constant, value: 2}}, {{type: constant, value: 3}}]}}"
    assert _values(metric, 2) == [expected, expected]


def test_steps_at_offsets_and_absolute_times() -> None:
    metric = """\
      x:
        type: steps
        initial: 1
        changes:
          - {at: 1m, value: 2}
          - {at: "2027-01-15T08:03:00Z", value: 3}"""
    for at, metrics in _series(metric, 30, interval="10s"):
        expected = 1 if at < START + 60 else 2 if at < START + 180 else 3
        assert metrics["x"] == expected, at - START


def test_daily_cycle_peaks_at_the_local_hour() -> None:
    metric = "      x: {type: daily, mean: 10, amplitude: 5, peak_hour: 15, tz_offset: 2}"
    points = _series(metric, 24 * 12, interval="5m")
    peak_at, _ = max(points, key=lambda p: p[1]["x"])
    low_at, _ = min(points, key=lambda p: p[1]["x"])
    assert ((peak_at + 2 * 3600) % 86400) / 3600 == pytest.approx(15, abs=5 / 60)  # 15:00 at UTC+2
    assert ((low_at + 2 * 3600) % 86400) / 3600 == pytest.approx(3, abs=5 / 60)
    assert statistics.fmean(m["x"] for _, m in points) == pytest.approx(10, abs=0.01)


def test_counter_grows_and_wraps() -> None:
    values = _values("{type: counter, rate: 10, wrap: 1000}", 40, interval="7s")
    assert all(isinstance(v, int) and 0 <= v < 1000 for v in values)
    wraps = sum(1 for a, b in itertools.pairwise(values) if b < a)
    assert wraps == 40 * 70 // 1000 - (values[0] + 0) // 1000
    assert all((b - a) % 1000 == 70 for a, b in itertools.pairwise(values))


def test_correlated_falls_as_the_source_rises() -> None:
    metrics = """\
      temperature: {type: random_walk, start: 20, step: 0.5, min: 10, max: 30}
      humidity:
        type: composite
        components:
          - {type: correlated, source: temperature, base: 50, factor: -2, ref: 20}
          - {type: noise, sigma: 0.5}"""
    points = [m for _, m in _series(metrics, 3000)]
    correlation = statistics.correlation([m["temperature"] for m in points], [m["humidity"] for m in points])
    assert correlation < -0.95


def test_boolean_switches_with_its_probability() -> None:
    values = _values("{type: boolean, initial: true, switch_probability: 0.2}", 10_001)
    assert values[0] is True
    switches = sum(1 for a, b in itertools.pairwise(values) if a != b)
    # binomial(10000, 0.2): mean 2000, standard deviation 40
    assert abs(switches - 2000) < 4 * 40


def test_enum_switches_between_its_states() -> None:
    values = _values("{type: enum, states: [a, b, c], initial: b, switch_probability: 0.1}", 10_001)
    assert values[0] == "b"
    switches = sum(1 for a, b in itertools.pairwise(values) if a != b)
    assert abs(switches - 1000) < 4 * 30
    counts = {state: values.count(state) for state in "abc"}
    assert all(abs(count - 10_001 / 3) < 600 for count in counts.values()), counts


def test_rounding() -> None:
    assert _values("{type: constant, value: 2.71828, round: 2}", 1) == [2.72]
    (whole,) = _values("{type: noise, sigma: 10, round: 0}", 1)
    assert isinstance(whole, int)


def test_spread_gives_each_device_its_own_offset() -> None:
    text = """\
devices:
  - type: p
    id: "p-{n}"
    count: 400
    interval: 1s
    metrics:
      x: {type: constant, value: 10, spread: 2}
      y:
        type: composite
        spread: 1
        components: [{type: constant, value: 0}, {type: drift, per_hour: 3600}]
"""
    offsets = []
    for device in build_devices(load_fleet("f.yaml", text=text)):
        at = device.first_tick_at(START)
        readings = []
        for _ in range(3):
            tick = device.tick(at)
            readings.append((at, orjson.loads(tick.messages[0].payload)["metrics"]))
            at = tick.next_at
        assert len({m["x"] for _, m in readings}) == 1  # constant for the device
        offsets.append(readings[0][1]["x"] - 10)
        for at, metrics in readings:  # the same offset on the composite's sum
            assert -1 <= metrics["y"] - (at - START) <= 1
    assert min(offsets) >= -2
    assert max(offsets) <= 2
    assert statistics.fmean(offsets) == pytest.approx(0, abs=0.25)
    assert statistics.pvariance(offsets) == pytest.approx(4 / 3, rel=0.2)  # uniform on [-2, 2]
