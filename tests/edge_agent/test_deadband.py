"""Deadband reporting: thresholds, percent bands, strings, heartbeats, marks and flush."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from pydantic import TypeAdapter

from edge_agent.pipeline import deadband
from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from fieldline.wire import MetricValue, Point, RawRecord


def make(**rule: Any) -> tuple[Downsampler, ListSink, Counter[tuple[str, str]]]:
    configs = TypeAdapter(list[DownsampleConfig]).validate_python([{"type": "deadband", **rule}])
    sink = ListSink()
    drops: Counter[tuple[str, str]] = Counter()

    def count(step: str, reason: str, n: int = 1) -> None:
        drops[(step, reason)] += n

    return Downsampler(configs, sink, StepContext(sink, count)), sink, drops


def feed(ds: Downsampler, values: list[MetricValue], metric: str = "v", step: float = 1.0) -> None:
    for i, v in enumerate(values):
        ds.add(Point("d", i * step, {metric: v}), now=i * step)


def reported(sink: ListSink, metric: str = "v") -> list[tuple[float, MetricValue]]:
    return [
        (r.ts, r.metrics[metric]) for r in sink.records if isinstance(r, RawRecord) and metric in r.metrics
    ]


def test_threshold_is_measured_from_the_last_reported_value() -> None:
    ds, sink, _ = make(threshold=1.0)
    feed(ds, [10.0, 10.6, 11.0, 11.2, 9.9, 8.8, 8.8])
    # 10.6 and 11.0 stay within 1.0 of 10.0; 11.2 does not; 9.9 is 1.3 from 11.2; 8.8 is 1.1 from 9.9
    assert reported(sink) == [(0, 10.0), (3, 11.2), (4, 9.9), (5, 8.8)]
    assert sink.marks == {("d", "v"): 5}


def test_percent_band_is_relative_to_the_last_reported_value() -> None:
    ds, sink, _ = make(percent=10)
    feed(ds, [100, 109, 111, 121, 0, 0, 1e-9])
    # 109 is within 10 of 100; 111 is not; 121 is within 11.1 of 111; around 0 the band is 0
    assert reported(sink) == [(0, 100), (2, 111), (4, 0), (6, 1e-9)]


def test_with_threshold_and_percent_the_wider_band_applies() -> None:
    ds, sink, _ = make(threshold=0.5, percent=1)
    feed(ds, [0.0, 0.4, 0.6, 1000.0, 1009.0, 1011.0])
    assert reported(sink) == [(0, 0.0), (2, 0.6), (3, 1000.0), (5, 1011.0)]


def test_strings_and_booleans_are_reported_on_any_change() -> None:
    ds, sink, _ = make(threshold=5)
    feed(ds, ["idle", "idle", "run", "run", "idle"], metric="mode")
    feed(ds, [True, True, False, 1, 1], metric="pump")  # 1 after False is a change of type too
    assert reported(sink, "mode") == [(0, "idle"), (2, "run"), (4, "idle")]
    assert reported(sink, "pump") == [(0, True), (2, False), (3, 1)]


def test_heartbeat_on_arrival_reports_the_arriving_value() -> None:
    ds, sink, _ = make(threshold=1.0, heartbeat="10s")
    for ts in range(0, 25):
        ds.add(Point("d", float(ts), {"v": 5.0}), now=float(ts))
    assert reported(sink) == [(0, 5.0), (10, 5.0), (20, 5.0)]


def test_heartbeat_on_tick_reports_the_latest_held_value_at_its_timestamp() -> None:
    ds, sink, _ = make(threshold=1.0, heartbeat="60s")
    ds.add(Point("d", 0.0, {"v": 5.0}), now=0.0)
    assert ds.next_deadline() is None  # nothing held
    ds.add(Point("d", 7.0, {"v": 5.5}), now=7.0)
    ds.add(Point("d", 9.0, {"v": 5.25}), now=9.0)
    assert ds.next_deadline() == 60.0
    ds.tick(59.9)
    assert reported(sink) == [(0.0, 5.0)]
    ds.tick(60.0)
    assert reported(sink) == [(0.0, 5.0), (9.0, 5.25)]
    assert sink.marks == {("d", "v"): 9.0}
    assert ds.next_deadline() is None
    ds.tick(1000.0)  # a silent series stays silent
    assert len(reported(sink)) == 2


def test_a_report_on_arrival_postpones_the_tick_heartbeat() -> None:
    ds, sink, _ = make(threshold=1.0, heartbeat="60s")
    ds.add(Point("d", 0.0, {"v": 5.0}), now=0.0)
    ds.add(Point("d", 1.0, {"v": 5.1}), now=1.0)  # held: heartbeat due at 60
    ds.add(Point("d", 30.0, {"v": 9.0}), now=30.0)  # reported
    ds.add(Point("d", 31.0, {"v": 9.1}), now=31.0)  # held again
    ds.tick(60.0)
    assert reported(sink) == [(0.0, 5.0), (30.0, 9.0)]
    assert ds.next_deadline() == 90.0
    ds.tick(90.0)
    assert reported(sink)[-1] == (31.0, 9.1)


def test_flush_reports_held_values() -> None:
    ds, sink, _ = make(threshold=1.0)
    feed(ds, [1.0, 1.1, 1.2])
    ds.flush(3.0)
    assert reported(sink) == [(0, 1.0), (2, 1.2)]
    assert ds.next_deadline() is None


def test_none_is_ignored_and_nan_dropped() -> None:
    ds, sink, drops = make(threshold=1.0)
    feed(ds, [1.0, None, math.nan, 5.0])
    assert reported(sink) == [(0, 1.0), (3, 5.0)]
    assert drops == {("deadband", "nan"): 1}


def test_series_are_independent_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadband, "MAX_SERIES", 16)
    ds, sink, _ = make(threshold=1.0)
    for d in range(40):
        ds.add(Point(f"d{d}", 0.0, {"v": 1.0}), now=0.0)
    stats = ds.stats()
    assert stats["tracked_series"] <= 16
    assert stats["evicted_series"] == 40 - stats["tracked_series"]
    ds.add(Point("d0", 1.0, {"v": 1.2}), now=1.0)  # d0 was forgotten: its next value is reported as new
    assert len(sink.records) == 41


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"threshold": -1}, "greater than or equal to 0"),
        ({"percent": 0}, "greater than 0"),
        ({"threshold": "inf"}, "finite number"),
        ({"heartbeat": "0s"}, "greater than 0"),
        ({"heartbeat": "soon"}, "invalid duration"),
        ({"band": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_deadband_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**rule)
