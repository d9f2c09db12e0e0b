"""The VictoriaMetrics store against a real ``victoria-metrics`` started by the test: what lands in the server
(names and ids holding ``:`` included, writes split over several requests), uplink batches written whole
(``write_series`` through ``encode_batch``/``write_encoded``) against the same batches through points into
SQLite, answers, repeated samples, latest values, precision, and an unreachable server; the line protocol
encoders byte for byte."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud_core.tsdb import (
    Point,
    Query,
    SQLiteStore,
    StoreUnavailable,
    VictoriaMetricsStore,
    points_from_batch,
)
from cloud_core.tsdb.lineprotocol import EncodedBatch, encode, encode_batch
from cloud_core.tsdb.victoria import POINTS_PER_REQUEST
from cloud_core.uplink_writer import encode_series, write_series
from fieldline.wire import AggregateRecord, Batch, RawRecord, RecordKind
from tests.cloud_core.tsdbkit import HOUR, raw_points, recent_hour, victoria_server
from tests.servicekit import VictoriaMetrics

MINUTE = 60_000


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with victoria_server(tmp_path / "vm") as server:
        yield server


async def test_points_land_as_one_series_per_device_and_metric(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.ready()
        await store.write([Point("dev-1", t0 + 1000, {"temperature": 21.5, "temperature@mean": 20.25})])
        victoria.flush()
        async with httpx.AsyncClient(base_url=victoria.url) as http:
            exported = (await http.post("/api/v1/export", data={"match[]": '{device="dev-1"}'})).text
        names = sorted(line.split('"__name__":"')[1].split('"')[0] for line in exported.splitlines())
        assert names == ["fieldline_temperature", "fieldline_temperature@mean"]
        assert store.stats()["points_written"] == 2


def test_line_protocol_one_line_per_point() -> None:
    points = [
        Point("dev-1", 1_700_000_000_123, {"temperature": 21.5, "t@mean": -0.25}),
        Point("dev-2", 1_700_000_000_124, {"tiny": 1e-7, "huge": 1.5e300, "whole": 3.0}),
        Point("dev-1", 1_700_000_000_125, {"door": 1.0}),
    ]
    body = encode(points)
    assert body == (
        b"fieldline,device=dev-1 temperature=21.5,t@mean=-0.25 1700000000123\n"
        b"fieldline,device=dev-2 tiny=1e-7,huge=1.5e+300,whole=3.0 1700000000124\n"
        b"fieldline,device=dev-1 door=1.0 1700000000125"
    )
    assert body.count(b",") == 6  # one per value: how the store counts the points it wrote
    assert encode(points, "other").startswith(b"other,device=dev-1 ")
    assert encode([]) == b""


def test_line_protocol_with_colons_in_names_and_ids() -> None:
    body = encode([Point("site:a:7", 5, {"a:b": 1.0, "c": 2.0}), Point("d", 6, {"x:": 3.0})])
    assert body == b"fieldline,device=site:a:7 a:b=1.0,c=2.0 5\nfieldline,device=d x:=3.0 6"


async def test_names_and_ids_with_colons_land(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write([Point("site:a:7", t0 + 1000, {"a:b": 1.5, "c": 2.0})])
        victoria.flush()
        answer = await store.query(Query.aligned(["site:a:7"], None, t0, t0 + MINUTE, MINUTE, "max"))
        assert answer.series["site:a:7"] == {"a:b": [1.5], "c": [2.0]}


async def test_a_large_write_goes_in_equal_requests(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    points = [
        Point(f"dev-{i % 7}", t0 + i, {"v": float(i), "w": 1.0}) for i in range(2 * POINTS_PER_REQUEST + 1)
    ]
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write(points)
        await store.write([])
        victoria.flush()
        stats = store.stats()
        assert stats["requests"] == 3
        assert stats["points_written"] == 2 * len(points)
        answer = await store.query(
            Query.aligned([f"dev-{i}" for i in range(7)], ["v"], t0, t0 + HOUR, HOUR, "count")
        )
        assert sum(series["v"][0] or 0 for series in answer.series.values()) == len(points)


def uplink(t0: int, records: int) -> list[Batch]:
    """Raw batches of 600 records (some values the stores cannot hold: strings, nulls, NaN, a bad name, huge
    integers; some ints and booleans), then a batch of edge windows, one of them partial."""
    raw = []
    for i in range(records):
        metrics: dict[str, object] = {"temperature": 20 + i % 7 / 4, "count": i, "door": i % 2 == 0}
        if i % 97 == 0:
            metrics.update({"label": "on", "gone": None, "bad name": 1.0, "nan": math.nan, "big": 10**400})
        raw.append(RawRecord(f"dev-{i % 5}", (t0 + i * 1000 + 7) / 1000, metrics))
    batches = [
        Batch("gw", n, RecordKind.RAW, raw[i : i + 600], False, 0.0)
        for n, i in enumerate(range(0, records, 600))
    ]
    windows = [
        AggregateRecord("dev-1", "temperature", t0 / 1000, 60.0, {"mean": 21.5, "count": 60.0, "max": 23.0}),
        AggregateRecord("dev-1", "temperature", t0 / 1000 + 60, 60.0, {"mean": 22.0, "count": 10.0}, True),
        AggregateRecord("dev-2", "bad name", t0 / 1000, 60.0, {"mean": 1.0}),
    ]
    return [*batches, Batch("gw", len(batches), RecordKind.AGG, windows, False, 0.0)]


def test_batches_encode_as_their_points() -> None:
    batches = uplink(recent_hour(3), 1500)
    via_points: Counter[str] = Counter()
    points = [p for b in batches for p in points_from_batch(b, via_points)]
    encoded = [encode_batch(b) for b in batches]
    assert b"\n".join(e.body for e in encoded) == encode(points)  # joined bodies are one request's body
    assert [e.points for e in encoded] == [len(points_from_batch(b)) for b in batches]
    direct = sum((e.skipped for e in encoded), Counter[str]())
    assert direct == via_points
    assert direct["string"] == direct["null"] == direct["non_finite"] == direct["too_large"] == 16
    assert encode_batch(Batch("gw", 9, RecordKind.RAW, [], False, 0.0)) == (b"", 0, Counter())


async def test_batches_written_whole_answer_as_points_in_sqlite(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    t0 = recent_hour(3)
    batches = uplink(t0, 2 * POINTS_PER_REQUEST + 600)
    skipped: dict[str, Counter[str]] = {"sqlite": Counter(), "victoria": Counter()}
    async with VictoriaMetricsStore(victoria.url) as store, SQLiteStore(tmp_path / "ts.db") as sqlite:
        written = await write_series(store, batches, skipped["victoria"])
        assert (
            written == await write_series(sqlite, batches, skipped["sqlite"]) == 2 * POINTS_PER_REQUEST + 602
        )
        assert skipped["victoria"] == skipped["sqlite"]
        assert store.stats()["requests"] == 3  # of about equal size
        assert store.stats()["points_written"] == sqlite.stats()["points_written"]
        # Encoded ahead (as ingest's reader does), mixed with batches encoded at the flush: the same points again.
        again: Counter[str] = Counter()
        series = [encode_series(store, b) if b.seq % 2 else b for b in batches]
        assert all(isinstance(s, EncodedBatch) for s in series[1::2])
        assert await write_series(store, series, again) == written
        assert again == skipped["victoria"]
        assert store.stats()["points_written"] == 2 * sqlite.stats()["points_written"]
        victoria.flush()
        devices = [f"dev-{i}" for i in range(5)]
        for agg in ("count", "mean", "max"):
            query = Query.aligned(devices, ["temperature", "count", "door"], t0, t0 + 4 * HOUR, HOUR, agg)
            assert (await store.query(query)).series == (await sqlite.query(query)).series


async def test_answers_from_exported_samples(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    points = raw_points(["dev-1", "dev-2"], t0, 1800)
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write(points)
        victoria.flush()
        answer = await store.query(
            Query.aligned(["dev-1", "dev-2", "ghost"], None, t0, t0 + HOUR, MINUTE, "count")
        )
        assert sorted(answer.series["dev-1"]) == ["door", "humidity", "rssi", "temperature"]
        assert answer.series["dev-1"]["temperature"] == [60.0] * 30 + [None] * 30
        assert answer.series["ghost"] == {}
        values = [p.values["temperature"] for p in points if p.device_id == "dev-2" and p.ts < t0 + MINUTE]
        first = await store.query(Query.aligned(["dev-2"], ["temperature"], t0, t0 + MINUTE, MINUTE, "max"))
        assert first.series["dev-2"]["temperature"] == [max(values)]


async def test_a_repeated_sample_keeps_the_larger_value(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write([Point("d1", t0 + 1000, {"v": 1.0}), Point("d1", t0 + 2000, {"v": 3.0})])
        await store.write([Point("d1", t0 + 1000, {"v": 5.0}), Point("d1", t0 + 2000, {"v": 2.0})])
        victoria.flush()
        for agg, want in (("count", 2.0), ("sum", 8.0), ("max", 5.0)):
            answer = await store.query(Query.aligned(["d1"], ["v"], t0, t0 + MINUTE, MINUTE, agg))
            assert answer.series["d1"]["v"] == [want]


async def test_latest_values_from_instant_queries(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write(
            [
                Point("d1", t0 + 1000, {"a": 1.0, "b": 5.0}),
                Point("d1", t0 + 2500, {"a": 2.0}),
                Point("d1", t0 + MINUTE, {"w@mean": 7.5, "w@count": 3.0}),
            ]
        )
        victoria.flush()
        latest = await store.latest(["d1", "d2"], None, at=t0 + HOUR, within=HOUR)
        assert latest == {
            "d1": {"a": (t0 + 2500, 2.0), "b": (t0 + 1000, 5.0), "w": (t0 + MINUTE, 7.5)},
            "d2": {},
        }
        assert await store.latest(["d1"], ["a"], at=t0 + 1500, within=1000) == {"d1": {"a": (t0 + 1000, 1.0)}}
        assert await store.latest(["d1"], ["a"], at=t0 + 2000, within=1000) == {"d1": {}}  # (at - within, at]


async def test_values_keep_about_twelve_significant_digits(victoria: VictoriaMetrics) -> None:
    t0 = recent_hour(3)
    value = 21.123456789012345
    async with VictoriaMetricsStore(victoria.url) as store:
        await store.write([Point("d1", t0, {"v": value, "w": 21.25})])
        victoria.flush()
        answer = await store.query(Query.aligned(["d1"], ["v", "w"], t0, t0 + MINUTE, MINUTE, "last"))
        assert answer.series["d1"]["w"] == [21.25]
        assert math.isclose(answer.series["d1"]["v"][0], value, rel_tol=1e-11)


async def test_an_unreachable_server_is_a_retryable_error(tmp_path: Path) -> None:
    with victoria_server(tmp_path / "vm") as server:
        url = server.url
    async with VictoriaMetricsStore(url, timeout=2) as store:
        for call in (
            store.ready(),
            store.write([Point("d1", recent_hour(1), {"v": 1.0})]),
            store.query(Query.aligned(["d1"], None, 0, MINUTE, MINUTE, "mean")),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert caught.value.retryable
