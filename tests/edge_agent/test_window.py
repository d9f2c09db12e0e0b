"""Tumbling windows: exact aggregates, alignment, lateness, several open windows, flush and continuation."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from fractions import Fraction
from functools import reduce
from operator import add
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from edge_agent.pipeline import window
from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from fieldline.wire import AggregateRecord, Point

T0 = 1_700_000_040.0  # a minute boundary


def make(**rule: Any) -> tuple[Downsampler, ListSink, Counter[tuple[str, str]]]:
    configs = TypeAdapter(list[DownsampleConfig]).validate_python([{"type": "window", **rule}])
    sink = ListSink()
    drops: Counter[tuple[str, str]] = Counter()

    def count(step: str, reason: str, n: int = 1) -> None:
        drops[(step, reason)] += n

    return Downsampler(configs, sink, StepContext(sink, count)), sink, drops


def aggregates(sink: ListSink) -> list[AggregateRecord]:
    return [r for r in sink.records if isinstance(r, AggregateRecord)]


def reference_percentile(values: list[float], q: str) -> float:
    """Linear interpolation between closest ranks, computed exactly with fractions."""
    ordered = sorted(Fraction(v) for v in values)
    h = (len(ordered) - 1) * Fraction(q) / 100
    i = math.floor(h)
    if i + 1 >= len(ordered):
        return float(ordered[-1])
    return float(ordered[i] + (ordered[i + 1] - ordered[i]) * (h - i))


finite = st.floats(
    min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(finite | st.integers(-1000, 1000), min_size=1, max_size=300), data=st.data())
def test_aggregates_match_a_reference_computed_from_the_input(
    values: list[float], data: st.DataObject
) -> None:
    ds, sink, _ = make(
        width="60s",
        aggregates=["mean", "min", "max", "first", "last", "count", "sum", "stddev", "p50", "p95", "p99.9"],
    )
    offsets = data.draw(st.lists(st.floats(0, 59.999), min_size=len(values), max_size=len(values)))
    for value, offset in zip(values, offsets, strict=True):
        ds.add(Point("d", T0 + offset, {"v": value}), now=T0)
    ds.tick(T0 + 65)
    [agg] = aggregates(sink)
    got = agg.values
    floats = [float(v) for v in values]
    total = reduce(add, floats, 0.0)  # left to right, as sum() does before Python 3.12
    assert got["count"] == len(values)
    assert got["sum"] == total
    assert got["mean"] == total / len(values)
    assert got["min"] == min(floats)
    assert got["max"] == max(floats)
    assert got["first"] == floats[0]
    assert got["last"] == floats[-1]
    scale = max(1.0, max(abs(v) for v in floats))
    assert math.isclose(got["stddev"], statistics.pstdev(floats), rel_tol=1e-9, abs_tol=1e-9 * scale)
    for name in ("p50", "p95", "p99.9"):
        ref = reference_percentile(floats, name[1:])
        assert math.isclose(got[name], ref, rel_tol=1e-9, abs_tol=1e-12 * scale), name
    assert all(isinstance(v, float) for k, v in got.items() if k != "count")
    assert isinstance(got["count"], int)


def test_mean_equals_sum_over_count_in_arrival_order() -> None:
    ds, sink, _ = make(width="10s", aggregates=["mean", "sum"])
    values = [0.1, 0.2, 0.3, 1e16, -1e16, 0.7]
    for i, v in enumerate(values):
        ds.add(Point("d", T0 + i, {"v": v}), now=T0)
    ds.tick(T0 + 20)
    [agg] = aggregates(sink)
    assert agg.values["sum"] == reduce(add, values, 0.0)
    assert agg.values["mean"] == reduce(add, values, 0.0) / len(values)


def test_booleans_count_as_zero_and_one() -> None:
    ds, sink, _ = make(width="10s", aggregates=["mean", "min", "max", "sum", "count", "first", "last"])
    for i, v in enumerate([True, False, False, True]):
        ds.add(Point("d", T0 + i, {"pump": v}), now=T0)
    ds.tick(T0 + 20)
    [agg] = aggregates(sink)
    assert agg.values == {
        "mean": 0.5,
        "min": 0.0,
        "max": 1.0,
        "sum": 2.0,
        "count": 4,
        "first": 1.0,
        "last": 1.0,
    }


def test_strings_emit_only_count_first_last() -> None:
    ds, sink, _ = make(width="10s", aggregates=["mean", "count", "first", "last", "p50"])
    for i, v in enumerate(["idle", "run", 3.0, "stop"]):
        ds.add(Point("d", T0 + i, {"mode": v}), now=T0)
    ds.tick(T0 + 20)
    [agg] = aggregates(sink)
    assert agg.values == {"count": 4, "first": "idle", "last": "stop"}


def test_none_is_ignored_and_nan_dropped() -> None:
    ds, sink, drops = make(width="10s", aggregates=["count", "mean"])
    for i, v in enumerate([1.0, None, math.nan, 3.0]):
        ds.add(Point("d", T0 + i, {"v": v}), now=T0)
    ds.add(Point("d", T0 + 1, {"only_none": None}), now=T0)
    ds.tick(T0 + 20)
    [agg] = aggregates(sink)
    assert agg.values == {"count": 2, "mean": 2.0}
    assert drops == {("window", "nan"): 1}


def test_windows_align_to_utc_epoch_boundaries() -> None:
    ds, sink, _ = make(width="15m", lateness="0s", aggregates=["count"])
    quarter = 1_700_000_100.0  # 1_700_000_100 = 1_888_889 * 900
    assert quarter % 900 == 0
    for ts in (quarter - 0.001, quarter, quarter + 899.999, quarter + 900):
        ds.add(Point("d", ts, {"v": 1.0}), now=quarter - 1)
    ds.tick(quarter + 1800)
    got = {(a.start, a.values["count"]) for a in aggregates(sink)}
    assert got == {(quarter - 900, 1), (quarter, 2), (quarter + 900, 1)}
    assert all(a.width == 900 for a in aggregates(sink))


def test_window_closes_at_end_plus_lateness_on_the_agent_clock_and_marks_its_latest_point() -> None:
    ds, sink, _ = make(width="60s", lateness="5s", aggregates=["count"])
    ds.add(Point("d", T0 + 30, {"v": 1.0}), now=T0 + 30)
    ds.add(Point("d", T0 + 10, {"v": 2.0}), now=T0 + 31)
    assert ds.next_deadline() == T0 + 65
    ds.tick(T0 + 64.999)
    assert aggregates(sink) == []
    ds.tick(T0 + 65)
    [agg] = aggregates(sink)
    assert (agg.device_id, agg.metric, agg.start, agg.width, agg.partial) == ("d", "v", T0, 60.0, False)
    assert sink.marks == {("d", "v"): T0 + 30}
    assert ds.next_deadline() is None
    assert ds.stats()["open_windows"] == 0


def test_late_points_within_lateness_are_accepted_and_later_ones_dropped() -> None:
    ds, sink, drops = make(width="60s", lateness="5s", aggregates=["count"])
    ds.add(Point("d", T0 + 59, {"v": 1.0}), now=T0 + 61)
    ds.add(Point("d", T0 + 70, {"v": 1.0}), now=T0 + 62)  # the next window opens meanwhile
    ds.add(Point("d", T0 + 58, {"v": 1.0}), now=T0 + 64.9)  # within lateness: joins the open window
    ds.tick(T0 + 65)
    ds.add(Point("d", T0 + 57, {"v": 1.0}), now=T0 + 65.1)  # its window has been emitted
    ds.add(Point("e", T0 + 57, {"v": 1.0}), now=T0 + 66)  # no window was ever open, but it is past due
    assert [a.values["count"] for a in aggregates(sink)] == [2]
    assert drops == {("window", "late"): 2}


def test_several_windows_stay_open_per_series_and_a_fifth_is_refused() -> None:
    ds, sink, drops = make(width="10s", lateness="10s", aggregates=["count"])
    for k in (0, 1, 2, 3):  # four windows, in scrambled order
        ds.add(Point("d", T0 + 10 * ((k * 3) % 4) + 1, {"v": 1.0}), now=T0)
    ds.add(Point("d", T0 + 2, {"v": 1.0}), now=T0)  # joins an older open window
    assert ds.stats() == {"open_windows": 4, "tracked_series": 1, "evicted_series": 0, "cached_names": 1}
    ds.add(Point("d", T0 + 45, {"v": 1.0}), now=T0)
    assert drops == {("window", "too_far_ahead"): 1}
    # once the oldest is due, a new window may open (the due one is emitted first)
    ds.add(Point("d", T0 + 45, {"v": 1.0}), now=T0 + 20)
    assert drops == {("window", "too_far_ahead"): 1}
    assert [(a.start - T0, a.values["count"]) for a in aggregates(sink)] == [(0.0, 2)]
    ds.tick(T0 + 100)
    assert [(a.start - T0, a.values["count"]) for a in aggregates(sink)] == [
        (0.0, 2),
        (10.0, 1),
        (20.0, 1),
        (30.0, 1),
        (40.0, 1),
    ]


def test_tick_closes_only_what_is_due_across_series() -> None:
    ds, sink, _ = make(width="10s", lateness="1s", aggregates=["count"])
    for d in range(100):
        ds.add(Point(f"d{d}", T0 + 5 + d * 0.01, {"v": 1.0}), now=T0)
        ds.add(Point(f"d{d}", T0 + 15, {"v": 1.0}), now=T0)
    assert ds.next_deadline() == T0 + 11
    ds.tick(T0 + 11)
    assert len(aggregates(sink)) == 100
    assert ds.next_deadline() == T0 + 21
    assert ds.stats()["open_windows"] == 100


def test_flush_emits_partial_windows_and_later_points_continue_them() -> None:
    ds, sink, _ = make(width="60s", lateness="5s", aggregates=["count", "sum", "min", "max"])
    ds.add(Point("d", T0 + 1, {"v": 1.0}), now=T0 + 1)
    ds.add(Point("d", T0 + 2, {"v": 5.0}), now=T0 + 2)
    ds.flush(T0 + 3)
    [first] = aggregates(sink)
    assert first.partial
    assert first.values == {"count": 2, "sum": 6.0, "min": 1.0, "max": 5.0}
    assert sink.marks == {("d", "v"): T0 + 2}
    assert ds.next_deadline() is None
    ds.add(Point("d", T0 + 4, {"v": -2.0}), now=T0 + 10)
    ds.tick(T0 + 65)
    second = aggregates(sink)[1]
    assert (second.start, second.partial, second.values) == (
        T0,
        False,
        {"count": 1, "sum": -2.0, "min": -2.0, "max": -2.0},
    )
    assert sink.marks == {("d", "v"): T0 + 4}


def test_flush_emits_due_windows_as_complete() -> None:
    ds, sink, _ = make(width="10s", lateness="0s", aggregates=["count"])
    ds.add(Point("d", T0 + 1, {"v": 1.0}), now=T0)
    ds.add(Point("d", T0 + 11, {"v": 1.0}), now=T0)
    ds.flush(T0 + 10)
    assert [(a.start - T0, a.partial) for a in aggregates(sink)] == [(0.0, False), (10.0, True)]


def test_percentiles_beyond_max_samples_use_a_bounded_deterministic_sample() -> None:
    def run() -> tuple[dict[str, float], int]:
        ds, sink, _ = make(width="60s", aggregates=["p50", "p95", "count"], max_samples=64)
        for i in range(5000):
            ds.add(Point("d", T0 + i * 0.01, {"v": float(i % 1000)}), now=T0)
        held = len(next(iter(next(iter(ds.rules[0]._open.values())).values())).samples)  # type: ignore[attr-defined]
        ds.tick(T0 + 100)
        return aggregates(sink)[0].values, held

    first, held = run()
    assert held == 64
    assert first == run()[0]
    assert first["count"] == 5000
    assert 350 <= first["p50"] <= 650  # a sample of 64 out of a uniform 0..999
    assert first["p95"] >= 750


def test_new_series_beyond_the_limit_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window, "MAX_SERIES", 3)
    ds, sink, drops = make(width="10s", aggregates=["count"])
    for d in range(5):
        ds.add(Point(f"d{d}", T0, {"v": 1.0}), now=T0)
    ds.add(Point("d0", T0 + 1, {"v": 1.0}), now=T0)  # an existing series still aggregates
    ds.tick(T0 + 20)
    assert [(a.device_id, a.values["count"]) for a in aggregates(sink)] == [("d0", 2), ("d1", 1), ("d2", 1)]
    assert drops == {("window", "too_many_series"): 2}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"width": "7s"}, "divides a day"),
        ({"width": "0s"}, "divides a day"),
        ({"width": "1.5ms"}, "whole number of milliseconds"),
        ({"width": "10s", "lateness": "11s"}, "must not exceed width"),
        ({"width": "10s", "aggregates": ["median"]}, "unknown aggregate 'median'"),
        ({"width": "10s", "aggregates": ["p101"]}, "unknown aggregate 'p101'"),
        ({"width": "10s", "aggregates": ["min", "min"]}, "more than once: min"),
        ({"width": "10s", "aggregates": []}, "at least 1 item"),
        ({"width": "10s", "max_samples": 2}, "greater than or equal to 16"),
        ({"width": "10s", "max_samples": 10**6}, "less than or equal to 65536"),
        ({"width": "10s", "size": 3}, "Extra inputs are not permitted"),
        ({}, "Field required"),
    ],
)
def test_invalid_window_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**rule)


def test_accepted_widths_and_percentile_names() -> None:
    for width in ("250ms", "1s", "10s", "1m", "15m", "1h", "1d"):
        make(width=width)
    ds, _, _ = make(width="1m", aggregates=["p0", "p50", "p99.9", "p100"])
    assert ds.hold_horizon == 60 + 5 + 30
