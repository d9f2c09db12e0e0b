"""The downsampler: rule precedence, record grouping, journaling, replay and marks, timers, validation."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter

from edge_agent.pipeline import downsample
from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from fieldline.errors import ConfigError
from fieldline.wire import AggregateRecord, Point, RawRecord
from fieldline.yamlconf import load_model

T0 = 1_700_000_040.0  # a minute boundary


def make(*rules: dict[str, Any]) -> tuple[Downsampler, ListSink, Counter[tuple[str, str]]]:
    configs = TypeAdapter(list[DownsampleConfig]).validate_python(list(rules))
    sink = ListSink()
    drops: Counter[tuple[str, str]] = Counter()

    def count(step: str, reason: str, n: int = 1) -> None:
        drops[(step, reason)] += n

    return Downsampler(configs, sink, StepContext(sink, count)), sink, drops


def raw(sink: ListSink) -> list[tuple[str, float, dict[str, Any]]]:
    return [(r.device_id, r.ts, r.metrics) for r in sink.records if isinstance(r, RawRecord)]


def aggregates(sink: ListSink) -> dict[tuple[str, str, float], dict[str, Any]]:
    return {
        (r.device_id, r.metric, r.start): r.values for r in sink.records if isinstance(r, AggregateRecord)
    }


WINDOW = {
    "type": "window",
    "metrics": ["temp*"],
    "width": "60s",
    "lateness": "5s",
    "aggregates": ["count", "sum"],
}


def test_the_first_matching_rule_decides_and_unmatched_metrics_pass_raw() -> None:
    ds, sink, _ = make(
        {"type": "raw", "metrics": ["temp_raw"]},
        WINDOW,
        {"type": "deadband", "metrics": ["temp_raw", "level"], "threshold": 10},
    )
    ds.add(Point("d", T0 + 1, {"temp_raw": 1.0, "temp": 20.0, "level": 5.0, "rssi": -70}), now=T0 + 1)
    ds.add(Point("d", T0 + 2, {"temp_raw": 2.0, "temp": 21.0, "level": 6.0, "rssi": -71}), now=T0 + 2)
    ds.tick(T0 + 65)
    # one record per point: the raw rule, the deadband report and the unmatched metric together
    assert raw(sink) == [
        ("d", T0 + 1, {"temp_raw": 1.0, "level": 5.0, "rssi": -70}),
        ("d", T0 + 2, {"temp_raw": 2.0, "rssi": -71}),
    ]
    assert aggregates(sink) == {("d", "temp", T0): {"count": 2, "sum": 41.0}}


def test_globs_are_case_sensitive_and_default_to_everything() -> None:
    ds, sink, _ = make({"type": "window", "width": "10s", "aggregates": ["count"]})
    ds.add(Point("d", T0, {"A": 1.0, "a": 2.0}), now=T0)
    ds.tick(T0 + 20)
    assert set(aggregates(sink)) == {("d", "A", T0), ("d", "a", T0)}
    assert raw(sink) == []

    ds, sink, _ = make({"type": "raw", "metrics": ["Temp"]}, {"type": "window", "width": "10s"})
    assert ds.needs_journal(Point("d", T0, {"Temp": 1.0})) is False
    assert ds.needs_journal(Point("d", T0, {"temp": 1.0})) is True


def test_without_rules_everything_passes_raw_in_one_record_per_point() -> None:
    ds, sink, _ = make()
    ds.add(Point("d", T0, {"a": 1, "b": "x", "c": None}), now=T0)
    assert raw(sink) == [("d", T0, {"a": 1, "b": "x", "c": None})]
    assert ds.hold_horizon == 0.0
    assert ds.next_deadline() is None
    assert ds.needs_journal(Point("d", T0, {"a": 1})) is False


def test_needs_journal_when_any_metric_feeds_a_window_or_swinging_door() -> None:
    ds, _, _ = make(
        WINDOW,
        {"type": "swinging_door", "metrics": ["flow"], "max_error": 1},
        {"type": "deadband", "metrics": ["level"]},
    )
    assert ds.needs_journal(Point("d", T0, {"rssi": 1, "temp": 2.0}))
    assert ds.needs_journal(Point("d", T0, {"flow": 2.0}))
    assert not ds.needs_journal(Point("d", T0, {"rssi": 1, "level": 2.0}))


def test_hold_horizon_covers_the_longest_journaled_rule_plus_a_margin() -> None:
    ds, _, _ = make(
        WINDOW,
        {"type": "swinging_door", "max_error": 1, "max_interval": "2m"},
        {"type": "deadband", "heartbeat": "1h"},
    )
    assert ds.hold_horizon == 120 + downsample.HOLD_MARGIN
    ds, _, _ = make({"type": "deadband"})
    assert ds.hold_horizon == 0.0


def test_next_deadline_is_the_earliest_work_of_any_rule() -> None:
    ds, _, _ = make(
        {"type": "window", "metrics": ["w"], "width": "60s", "lateness": "5s"},
        {"type": "deadband", "metrics": ["d"], "threshold": 1, "heartbeat": "30s"},
        {"type": "swinging_door", "metrics": ["s"], "max_error": 1, "max_interval": "20s"},
    )
    assert ds.next_deadline() is None
    ds.add(Point("x", T0 + 10, {"w": 1.0, "d": 1.0, "s": 1.0}), now=T0 + 10)
    assert ds.next_deadline() == T0 + 65
    ds.add(Point("x", T0 + 11, {"d": 1.5}), now=T0 + 11)
    assert ds.next_deadline() == T0 + 40
    ds.add(Point("x", T0 + 12, {"s": 1.5}), now=T0 + 12)
    assert ds.next_deadline() == T0 + 30
    ds.tick(T0 + 30)
    assert ds.next_deadline() == T0 + 40
    ds.tick(T0 + 40)
    assert ds.next_deadline() == T0 + 65
    ds.tick(T0 + 65)
    assert ds.next_deadline() is None


def test_timers_and_heartbeats_of_one_tick_are_grouped_per_device_and_timestamp() -> None:
    ds, sink, _ = make({"type": "deadband", "threshold": 1, "heartbeat": "10s"})
    ds.add(Point("d", T0, {"a": 1.0, "b": 1.0}), now=T0)
    ds.add(Point("d", T0 + 1, {"a": 1.1, "b": 1.1}), now=T0 + 1)
    ds.add(Point("e", T0 + 1, {"a": 1.1}), now=T0 + 1)
    ds.tick(T0 + 10)
    assert raw(sink)[-1] == ("d", T0 + 1, {"a": 1.1, "b": 1.1})


def test_replay_feeds_only_journaled_rules_and_skips_what_the_marks_cover() -> None:
    ds, sink, _ = make(
        {"type": "raw", "metrics": ["n"]},
        {"type": "deadband", "metrics": ["level"]},
        {"type": "window", "metrics": ["temp"], "width": "60s", "aggregates": ["count", "sum"]},
    )
    ds.restore_marks({("d", "temp"): T0 + 2})
    for i in range(5):
        ds.add(Point("d", T0 + i, {"n": i, "level": float(i), "temp": float(i)}), now=T0 + 100, replay=True)
    assert raw(sink) == []  # raw and deadband values went up before the crash
    ds.tick(T0 + 100)  # the replayed window is long due: it closes at the next tick
    assert aggregates(sink) == {("d", "temp", T0): {"count": 2, "sum": 7.0}}
    assert sink.marks == {("d", "temp"): T0 + 4}


def test_a_crash_and_replay_loses_and_duplicates_nothing() -> None:
    """Run with a journal and marks as the agent keeps them, crash mid-way, replay, and compare."""
    rules = (
        {
            "type": "window",
            "metrics": ["t"],
            "width": "10s",
            "lateness": "2s",
            "aggregates": ["count", "sum"],
        },
        {"type": "swinging_door", "metrics": ["s"], "max_error": 0.5, "max_interval": "15s"},
    )
    points = [Point(f"d{i % 3}", T0 + i * 0.5, {"t": float(i), "s": float((i * 7) % 5)}) for i in range(200)]

    def reference() -> ListSink:
        ds, sink, _ = make(*rules)
        for p in points:
            ds.add(p, now=p.ts)
            ds.tick(p.ts)
        ds.flush(T0 + 1000)
        return sink

    ds, first, _ = make(*rules)
    journal = []
    for p in points[:130]:
        ds.add(p, now=p.ts)
        if ds.needs_journal(p):
            journal.append(p)
        ds.tick(p.ts)
    # crash: what was emitted and marked survives, the downsampler's memory does not
    restarted, second, _ = make(*rules)
    restarted.restore_marks(dict(first.marks))
    now = points[129].ts + 3
    for p in journal:
        restarted.add(p, now=now, replay=True)
    restarted.tick(now)
    for p in points[130:]:
        restarted.add(p, now=p.ts)
        restarted.tick(p.ts)
    restarted.flush(T0 + 1000)

    def merged(*sinks: ListSink) -> dict[tuple[str, str, float], tuple[int, float]]:
        out: dict[tuple[str, str, float], tuple[int, float]] = {}
        for sink in sinks:
            for key, values in aggregates(sink).items():
                n, s = out.get(key, (0, 0.0))
                out[key] = (n + values["count"], s + values["sum"])
        return out

    ref = reference()
    assert merged(first, second) == merged(ref)
    assert sorted(raw(first) + raw(second)) == sorted(raw(ref))


def test_stats_count_open_windows_and_series() -> None:
    ds, _, _ = make(WINDOW, {"type": "deadband", "metrics": ["level"]})
    for d in range(3):
        ds.add(Point(f"d{d}", T0, {"temp": 1.0, "level": 2.0}), now=T0)
        ds.add(Point(f"d{d}", T0 + 61, {"temp": 1.0}), now=T0)
    assert ds.stats() == {"open_windows": 6, "tracked_series": 6, "evicted_series": 0, "cached_names": 2}


def test_the_rule_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downsample, "MAX_CACHED_NAMES", 8)
    ds, sink, _ = make({"type": "raw", "metrics": ["a*"]})
    for i in range(50):
        ds.add(Point("d", T0, {f"m{i}": i}), now=T0)
    assert ds.stats()["cached_names"] <= 8
    assert len(raw(sink)) == 50


def test_the_downsampler_never_reads_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    ds, sink, _ = make(
        WINDOW,
        {"type": "deadband", "metrics": ["level"], "heartbeat": "1s"},
        {"type": "swinging_door", "metrics": ["s"], "max_error": 1, "max_interval": "1s"},
    )

    def forbidden() -> float:
        raise AssertionError("the downsampler read the clock")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, forbidden)
    for i in range(10):
        ds.add(Point("d", T0 + i, {"temp": 1.0, "level": 1.0, "s": float(i % 2)}), now=T0 + i)
        ds.tick(T0 + i)
    ds.flush(T0 + 100)
    assert sink.records


class _Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    downsample: list[DownsampleConfig]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"type": "median"}, "does not match any of the expected tags"),
        ({"metrics": ["x"]}, "Unable to extract tag using discriminator 'type'"),
        ({"type": "raw", "metrics": []}, "at least 1 item"),
        ({"type": "raw", "width": "1s"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _Pipeline.model_validate({"downsample": [rule]})


def test_yaml_errors_name_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "downsample:\n"
        "  - type: raw\n"
        "    metrics: [door]\n"
        "  - type: window\n"
        "    width: 7s\n"
        "  - type: deadband\n"
        "    threshold: -1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_model(_Pipeline, path)
    text = str(info.value)
    # the field's own line; the union tag pydantic adds to the location is not part of the reported path
    assert re.search(r"pipeline\.yaml:5:12: downsample\.1\.width: .*divides a day", text), text
    assert re.search(r"pipeline\.yaml:7:16: downsample\.2\.threshold: ", text), text
