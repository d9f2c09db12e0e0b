"""Ingest against a real Mosquitto with the real uplink format: batches in order, duplicated, reordered, with gaps,
malformed; unknown devices; gateway status; two replicas sharing the load; redelivery after a crash; shutdown;
into a real VictoriaMetrics (batches encoded as they are read) that is down, then back."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import cbor2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from sqlalchemy import func, select

from cloud_core.batch_checks import batch_problem
from cloud_core.bus import DEVICE_REGISTERED, GATEWAY_OFFLINE, GATEWAY_ONLINE
from cloud_core.dedupe import SeqMark
from cloud_core.ingest import Ingest
from cloud_core.metrics import CloudMetrics
from cloud_core.models import Device, EventRow, Gateway, IngestMark, QuarantinedBatch
from cloud_core.services import Services, open_services
from cloud_core.settings import BrokerSettings
from cloud_core.tsdb import (
    Aggregation,
    Point,
    Query,
    StoreUnavailable,
    TimeSeriesStore,
    VictoriaMetricsStore,
    lineprotocol,
    points_from_batch,
)
from fieldline.errors import BatchDecodeError
from fieldline.wire import (
    EventRecord,
    RawRecord,
    RecordKind,
    StateRecord,
    decode_batch,
    encode_batch,
    uplink_topic,
)
from tests.cloud_core.cloudkit import postgres_database
from tests.cloud_core.gatewaykit import FakeGateway, cloud_settings, readings, uplink_payload
from tests.cloud_core.tsdbkit import victoria_server
from tests.factories import eventually
from tests.servicekit import Mosquitto

T0 = time.time() - 7200


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    async with postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def cloud(
    tmp_path: Path, port: int, url: str | None = None, **sections: Any
) -> AsyncIterator[Services]:
    database = {"database": {"url": url}} if url else {}
    settings = cloud_settings(tmp_path, port, **database, **sections)
    async with open_services(settings) as services:
        ingest: Ingest = services.parts["ingest"]
        await eventually(lambda: ingest.connected, message="ingest did not connect")
        yield services


async def processed(ingest: Ingest | Sequence[Ingest], messages: int) -> None:
    """Wait until the ingest(s) received ``messages`` messages and wrote all of them."""
    ingests = [ingest] if isinstance(ingest, Ingest) else list(ingest)

    await eventually(
        lambda: sum(i.stats.messages for i in ingests) >= messages and all(i.idle for i in ingests),
        message=f"fewer than {messages} messages ingested",
    )


@contextlib.asynccontextmanager
async def without_ingest(tmp_path: Path, port: int, **sections: Any) -> AsyncIterator[tuple[Services, Any]]:
    """Services with no ingest part of their own, and the settings an ``Ingest`` under test connects with (a
    shared-subscription member that went away would keep receiving its share into its stored session)."""
    settings = cloud_settings(tmp_path, port, **sections)
    async with open_services(settings.model_copy(update={"broker": BrokerSettings()})) as services:
        yield services, settings


async def stored(store: TimeSeriesStore, device: str, metric: str = "temperature") -> int:
    """How many samples of ``metric`` the store holds for ``device``."""
    start = int(T0 * 1000) - 86_400_000
    query = Query.aligned([device], [metric], start, start + 2 * 86_400_000, 86_400_000, Aggregation.COUNT)
    answer = await store.query(query)
    return int(sum(v or 0 for v in answer.series[device][metric]))


async def scalar(services: Services, query: Any) -> Any:
    async with services.database.session() as session:
        return await session.scalar(query)


async def mark(services: Services, gateway: str) -> tuple[int, list[int]]:
    async with services.database.session() as session:
        row = await session.get(IngestMark, gateway)
        assert row is not None
        return row.low, list(row.seen)


def telemetry(seq: int, device: str = "boiler-1", n: int = 10) -> list[Any]:
    """``n`` readings unique to batch ``seq``."""
    return readings(device, n, start=T0 + seq * 100)


def note(seq: int, device: str = "boiler-1") -> list[Any]:
    return [EventRecord(device, T0 + seq * 100, "note", {"seq": seq}, "test")]


async def test_duplicated_and_reordered_batches_count_once(
    tmp_path: Path, cloud_mosquitto: Mosquitto, database_url: str | None
) -> None:
    async with (
        cloud(tmp_path, cloud_mosquitto.port, database_url) as services,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        ingest: Ingest = services.parts["ingest"]
        order = [1, 2, 3, 2, 5, 4, 1, 6, 6]
        for seq in order:
            kind, records = (RecordKind.RAW, telemetry(seq)) if seq % 2 else (RecordKind.EVENT, note(seq))
            await gateway.send(kind, records, seq=seq)
        await processed(ingest, len(order))

        assert ingest.stats.batches == 6
        assert ingest.stats.duplicates == 3
        assert ingest.stats.points == 30
        assert await stored(services.parts["tsdb"], "boiler-1") == 30
        notes = await scalar(
            services, select(func.count()).select_from(EventRow).where(EventRow.type == "note")
        )
        assert notes == 3
        assert await mark(services, "gw-1") == (6, [])
        async with services.database.session() as session:
            device = await session.get(Device, "boiler-1")
            gw = await session.get(Gateway, "gw-1")
        assert device is not None
        assert (device.status, device.gateway_id) == ("active", "gw-1")
        assert device.last_seen is not None
        assert gw is not None
        assert gw.last_seen is not None


async def test_gap_then_fill(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    async with (
        cloud(tmp_path, cloud_mosquitto.port) as services,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        ingest: Ingest = services.parts["ingest"]
        for seq in (1, 2, 5, 6):
            await gateway.send(RecordKind.RAW, telemetry(seq), seq=seq)
        await processed(ingest, 4)
        assert await mark(services, "gw-1") == (2, [5, 6])
        for seq in (4, 3, 5):
            await gateway.send(RecordKind.RAW, telemetry(seq), seq=seq)
        await processed(ingest, 7)
        assert await mark(services, "gw-1") == (6, [])
        assert (ingest.stats.batches, ingest.stats.duplicates) == (6, 1)
        assert await stored(services.parts["tsdb"], "boiler-1") == 60


async def test_malformed_batches_are_quarantined_and_ingest_goes_on(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    async with (
        cloud(tmp_path, cloud_mosquitto.port) as services,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        ingest: Ingest = services.parts["ingest"]
        topic = uplink_topic("gw-1", RecordKind.RAW)
        wrong_version = cbor2.loads(uplink_payload("gw-1", 1, RecordKind.RAW, telemetry(1)))
        wrong_version["v"] = 99
        bad_ts = [RawRecord("boiler-1", "yesterday", {"temperature": 1.0})]  # type: ignore[arg-type]
        await gateway.publish(topic, b"\x00garbage")
        await gateway.publish(topic, cbor2.dumps(wrong_version))
        await gateway.publish(topic, uplink_payload("gw-other", 1, RecordKind.RAW, telemetry(1)))
        await gateway.send(RecordKind.RAW, bad_ts, seq=1)
        await gateway.send(RecordKind.RAW, bad_ts, seq=1)  # its duplicate is dropped, not quarantined again
        await gateway.publish("fl/gw-1/up/status", b"{not json")
        await gateway.send(RecordKind.RAW, telemetry(2), seq=2)
        await processed(ingest, 7)

        async with services.database.session() as session:
            rows = (
                (await session.execute(select(QuarantinedBatch).order_by(QuarantinedBatch.id)))
                .scalars()
                .all()
            )
        assert [(r.reason, r.gateway_id) for r in rows] == [
            ("undecodable", "gw-1"),
            ("undecodable", "gw-1"),
            ("gateway_mismatch", "gw-1"),
            ("bad_record", "gw-1"),
            ("bad_status", "gw-1"),
        ]
        assert rows[0].payload == b"\x00garbage"
        assert "unsupported protocol version 99" in rows[1].detail
        assert "record 0: boiler-1: invalid ts 'yesterday'" in rows[3].detail
        assert (ingest.stats.quarantined, ingest.stats.duplicates, ingest.stats.batches) == (5, 1, 1)
        assert await stored(services.parts["tsdb"], "boiler-1") == 10
        assert await mark(services, "gw-1") == (2, [])
        exposition = generate_latest(services.metrics.registry).decode()
        assert "fieldline_cloud_ingest_quarantined 5.0" in exposition
        assert "fieldline_cloud_ingest_batches 1.0" in exposition


@pytest.mark.parametrize("mode", ["register", "quarantine"])
async def test_unknown_devices(tmp_path: Path, cloud_mosquitto: Mosquitto, mode: str) -> None:
    async with (
        cloud(tmp_path, cloud_mosquitto.port, ingest={"unknown_devices": mode}) as services,
        services.bus.subscribe(DEVICE_REGISTERED) as registered,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        ingest: Ingest = services.parts["ingest"]
        async with services.database.session() as session:
            session.add(Gateway(id="gw-1"))
            await session.flush()
            session.add(Device(id="known", gateway_id="gw-1"))
        await gateway.send(RecordKind.RAW, readings("known", 5, start=T0) + readings("stranger", 5, start=T0))
        await processed(ingest, 1)

        event = await asyncio.wait_for(registered.queue.get(), 5)
        assert event.device_id == "stranger"
        assert event.data["gateway"] == "gw-1"
        assert event.data["source"] == "ingest"
        assert event.data["status"] == ("active" if mode == "register" else "quarantined")
        async with services.database.session() as session:
            stranger = await session.get(Device, "stranger")
            quarantined = (await session.execute(select(QuarantinedBatch))).scalars().all()
        assert stranger is not None
        assert stranger.gateway_id == "gw-1"
        assert stranger.last_seen is not None
        assert ingest.stats.unknown_devices == 1
        assert await stored(services.parts["tsdb"], "known") == 5
        if mode == "register":
            assert stranger.status == "active"
            assert await stored(services.parts["tsdb"], "stranger") == 5
            assert quarantined == []
            return
        assert stranger.status == "quarantined"
        assert await stored(services.parts["tsdb"], "stranger") == 0
        [held] = quarantined
        assert held.reason == "quarantined_device"
        kept = decode_batch(
            held.payload
        )  # a whole batch: it can be published again once the device is accepted
        assert (kept.gateway, kept.seq, len(kept.records)) == ("gw-1", 1, 5)
        assert {r.device_id for r in kept.records} == {"stranger"}
        assert ingest.stats.quarantined_records == 5


async def test_gateway_status_online_and_last_will(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    async with (
        cloud(tmp_path, cloud_mosquitto.port) as services,
        services.bus.subscribe(GATEWAY_ONLINE, GATEWAY_OFFLINE) as changes,
    ):
        async with FakeGateway(cloud_mosquitto.port, "gw-1", agent_version="2.3.0") as gateway:
            await gateway.online()
            online = await asyncio.wait_for(changes.queue.get(), 10)
            assert (online.type, online.data["id"], online.data["agent_version"]) == (
                "gateway.online",
                "gw-1",
                "2.3.0",
            )
            await gateway.online()  # the same status again changes nothing
            await gateway.vanish()  # the broker publishes the last will
            offline = await asyncio.wait_for(changes.queue.get(), 10)
            assert (offline.type, offline.data["id"], offline.data["status"]) == (
                "gateway.offline",
                "gw-1",
                "offline",
            )
        async with services.database.session() as session:
            row = await session.get(Gateway, "gw-1")
        assert row is not None
        assert (row.status, row.agent_version) == ("offline", "2.3.0")
        assert changes.queue.empty()


async def test_two_replicas_share_the_load_without_double_counting(
    tmp_path: Path, cloud_mosquitto: Mosquitto, database_url: str | None
) -> None:
    async with cloud(tmp_path, cloud_mosquitto.port, database_url) as services:
        first: Ingest = services.parts["ingest"]
        second = Ingest(
            services.settings,
            services.database,
            services.bus,
            CloudMetrics(),
            services.parts["tsdb"],
            client_id=f"{services.settings.broker.client_id}-replica-2",
        )
        async with second, contextlib.AsyncExitStack() as stack:
            await eventually(lambda: second.connected)
            gateways = [
                await stack.enter_async_context(FakeGateway(cloud_mosquitto.port, f"gw-{i}"))
                for i in range(4)
            ]
            sent = 0
            for seq in range(1, 41):
                for n, gateway in enumerate(gateways):
                    device = f"dev-{n}"
                    kind, records = (
                        (RecordKind.EVENT, note(seq, device))
                        if seq % 5 == 0
                        else (
                            RecordKind.RAW,
                            telemetry(seq, device, 3),
                        )
                    )
                    await gateway.send(kind, records, seq=seq)
                    sent += 1
            rng = random.Random(7)
            for _ in range(30):  # retransmissions of batches already sent
                gateway = rng.choice(gateways)
                seq = rng.randint(1, 40)
                device = f"dev-{gateways.index(gateway)}"
                kind, records = (
                    (RecordKind.EVENT, note(seq, device))
                    if seq % 5 == 0
                    else (
                        RecordKind.RAW,
                        telemetry(seq, device, 3),
                    )
                )
                await gateway.send(kind, records, seq=seq)
                sent += 1
            await processed([first, second], sent)

        assert first.stats.batches > 0
        assert second.stats.batches > 0
        assert first.stats.batches + second.stats.batches == 160
        assert first.stats.duplicates + second.stats.duplicates == 30
        for n in range(4):
            assert await stored(services.parts["tsdb"], f"dev-{n}") == 32 * 3
            assert await mark(services, f"gw-{n}") == (40, [])
        notes = await scalar(
            services, select(func.count()).select_from(EventRow).where(EventRow.type == "note")
        )
        assert notes == 4 * 8


class _Failing:
    """The real store behind a fault: the first ``failures`` writes fail as the store being down would, and with
    ``hang`` every write hangs (a process that dies before its commit)."""

    def __init__(self, store: TimeSeriesStore, *, failures: int = 0, hang: bool = False) -> None:
        self.store = store
        self.failures = failures
        self.hang = hang

    async def write(self, points: Sequence[Point]) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("sqlite", "disk I/O error (injected)")
        await self.store.write(points)


async def test_unacknowledged_batches_come_back_after_a_crash(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    async with (
        without_ingest(tmp_path, cloud_mosquitto.port, api={"shutdown_grace": 0.5}) as (services, settings),
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        store: TimeSeriesStore = services.parts["tsdb"]

        def replica_ingest(writer: Any) -> Ingest:
            return Ingest(settings, services.database, services.bus, CloudMetrics(), writer)

        async with replica_ingest(_Failing(store, hang=True)) as crashing:
            await eventually(lambda: crashing.connected)
            for seq in (1, 2, 3):
                await gateway.send(RecordKind.RAW, telemetry(seq), seq=seq)
            await eventually(lambda: crashing.stats.messages >= 1)
        assert crashing.stats.batches == 0
        assert await stored(store, "boiler-1") == 0

        async with replica_ingest(_Failing(store, failures=2)) as restarted:
            await processed(restarted, 3)
        assert restarted.stats.batches == 3
        assert restarted.stats.write_failures == 2
        assert restarted.stats.duplicates == 0
        assert await stored(store, "boiler-1") == 30


async def test_batches_encoded_ahead_are_acknowledged_only_once_victoria_took_them(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    """Into VictoriaMetrics the reader encodes each batch as it decodes it; with the server down, flushes fail
    and nothing is acknowledged (the batches come back on the next connection and are stored once), and a batch
    that loses records to a quarantined device is sent without them."""
    sections: dict[str, Any] = {"api": {"shutdown_grace": 0.5}, "ingest": {"unknown_devices": "quarantine"}}
    with victoria_server(tmp_path / "vm") as victoria:
        async with (
            without_ingest(tmp_path, cloud_mosquitto.port, **sections) as (services, settings),
            FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
        ):
            async with services.database.session() as session:
                session.add(Gateway(id="gw-1"))
                await session.flush()
                session.add(Device(id="boiler-1", gateway_id="gw-1"))
            victoria.stop()
            async with VictoriaMetricsStore(victoria.url, timeout=2) as store:
                down = Ingest(settings, services.database, services.bus, CloudMetrics(), store)
                async with down:
                    await eventually(lambda: down.connected)
                    for seq in (1, 2, 3):
                        records = telemetry(seq) + readings("stranger", 4, start=T0 + seq * 100)
                        await gateway.send(RecordKind.RAW, records, seq=seq)
                    await eventually(lambda: down.stats.write_failures >= 2)
                assert down.stats.messages >= 1
                assert down.stats.batches == 0
                assert store.stats()["points_written"] == 0

            victoria.start()
            async with VictoriaMetricsStore(victoria.url) as store:
                again = Ingest(settings, services.database, services.bus, CloudMetrics(), store)
                async with again:
                    await processed(again, 3)
                assert (again.stats.batches, again.stats.duplicates) == (3, 0)
                assert again.stats.quarantined_records == 12
                assert again.stats.points == store.stats()["points_written"] == 30
                victoria.flush()
                assert await stored(store, "boiler-1") == 30
                assert await stored(store, "stranger") == 0


async def test_shutdown_writes_what_it_took_and_the_rest_waits_at_the_broker(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    sections: dict[str, Any] = {"ingest": {"queue_size": 5, "batch_points": 10}}
    async with (
        without_ingest(tmp_path, cloud_mosquitto.port, **sections) as (services, settings),
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        store: TimeSeriesStore = services.parts["tsdb"]
        gate = asyncio.Event()

        class Gated:
            """The real store, behind a gate that opens once shutdown has begun."""

            async def write(self, points: Sequence[Point]) -> None:
                await gate.wait()
                await store.write(points)

        stopping = Ingest(settings, services.database, services.bus, CloudMetrics(), Gated())
        await stopping.__aenter__()
        await eventually(lambda: stopping.connected)
        for seq in range(1, 31):
            await gateway.send(RecordKind.RAW, telemetry(seq), seq=seq)
        await eventually(lambda: stopping.stats.messages >= 1)
        shutdown = asyncio.create_task(stopping.__aexit__(None, None, None))
        await eventually(lambda: stopping._stopping.is_set())
        gate.set()
        await shutdown
        taken = stopping.stats.batches
        # Nothing was acknowledged before the gate opened, so the broker sent 5 at most (the receive maximum);
        # everything taken off the queue was written and acknowledged before the connection closed.
        assert 1 <= taken <= 5
        assert await stored(store, "boiler-1") == taken * 10

        again = Ingest(settings, services.database, services.bus, CloudMetrics(), store)
        async with again:
            await processed(again, 30 - taken)
        assert again.stats.batches == 30 - taken
        assert again.stats.duplicates == 0
        assert await stored(store, "boiler-1") == 300


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) | st.binary(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.sampled_from(list(RecordKind)),
    st.lists(st.lists(_values, min_size=3, max_size=7) | _values, max_size=4),
)
def test_any_decodable_batch_is_judged_without_crashing(kind: RecordKind, items: list[Any]) -> None:
    """Whatever a batch holds, the checks name a problem or accept it, and what they accept can be stored."""
    body = zlib.compress(cbor2.dumps(items))
    payload = encode_batch("gw-1", 1, kind, len(items), body, backfill=False, sent_at=time.time())
    try:
        batch = decode_batch(payload)
    except BatchDecodeError:
        return
    if batch_problem(batch) is None:
        points = points_from_batch(batch)
        assert lineprotocol.encode_batch(batch).points == len(points)  # what ingest's reader encodes ahead
        for record in batch.records:
            if isinstance(record, EventRecord | StateRecord):
                orjson.dumps(record.data if isinstance(record, EventRecord) else record.attributes)


@given(st.lists(st.integers(1, 60), max_size=200))
def test_seq_mark_accepts_each_seq_once(seqs: list[int]) -> None:
    seq_mark = SeqMark()
    accepted = [s for s in seqs if seq_mark.add(s, max_seen=1000)]
    assert sorted(accepted) == sorted(set(seqs))
    assert all(s in seq_mark for s in seqs)
    assert all(s > seq_mark.low for s in seq_mark.seen)
    assert seq_mark.low == next(n for n in range(61) if n + 1 not in set(seqs))


def test_seq_mark_gives_up_on_old_gaps() -> None:
    seq_mark = SeqMark()
    for seq in [1, 2, *range(5, 9)]:
        seq_mark.add(seq, max_seen=4)
    assert (seq_mark.low, seq_mark.seen) == (2, {5, 6, 7, 8})
    seq_mark.add(10, max_seen=4)  # more than 4 seqs wait beyond the gap: 3 and 4 are taken as lost
    assert (seq_mark.low, seq_mark.seen, seq_mark.abandoned) == (8, {10}, 2)
    assert not seq_mark.add(3, max_seen=4)
    assert seq_mark.add(9, max_seen=4)
    assert (seq_mark.low, seq_mark.seen) == (10, set())


@pytest.mark.parametrize(("session_expiry", "kept"), [("7d", 3), (0, 0)])
async def test_the_broker_keeps_the_uplink_for_the_session_expiry(
    tmp_path: Path, cloud_mosquitto: Mosquitto, session_expiry: Any, kept: int
) -> None:
    """Batches sent while the cloud core is away wait in its session for ``broker.session_expiry``; with 0 the
    session ends with the connection and they are not kept for it."""
    broker = {"session_expiry": session_expiry}
    async with (
        without_ingest(tmp_path, cloud_mosquitto.port, broker=broker) as (services, settings),
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
    ):
        store: TimeSeriesStore = services.parts["tsdb"]
        async with Ingest(settings, services.database, services.bus, CloudMetrics(), store) as first:
            await eventually(lambda: first.connected)
        for seq in (1, 2, 3):
            await gateway.send(RecordKind.RAW, telemetry(seq), seq=seq)
        async with Ingest(settings, services.database, services.bus, CloudMetrics(), store) as back:
            await eventually(lambda: back.connected)
            await gateway.send(RecordKind.RAW, telemetry(4), seq=4)  # queued ones, if any, come before it
            await processed(back, kept + 1)
            assert back.stats.batches == kept + 1
        assert await stored(store, "boiler-1") == (kept + 1) * 10
