"""The embedded store: points from uplink batches, answers on every tier against a brute-force oracle, edge
windows, duplicates, retention per tier, restarts."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
from collections import Counter
from pathlib import Path

import pytest

from cloud_core.settings import RetentionSettings
from cloud_core.tsdb import Aggregation, Point, Query, SQLiteStore, TimeSeriesError, points_from_batch
from fieldline.wire import AggregateRecord, Batch, FlagRecord, RawRecord, RecordKind
from tests.cloud_core.tsdbkit import HOUR, raw_points, recent_hour, window_points

DEVICES = ["dev-a", "dev-b", "dev-c"]
MINUTE = 60_000


def oracle(points: list[Point], device: str, metric: str, query: Query) -> list[float | None]:
    """What a bucket should hold, computed from the points directly."""
    buckets: dict[int, list[tuple[int, float]]] = {}
    for p in points:
        if p.device_id == device and metric in p.values and query.start <= p.ts < query.end:
            buckets.setdefault(p.ts - p.ts % query.every, []).append((p.ts, p.values[metric]))
    out: list[float | None] = []
    for b in query.buckets:
        samples = sorted(buckets.get(b, []))
        values = [v for _, v in samples]
        if not values:
            out.append(None)
        elif query.agg is Aggregation.P95:
            out.append(
                values[0] if len(values) == 1 else statistics.quantiles(values, n=20, method="inclusive")[18]
            )
        else:
            out.append(
                {
                    Aggregation.MEAN: math.fsum(values) / len(values),
                    Aggregation.SUM: math.fsum(values),
                    Aggregation.MIN: min(values),
                    Aggregation.MAX: max(values),
                    Aggregation.COUNT: float(len(values)),
                    Aggregation.LAST: samples[-1][1],
                }[query.agg]
            )
    return out


def same(got: list[float | None], want: list[float | None]) -> bool:
    return len(got) == len(want) and all(
        (g is None and w is None)
        or (g is not None and w is not None and math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-9))
        for g, w in zip(got, want, strict=True)
    )


def test_points_from_raw_and_window_batches() -> None:
    skipped: Counter[str] = Counter()
    raw = Batch(
        "gw",
        1,
        RecordKind.RAW,
        [
            RawRecord("d1", 1_700_000_000.1234, {"t": 21.5, "on": True, "n": 7, "s": "eco", "x": None}),
            RawRecord("d1", 1_700_000_001.0, {"nan": math.nan, "big": 10**400, "bad name": 1.0, "ok@x": 2.0}),
            RawRecord("d2", 1_700_000_002.0, {"t": 22.0}),
        ],
    )
    assert points_from_batch(raw, skipped) == [
        Point("d1", 1_700_000_000_123, {"t": 21.5, "on": 1.0, "n": 7.0}),
        Point("d2", 1_700_000_002_000, {"t": 22.0}),
    ]
    assert skipped == Counter(string=1, null=1, non_finite=1, too_large=1, bad_name=2)

    window = AggregateRecord("d1", "t", 1_700_000_040.0, 60.0, {"mean": 21.25, "count": 4, "max": 23.0})
    partial = AggregateRecord("d1", "t", 1_700_000_100.0, 60.0, {"mean": 20.0, "count": 2}, partial=True)
    points = points_from_batch(Batch("gw", 2, RecordKind.AGG, [window, partial]))
    assert points[0] == Point(
        "d1", 1_700_000_040_000, {"t@mean": 21.25, "t@count": 4.0, "t@max": 23.0, "t@sum": 85.0}
    )
    # a partial window is stamped just after its start, the same way every time it is sent
    assert 1_700_000_100_000 < points[1].ts < 1_700_000_101_000
    assert points_from_batch(Batch("gw", 3, RecordKind.AGG, [partial]))[0].ts == points[1].ts
    flags = Batch("gw", 4, RecordKind.FLAG, [FlagRecord("d1", "t", 1_700_000_000.0, "stuck")])
    assert points_from_batch(flags) == []


async def test_answers_on_every_tier_match_the_samples(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    points = raw_points(DEVICES, t0 - 10 * MINUTE, 2 * 3600 + 20 * 60)
    async with SQLiteStore(tmp_path / "ts.db") as store:
        for i in range(0, len(points), 700):  # several writes, several transactions
            await store.write(points[i : i + 700])
        assert store.stats()["points_written"] == sum(len(p.values) for p in points)
        cases = [
            (10_000, t0 + 12_345, t0 + 20 * MINUTE + 17),  # raw tier, unaligned range
            (MINUTE, t0 - 7 * MINUTE, t0 + 95 * MINUTE),  # 1-minute rollups
            (5 * MINUTE, t0, t0 + 2 * HOUR),  # 1-minute rollups grouped
            (HOUR, t0 - HOUR, t0 + 3 * HOUR),  # 1-hour rollups
            (2 * HOUR, t0, t0 + 2 * HOUR),  # 1-hour rollups grouped
            (90_000, t0, t0 + HOUR),  # not a multiple of a minute: raw tier
        ]
        for every, start, end in cases:
            for agg in Aggregation:
                query = Query.aligned(DEVICES[:2], ["temperature", "rssi", "door"], start, end, every, agg)
                answer = await store.query(query)
                for device in DEVICES[:2]:
                    for metric in ("temperature", "rssi", "door"):
                        want = oracle(points, device, metric, query)
                        assert same(answer.series[device][metric], want), (every, agg, device, metric)


async def test_metrics_default_to_those_with_data_and_unknown_devices_answer_empty(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    async with SQLiteStore(tmp_path / "ts.db") as store:
        await store.write([Point("d1", t0 + 1000, {"a": 1.0}), Point("d1", t0 + 2 * HOUR, {"b": 2.0})])
        answer = await store.query(Query.aligned(["d1", "ghost"], None, t0, t0 + HOUR, MINUTE, "max"))
        assert list(answer.series["d1"]) == ["a"]
        assert answer.series["ghost"] == {}
        named = await store.query(Query.aligned(["d1"], ["b", "c"], t0, t0 + HOUR, MINUTE, "max"))
        assert named.series["d1"] == {"b": [None] * 60, "c": [None] * 60}


async def test_edge_windows_answer_like_the_readings_they_summarise(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    windows = window_points(DEVICES[:1], t0, 30 * 60, ["mean", "min", "max", "count", "p95"])
    readings = raw_points(DEVICES[:1], t0, 30 * 60, seed=11)
    async with SQLiteStore(tmp_path / "ts.db") as store:
        await store.write(windows)
        for agg in ("count", "min", "max", "mean", "sum"):
            query = Query.aligned(DEVICES[:1], ["temperature"], t0, t0 + 30 * MINUTE, 5 * MINUTE, agg)
            got = (await store.query(query)).series[DEVICES[0]]["temperature"]
            assert same(got, oracle(readings, DEVICES[0], "temperature", query)), agg
        minute = Query.aligned(DEVICES[:1], ["temperature"], t0, t0 + 30 * MINUTE, MINUTE, "mean")
        means = (await store.query(minute)).series[DEVICES[0]]["temperature"]
        edge = {p.ts: p.values["temperature@mean"] for p in windows if "temperature@mean" in p.values}
        whole = [
            b
            for b in minute.buckets
            if b in edge and not any(p.ts != b and p.ts - p.ts % MINUTE == b for p in windows)
        ]
        assert len(whole) >= 28  # every minute but the one split by the agent's restart
        for b in whole:
            assert means[minute.buckets.index(b)] == edge[b]  # the edge's own mean, bit for bit
        counts = await store.query(
            Query.aligned(DEVICES[:1], ["temperature"], t0, t0 + 30 * MINUTE, MINUTE, "count")
        )
        assert counts.series[DEVICES[0]]["temperature"] == [60.0] * 30  # the split minute's parts add up
        p95 = await store.query(
            Query.aligned(DEVICES[:1], ["temperature"], t0, t0 + 30 * MINUTE, MINUTE, "p95")
        )
        exact = oracle(readings, DEVICES[0], "temperature", p95.query)
        for b in whole:
            i = minute.buckets.index(b)
            assert math.isclose(p95.series[DEVICES[0]]["temperature"][i], exact[i], rel_tol=1e-12)


async def test_a_repeated_sample_keeps_the_larger_value_in_every_tier(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    async with SQLiteStore(tmp_path / "ts.db") as store:
        await store.write([Point("d1", t0 + s * 1000, {"v": float(s)}) for s in range(120)])
        await store.write([Point("d1", t0 + 5000, {"v": 100.0}), Point("d1", t0 + 6000, {"v": 1.0})])
        assert store.stats()["points_duplicate"] == 2
        for every in (1000, MINUTE, HOUR):
            q = Query.aligned(["d1"], ["v"], t0, t0 + 2 * MINUTE, every, "max")
            assert max(v for v in (await store.query(q)).series["d1"]["v"] if v is not None) == 119.0
            total = Query.aligned(["d1"], ["v"], t0, t0 + HOUR, HOUR, "sum")
            assert (await store.query(total)).series["d1"]["v"] == [sum(range(120)) - 5 + 100.0]
            count = Query.aligned(["d1"], ["v"], t0, t0 + HOUR, every, "count")
            assert sum(v or 0 for v in (await store.query(count)).series["d1"]["v"]) == 120


async def test_retention_expires_each_tier_and_refuses_points_older_than_raw(tmp_path: Path) -> None:
    t0 = recent_hour(50)
    now = [t0 / 1000 + 3600.0]
    retention = RetentionSettings(raw=2 * 3600, rollup_1m=6 * 3600, rollup_1h=48 * 3600)
    async with SQLiteStore(tmp_path / "ts.db", retention, clock=lambda: now[0]) as store:
        await store.write([Point("d1", t0 + s * 1000, {"v": 1.0}) for s in range(3600)])

        async def counts(every: int) -> float:
            q = Query.aligned(["d1"], ["v"], t0, t0 + HOUR, every, "count")
            return sum(v or 0 for v in (await store.query(q)).series["d1"]["v"])

        assert [await counts(e) for e in (1000, MINUTE, HOUR)] == [3600, 3600, 3600]
        now[0] += 3 * 3600  # past the raw horizon: the points go, the rollups stay
        assert (await store.enforce_retention())["points"] == 3600
        assert [await counts(e) for e in (1000, MINUTE, HOUR)] == [0, 3600, 3600]
        await store.write([Point("d1", t0 + 10, {"v": 1.0})])
        assert store.stats()["points_too_old"] == 1
        now[0] += 6 * 3600
        assert (await store.enforce_retention())["rollup_1m"] == 60
        assert [await counts(e) for e in (MINUTE, HOUR)] == [0, 3600]
        now[0] += 48 * 3600
        assert (await store.enforce_retention())["rollup_1h"] == 1
        assert await counts(HOUR) == 0


async def test_latest_values_combine_raw_samples_and_windows(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    async with SQLiteStore(tmp_path / "ts.db") as store:
        await store.write(
            [
                Point("d1", t0 + 1000, {"a": 1.0, "b": 5.0}),
                Point("d1", t0 + 2000, {"a": 2.0}),
                Point("d1", t0 + MINUTE, {"w@mean": 7.5, "w@count": 3.0}),
                Point("d2", t0 + 5000, {"a": 9.0}),
            ]
        )
        latest = await store.latest(["d1", "d2", "d3"], None, at=t0 + HOUR, within=HOUR)
        assert latest == {
            "d1": {"a": (t0 + 2000, 2.0), "b": (t0 + 1000, 5.0), "w": (t0 + MINUTE, 7.5)},
            "d2": {"a": (t0 + 5000, 9.0)},
            "d3": {},
        }
        window = await store.latest(["d1"], ["a"], at=t0 + 1500, within=1000)
        assert window == {"d1": {"a": (t0 + 1000, 1.0)}}
        assert await store.latest(["d1"], ["a"], at=t0 + 1000, within=1) == {"d1": {"a": (t0 + 1000, 1.0)}}


async def test_concurrent_writes_all_land_and_a_reopened_store_keeps_them(tmp_path: Path) -> None:
    t0 = recent_hour(3)
    path = tmp_path / "ts.db"
    async with SQLiteStore(path) as store:
        await store.ready()
        await asyncio.gather(
            *(
                store.write([Point(f"d{i}", t0 + s * 1000, {"v": float(s)}) for s in range(100)])
                for i in range(50)
            )
        )
        assert store.stats()["points_written"] == 5000
    with pytest.raises(TimeSeriesError):
        await store.ready()
    async with SQLiteStore(path) as store:
        await store.write([Point("d0", t0 + 100_000, {"v": 100.0})])
        q = Query.aligned([f"d{i}" for i in range(50)], ["v"], t0, t0 + HOUR, HOUR, "count")
        answer = await store.query(q)
        assert answer.series["d0"]["v"] == [101.0]
        assert all(answer.series[f"d{i}"]["v"] == [100.0] for i in range(1, 50))
        assert store.stats()["series"] == 50


async def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=7")
    with pytest.raises(TimeSeriesError, match="schema version 7"):
        async with SQLiteStore(path):
            pass


def test_retention_must_not_shrink_towards_coarser_tiers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention"):
        SQLiteStore(tmp_path / "ts.db", RetentionSettings(raw=86400, rollup_1m=3600))
