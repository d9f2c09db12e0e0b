"""Ingest: the gateways' uplink, from the cloud broker into the time-series store and the registry.

``Ingest`` (the ``ingest`` part) is an async context manager holding one MQTT 5 connection (aiomqtt) that
subscribes to ``$share/<group>/fl/+/up/telemetry`` and ``$share/<group>/fl/+/up/events`` (several replicas in
one group split the batches between them) and to ``fl/+/up/status`` (not shared: every replica keeps every
gateway's retained status). One task receives, one task writes, with a bounded queue between them.

The reader decodes each message (``UplinkMessage``: a batch, a status, or the reason it is malformed) and,
for a store that encodes batches itself, encodes its points (``uplink_writer.encode_series``). The
writer takes what is queued, up to ``ingest.batch_points`` records, and writes it as one flush in one registry
transaction (``cloud_core.uplink_writer``: dedupe, devices, points, events, statuses, quarantine, marks); only
after the commit are the messages acknowledged to the broker (manual PUBACK).

Guarantees (``docs/cloud-ingest.md``):

- Nothing is counted twice: a batch is stored only if its ``(gateway, seq)`` is not in the mark, and the mark is
  saved in the transaction that stored the batch's events, after its points were written.
- Nothing acknowledged is lost: a crash before the commit leaves the messages unacknowledged, and the broker
  delivers them again to this client id (a persistent session); they are then stored, or dropped as
  duplicates. Points written just before such a crash are written again (the store keeps one value per
  series and timestamp, so the repeat replaces them).
- Backpressure, not drops: the broker sends at most ``ingest.queue_size`` unacknowledged messages (MQTT 5
  Receive Maximum), and the queue holds as many; when the store is slow the broker holds the rest.
- A malformed message never stops ingest: it is quarantined (``QuarantinedBatch``) with its reason, counted,
  and acknowledged. A store error retries with backoff when it is transient (connection, lock, deadlock);
  otherwise the flush is split and the one message that still fails is quarantined (``store_error``).
- Shutdown stops receiving, writes what is queued (up to ``api.shutdown_grace``), acknowledges it, and only
  then disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import aiomqtt
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cloud_core.batch_checks import batch_problem
from cloud_core.broker import broker_client, connect_properties, manual_acks
from cloud_core.bus import EventBus
from cloud_core.db import Database
from cloud_core.gateway_status import StatusError, parse_status
from cloud_core.metrics import CloudMetrics
from cloud_core.settings import CloudSettings
from cloud_core.uplink_writer import PointWriter, UplinkMessage, UplinkWriter, encode_series, utcnow
from fieldline.errors import BatchDecodeError
from fieldline.wire import decode_batch, valid_id

log = logging.getLogger("fieldline.cloud.ingest")

TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03", "57P01")
"""Serialization failure, deadlock, lock not available, admin shutdown: worth retrying."""


def _transient(exc: BaseException) -> bool:
    """Whether retrying the same flush later may succeed."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
    return bool(getattr(exc, "retryable", False))


