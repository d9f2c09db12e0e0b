"""One flush of ingest: decoded uplink messages written in one registry transaction.

``UplinkWriter.write(messages)`` does, in one transaction: set the gateways' ``last_seen`` and lock their rows
(registering unknown gateways), lock their sequence marks (``cloud_core.dedupe``) and drop the batches already
ingested, register or quarantine unknown devices (``ingest.unknown_devices``) and set ``last_seen``, write the
points to the time-series store, store events (``cloud_core.events``), record gateway statuses
(``cloud_core.gateway_status``) and quarantined messages, and save the marks. When it returns, everything is
committed and the events are on the bus; ``cloud_core.ingest`` then acknowledges the messages to the broker.
It raises whatever the stores raise; the transaction is then rolled back and nothing of the flush remains.

A store that encodes batches itself (``BatchEncoder``: VictoriaMetrics) gets them encoded ahead of the flush:
ingest's reader calls ``encode_series`` as it decodes each message, so that encoding the next messages
overlaps the store's work on this flush; a flush then sends the bodies of its fresh batches (a batch that lost
records to quarantined devices is encoded again without them), and nothing is acknowledged before the store has
accepted them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.bus import DEVICE_REGISTERED, EventBus
from cloud_core.db import Database
from cloud_core.dedupe import lock_marks, save_marks
from cloud_core.events import store_records
from cloud_core.gateway_status import StatusReport, record_status
from cloud_core.models import Device, Gateway, QuarantinedBatch
from cloud_core.registry import queue_device_event
from cloud_core.settings import CloudSettings
from cloud_core.tsdb.lineprotocol import EncodedBatch
from cloud_core.tsdb.model import points_from_batch
from cloud_core.upsert import insert_ignore
from fieldline.wire import Batch, EventRecord, Record, RecordKind, StateRecord, encode_batch, encode_body
from workflows.events import Event

log = logging.getLogger("fieldline.cloud.ingest")

QUARANTINE_BYTES = 64 * 1024
"""Bytes of a malformed payload kept in its quarantine record (a batch the store refused is kept whole)."""
EVENT_KINDS = (RecordKind.STATE, RecordKind.EVENT)
SERIES_KINDS = (RecordKind.RAW, RecordKind.AGG)


class PointWriter(Protocol):
    """The part of a time-series store ingest needs."""

    async def write(self, points: Sequence[Any]) -> None: ...


@runtime_checkable
class BatchEncoder(Protocol):
    """A store that encodes decoded uplink batches itself (``VictoriaMetricsStore``: no ``Point`` per record)."""

    def encode_batch(self, batch: Batch) -> EncodedBatch: ...

    async def write_encoded(self, batches: Sequence[EncodedBatch]) -> int: ...


def encode_series(store: PointWriter, batch: Batch) -> EncodedBatch | None:
    """``batch``'s points encoded for ``store`` ahead of the flush that writes them, when the store encodes
    (``BatchEncoder``) and the batch holds time series (``raw``, ``agg``); else None."""
    if isinstance(store, BatchEncoder) and batch.kind in SERIES_KINDS:
        return store.encode_batch(batch)
    return None


async def write_series(
    store: PointWriter, series: Sequence[Batch | EncodedBatch], skipped: Counter[str] | None = None
) -> int:
    """Write the time series of ``series`` to ``store``: ``raw`` and ``agg`` batches, or their points encoded by
    ``encode_series``; returns how many points that was. Values that cannot be stored are counted in
    ``skipped`` (as ``points_from_batch`` counts them)."""
    if not series:
        return 0
    if isinstance(store, BatchEncoder):
        encoded = [s if isinstance(s, EncodedBatch) else store.encode_batch(s) for s in series]
        if skipped is not None:
            for batch in encoded:
                if batch.skipped:
                    skipped.update(batch.skipped)
        return await store.write_encoded(encoded)
    points = [p for b in cast("Sequence[Batch]", series) for p in points_from_batch(b, skipped)]
    if points:
        await store.write(points)
    return len(points)


@dataclass(slots=True)
class UplinkMessage:
    """One message received from the broker, decoded (or with the reason it cannot be)."""

    topic: str
    payload: bytes
    ack: Callable[[], None]
    """Acknowledges the message on the connection it came in on (a no-op once that connection is gone)."""
    gateway: str | None = None
    batch: Batch | None = None
    status: StatusReport | None = None
    encoded: EncodedBatch | None = None
    """The batch's points encoded for the store, ahead of the flush (``encode_series``)."""
    problem: tuple[str, str] | None = None
    """(reason, detail) when the message is quarantined."""

    @property
    def seq(self) -> int | None:
        return self.batch.seq if self.batch is not None and self.gateway is not None else None

    @property
    def size(self) -> int:
        return len(self.batch.records) if self.batch is not None else 1