class Ingest:
    """Receives the uplink and stores it; ``ready()`` says whether the broker connection is up."""

    def __init__(
        self,
        settings: CloudSettings,
        database: Database,
        bus: EventBus,
        metrics: CloudMetrics,
        store: PointWriter,
        *,
        client_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.writer = UplinkWriter(settings, database, bus, store, clock=clock)
        self.stats = self.writer.stats
        self.client_id = client_id or f"{settings.broker.client_id}-ingest"
        self.connected = False
        self.last_error: str | None = None
        self._queue: asyncio.Queue[UplinkMessage | None] = asyncio.Queue(settings.ingest.queue_size)
        self._stopping = asyncio.Event()
        self._written = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._storing = False
        self._holding = False
        self._link: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        metrics.register_source("ingest", self._metrics)

    def _metrics(self) -> dict[str, float]:
        return {
            **{name: float(value) for name, value in vars(self.stats).items()},
            **{f"values_skipped_{reason}": n for reason, n in self.writer.skipped.items()},
            "queue_depth": self._queue.qsize(),
            "connected": int(self.connected),
        }

    @property
    def filters(self) -> list[tuple[str, int]]:
        group = self.settings.broker.shared_group
        return [
            (f"$share/{group}/fl/+/up/telemetry", 1),
            (f"$share/{group}/fl/+/up/events", 1),
            ("fl/+/up/status", 1),
        ]

    async def __aenter__(self) -> Ingest:
        first = self._client()  # raises here, at start-up, if the client cannot acknowledge manually
        self._writer = asyncio.create_task(self._write_forever(), name="ingest-writer")
        self._link = asyncio.create_task(self._stay_connected(first), name="ingest-link")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop receiving, write and acknowledge what is queued, then disconnect."""
        self._stopping.set()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
        if self._writer is None or self._link is None:
            return
        if not self._writer.done():
            await self._queue.put(None)  # the writer drains the queue up to this mark, then ends
        done, _ = await asyncio.wait({self._writer}, timeout=self.settings.api.shutdown_grace)
        if not done:
            log.warning(
                "ingest shutdown grace expired: what was not written comes back on the next connection"
            )
            self._writer.cancel()
            await asyncio.wait({self._writer})
        self._written.set()
        done, _ = await asyncio.wait({self._link}, timeout=5.0)
        if not done:
            self._link.cancel()
            await asyncio.wait({self._link})

    @property
    def idle(self) -> bool:
        """Nothing received is waiting or being written."""
        return self._queue.empty() and not self._storing and not self._holding

    async def ready(self) -> None:
        for task in (self._link, self._writer):
            if task is not None and task.done() and not self._stopping.is_set():
                failure = None if task.cancelled() else task.exception()
                raise RuntimeError(f"ingest stopped: {task.get_name()} ended ({failure!r})")
        if not self.connected:
            raise ConnectionError(f"not connected to the broker ({self.last_error or 'connecting'})")

    # ------------------------------------------------------------------------------------------- receiving

    def _client(self) -> tuple[aiomqtt.Client, Callable[[aiomqtt.Message], None]]:
        """A client for one connection (a persistent session, receive maximum = queue size) and its ack."""
        client = broker_client(
            self.settings.broker,
            self.client_id,
            clean_start=False,
            properties=connect_properties(
                session_expiry=int(self.settings.broker.session_expiry),
                receive_maximum=self.settings.ingest.queue_size,
            ),
        )
        return client, manual_acks(client)

    async def _stay_connected(self, first: tuple[aiomqtt.Client, Callable[[aiomqtt.Message], None]]) -> None:
        delay = 0.2
        client, ack = first
        while True:
            try:
                async with client:
                    await client.subscribe(self.filters)
                    self.connected, self.last_error, delay = True, None, 0.2
                    log.info("ingest connected", extra={"client_id": self.client_id})
                    if not self._stopping.is_set():
                        self._reader = asyncio.create_task(self._read(client, ack), name="ingest-reader")
                        await asyncio.wait({self._reader})
                        if not self._reader.cancelled() and self._reader.exception() is not None:
                            raise self._reader.exception()  # type: ignore[misc]
                    if self._stopping.is_set():
                        await self._written.wait()  # the last acknowledgements leave on this connection
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                log.warning("ingest connection lost", extra={"error": str(exc), "retry_in": delay})
            finally:
                self.connected = False
                self._reader = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            delay = min(delay * 2, 10.0)
            client, ack = self._client()

    async def _read(self, client: aiomqtt.Client, ack: Callable[[aiomqtt.Message], None]) -> None:
        """Decode here, so that decoding the next messages overlaps the writer's waits on the stores."""
        async for message in client.messages:
            self._holding = True
            try:
                await self._queue.put(self._decode(message, functools.partial(ack, message)))
            finally:
                self._holding = False

    # ------------------------------------------------------------------------------------------- writing

    async def _write_forever(self) -> None:
        limit = self.settings.ingest.batch_points
        while True:
            first = await self._queue.get()
            if first is None:
                return
            items = [first]
            size, last = first.size, False
            while size < limit and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    last = True
                    break
                items.append(item)
                size += item.size
            self._storing = True
            try:
                await self._store(items)
            finally:
                self._storing = False
            if last:
                return

    def _decode(self, message: aiomqtt.Message, ack: Callable[[], None]) -> UplinkMessage:
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        )
        item = UplinkMessage(message.topic.value, payload, ack)
        self.stats.messages += 1
        try:
            self._understand(item)
        except Exception as exc:  # a bug here must not stop the reader: the message is kept in quarantine
            log.exception("decoding %s failed", item.topic)
            item.batch, item.status = None, None
            item.problem = ("undecodable", f"{type(exc).__name__}: {exc}")
        return item

    def _understand(self, item: UplinkMessage) -> None:
        parts = item.topic.split("/")
        if len(parts) != 4 or parts[0] != "fl" or parts[2] != "up" or not valid_id(parts[1]):
            item.problem = ("bad_topic", f"not an uplink topic: {item.topic!r}")
            return
        item.gateway = parts[1]
        try:
            if parts[3] == "status":
                item.status = parse_status(item.payload, item.gateway)
                return
            item.batch = decode_batch(item.payload)
        except (StatusError, BatchDecodeError) as exc:
            item.problem = ("bad_status" if parts[3] == "status" else "undecodable", str(exc))
            return
        if item.batch.gateway != item.gateway:
            item.problem = ("gateway_mismatch", f"batch of {item.batch.gateway!r} on {item.topic!r}")
            item.batch = None
            return
        problem = batch_problem(item.batch)
        if problem is not None:
            item.problem = ("bad_record", problem)
            return
        item.encoded = encode_series(self.writer.store, item.batch)

    async def _store(self, items: list[UplinkMessage]) -> None:
        """Flush ``items`` until it succeeds (or quarantine the one that cannot be stored), then acknowledge."""
        delay = 0.2
        while True:
            try:
                await self.writer.write(items)
                break
            except Exception as exc:
                if _transient(exc):
                    self.stats.write_failures += 1
                    log.warning(
                        "ingest write failed; retrying", extra={"error": repr(exc), "retry_in": delay}
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                log.exception("ingest write refused (%d messages)", len(items))
                if len(items) > 1:
                    for item in items:
                        await self._store([item])
                    return
                items = [replace(items[0], problem=("store_error", f"{type(exc).__name__}: {exc}"))]
        for item in items:
            item.ack()