@dataclass(slots=True)
class _Fresh:
    """A well-formed batch seen for the first time."""

    item: UplinkMessage
    gateway: str
    batch: Batch

    @property
    def topic(self) -> str:
        return self.item.topic


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    records: int = 0
    points: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_records: int = 0
    unknown_devices: int = 0
    devices_registered: int = 0
    gateways_registered: int = 0
    statuses: int = 0
    gaps_abandoned: int = 0
    flushes: int = 0
    write_failures: int = 0
    lag_seconds: float = 0.0
    """Gateway send time to commit, of the oldest batch in the last flush (the gateways' clocks included)."""


@dataclass(slots=True)
class _Flush:
    """What one flush decided, published once its transaction committed."""

    events: list[Event] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    """Values the time-series store cannot hold (strings, nulls, ...), by reason."""

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n


def utcnow() -> datetime:
    return datetime.now(UTC)


class UplinkWriter:
    """Writes flushes, counting in ``stats`` (and ``skipped``: values the time-series store cannot hold)."""

    def __init__(
        self,
        settings: CloudSettings,
        database: Database,
        bus: EventBus,
        store: PointWriter,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.database = database
        self.bus = bus
        self.store = store
        self.clock = clock
        self.stats = IngestStats()
        self.skipped: Counter[str] = Counter()

    async def write(self, items: list[UplinkMessage]) -> None:
        """Write one flush (see the module docstring)."""
        now = self.clock()
        flush = _Flush()
        async with self.database.session() as session:
            gateways = sorted({i.gateway for i in items if i.gateway is not None})
            await self._register_gateways(session, gateways, now, flush)
            marks = await lock_marks(session, (i.gateway for i in items if i.seq is not None))
            fresh: list[_Fresh] = []
            statuses: dict[str, StatusReport] = {}
            for item in items:
                if (
                    item.seq is not None
                    and item.gateway is not None
                    and not marks[item.gateway].add(item.seq)
                ):
                    flush.count("duplicates")
                elif item.problem is not None:
                    self._quarantine(session, item, now, *item.problem)
                    flush.count("quarantined")
                elif item.status is not None and item.gateway is not None:
                    statuses[item.gateway] = item.status  # the newest report of each gateway wins
                elif item.batch is not None and item.gateway is not None:
                    fresh.append(_Fresh(item, item.gateway, item.batch))
            flush.count("gaps_abandoned", sum(m.abandoned for m in marks.values()))
            quarantined = await self._devices(session, fresh, now, flush)
            series: list[Batch | EncodedBatch] = []
            for item in fresh:
                batch = self._divert(session, item, quarantined, now, flush)
                flush.count("batches")
                flush.count("records", len(batch.records))
                if batch.kind in EVENT_KINDS:
                    records = cast(list[StateRecord | EventRecord], batch.records)
                    flush.events += await store_records(session, item.gateway, records, now)
                elif batch is item.batch and item.item.encoded is not None:
                    series.append(item.item.encoded)
                else:
                    series.append(batch)
            flush.count("points", await write_series(self.store, series, flush.skipped))
            for gateway, report in sorted(statuses.items()):
                await record_status(session, self.bus, gateway, report, now)
                flush.count("statuses")
            await save_marks(session, marks)
        for event in flush.events:
            self.bus.publish(event)
        self._account(flush, fresh)

    def _account(self, flush: _Flush, fresh: list[_Fresh]) -> None:
        for name, value in flush.stats.items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        self.stats.events += len(flush.events)
        self.skipped.update(flush.skipped)
        self.stats.flushes += 1
        sent = [i.batch.sent_at for i in fresh if i.batch.sent_at > 0]
        committed = self.clock().timestamp()
        self.stats.lag_seconds = round(max(0.0, committed - min(sent)), 3) if sent else 0.0

    async def _register_gateways(
        self, session: AsyncSession, gateways: list[str], now: datetime, flush: _Flush
    ) -> None:
        """Set the gateways' ``last_seen`` and lock their rows, registering those not known yet (the broker's
        ACLs decide who may publish on ``fl/<id>/up``). On SQLite the update comes first: a transaction that
        starts by writing holds the database's one write lock from then on. On PostgreSQL the rows are locked
        in id order first, so that concurrent flushes of replicas never wait on each other in a cycle."""
        if not gateways:
            return
        table = Gateway.__table__
        touch = (
            update(table).where(table.c.id.in_(gateways)).values(last_seen=now, updated_at=table.c.updated_at)
        )
        if session.bind.dialect.name == "sqlite":
            known = set((await session.execute(touch.returning(table.c.id))).scalars())
        else:
            lock = select(table.c.id).where(table.c.id.in_(gateways)).order_by(table.c.id).with_for_update()
            known = set((await session.execute(lock)).scalars())
            await session.execute(touch)
        missing = [{"id": g, "last_seen": now} for g in gateways if g not in known]
        if missing:
            new = await session.execute(insert_ignore(session, Gateway, missing).returning(table.c.id))
            flush.count("gateways_registered", len(new.all()))

    async def _devices(
        self, session: AsyncSession, fresh: list[_Fresh], now: datetime, flush: _Flush
    ) -> set[str]:
        """Register the unknown devices of ``fresh`` (active or quarantined, by ``ingest.unknown_devices``),
        update ``last_seen`` (and a missing gateway) of all of them; returns the ids of quarantined ones."""
        gateway_of: dict[str, str] = {}
        for item in fresh:
            for record in item.batch.records:
                if record.device_id is not None:
                    gateway_of.setdefault(record.device_id, item.gateway)
        if not gateway_of:
            return set()
        ids = sorted(gateway_of)
        table = Device.__table__
        known = {
            row.id: row
            for row in await session.execute(
                select(table.c.id, table.c.status, table.c.gateway_id).where(table.c.id.in_(ids))
            )
        }
        status_of = {device: row.status for device, row in known.items()}
        unknown = [d for d in ids if d not in known]
        if unknown:
            flush.count("unknown_devices", len(unknown))
            status = "active" if self.settings.ingest.unknown_devices == "register" else "quarantined"
            new = [
                {"id": d, "gateway_id": gateway_of[d], "status": status, "last_seen": now} for d in unknown
            ]
            for row in await session.execute(insert_ignore(session, Device, new).returning(*table.c)):
                queue_device_event(session, self.bus, DEVICE_REGISTERED, row, source="ingest")  # type: ignore[arg-type]
                flush.count("devices_registered")
            rows = await session.execute(select(table.c.id, table.c.status).where(table.c.id.in_(unknown)))
            status_of.update((device, status) for device, status in rows)
        for chunk in _chunks(ids, 500):
            await session.execute(
                update(table)
                .where(table.c.id.in_(chunk))
                .values(last_seen=now, updated_at=table.c.updated_at)
            )
        adopted = [
            {"device": d, "gateway": gateway_of[d]} for d, row in known.items() if row.gateway_id is None
        ]
        if adopted:
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("device"), table.c.gateway_id.is_(None))
                .values(gateway_id=bindparam("gateway"), updated_at=table.c.updated_at),
                adopted,
            )
        return {d for d, s in status_of.items() if s == "quarantined"}

    def _divert(
        self, session: AsyncSession, item: _Fresh, quarantined: set[str], now: datetime, flush: _Flush
    ) -> Batch:
        """``item``'s batch without the records of quarantined devices; those are kept in a quarantine record
        (a complete batch envelope, so that it can be published again once the devices are accepted)."""
        batch = item.batch
        if not quarantined:
            return batch
        kept: list[Record] = []
        held: list[Record] = []
        for record in batch.records:
            (held if record.device_id in quarantined else kept).append(record)
        if not held:
            return batch
        devices = sorted({r.device_id for r in held if r.device_id is not None})
        envelope = encode_batch(
            batch.gateway,
            batch.seq,
            batch.kind,
            len(held),
            encode_body(held),
            backfill=batch.backfill,
            sent_at=batch.sent_at,
        )
        session.add(
            QuarantinedBatch(
                gateway_id=item.gateway,
                topic=item.topic,
                reason="quarantined_device",
                detail=f"{len(held)} records of quarantined devices: {', '.join(devices)}"[:2000],
                payload=envelope,
                received_at=now,
            )
        )
        flush.count("quarantined_records", len(held))
        return replace(batch, records=kept)

    def _quarantine(
        self, session: AsyncSession, item: UplinkMessage, now: datetime, reason: str, detail: str
    ) -> None:
        log.warning("quarantined %s: %s", item.topic, detail, extra={"reason": reason})
        session.add(
            QuarantinedBatch(
                gateway_id=item.gateway,
                topic=item.topic[:300],
                reason=reason,
                detail=detail[:2000],
                # A batch the store refused is good data: kept whole, to be published again once fixed.
                payload=item.payload if reason == "store_error" else item.payload[:QUARANTINE_BYTES],
                received_at=now,
            )
        )


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
