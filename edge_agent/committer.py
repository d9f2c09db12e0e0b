"""Group commit: everything the agent must make durable goes to SQLite in one transaction per interval.

Between commits, the loop thread only appends to in-memory lists (journal rows, outbox records, marks,
quarantine entries, acknowledgements). A commit swaps those lists out and writes them on the store thread, so
the loop keeps receiving while the card is written. Only after the transaction is durable are the MQTT messages
it covers acknowledged and the CoAP requests answered: that is the agent's delivery guarantee.

A commit starts ``commit_interval`` after the first pending write, or at once when enough acknowledgements are
waiting (the broker stops sending when its in-flight window to us is full) or someone waits for durability.

Memory is bounded by ``max_pending_messages``: a reader that brings the pending messages to that many is held
(``hold``: it stops reading its socket) until the next commit takes them, so at most twice that many messages
are in memory, half being written and half arriving. QoS 1 needs no hold (the broker's receive window is
smaller); at QoS 0 the broker keeps what the agent is not reading, under its own limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from edge_agent.errors import StoreError
from edge_agent.journal import Journal
from edge_agent.metrics import AgentMetrics
from edge_agent.outbox import KIND_CODES, Outbox
from edge_agent.quarantine import Quarantine, QuarantineEntry
from edge_agent.store import StoreThread
from fieldline.tasks import cancel_and_wait
from fieldline.wire import Point, Record

log = logging.getLogger(__name__)

JOURNAL_PRUNE_EVERY = 5.0


@dataclass(slots=True)
class _Pending:
    journal: list[Point] = field(default_factory=list)
    records: list[tuple[float, Record]] = field(default_factory=list)
    marks: dict[tuple[str, str], float] = field(default_factory=dict)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    acks: list[Callable[[], None]] = field(default_factory=list)
    acked: int = 0  # messages the callbacks in ``acks`` acknowledge
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    acked_batches: list[int] = field(default_factory=list)
    messages: int = 0  # device messages whose effects this commit makes durable

    def empty(self) -> bool:
        return not (
            self.journal
            or self.records
            or self.marks
            or self.quarantine
            or self.acks
            or self.waiters
            or self.acked_batches
        )


@dataclass(slots=True)
class CommitResult:
    sealed: int
    dropped: dict[str, int]
    deleted_batches: int


class Committer:
    """Collects writes on the loop thread and commits them in groups on the store thread.

    It is also the pipelines' ``RecordSink``: ``emit`` and ``mark`` queue outbox records and journal marks.
    """

    def __init__(
        self,
        thread: StoreThread,
        conn: sqlite3.Connection,
        outbox: Outbox,
        journal: Journal,
        quarantine: Quarantine,
        metrics: AgentMetrics,
        *,
        interval: float,
        ack_threshold: int,
        max_pending_messages: int = 10_000,
        hold_horizon: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.thread = thread
        self.conn = conn
        self.outbox = outbox
        self.journal_store = journal
        self.quarantine_store = quarantine
        self.metrics = metrics
        self.interval = interval
        self.ack_threshold = ack_threshold
        self.max_pending_messages = max_pending_messages
        self._held: list[Callable[[], None]] = []
        self.hold_horizon = hold_horizon
        self.clock = clock
        self.in_flight: set[int] = set()
        self.on_sealed: Callable[[], None] = lambda: None
        self._pending = _Pending()
        self._kick = asyncio.Event()
        self._urgent = asyncio.Event()
        self._last_prune = 0.0
        self._task: asyncio.Task[None] | None = None
        self._seal_task: asyncio.Task[None] | None = None
        self.last_commit_ok: float | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ RecordSink (loop thread)

    def emit(self, record: Record) -> None:
        self._pending.records.append((self.clock(), record))
        self.metrics.records[record.kind.value] += 1
        self._kick.set()

    def mark(self, device_id: str, metric: str, ts: float) -> None:
        key = (device_id, metric)
        if ts > self._pending.marks.get(key, float("-inf")):
            self._pending.marks[key] = ts

    # ------------------------------------------------------------------ other writes (loop thread)

    def count_message(self, n: int = 1) -> None:
        """``n`` more device messages are covered by the next commit (``messages_committed`` after it)."""
        if self.metrics.first_received_at is None:
            self.metrics.first_received_at = self.clock()
        self._pending.messages += n
        self._kick.set()

    def journal(self, points: list[Point]) -> None:
        """Keep ``points`` in the crash journal (they are held by open windows or swinging-door segments)."""
        self._pending.journal += points
        self._kick.set()

    def quarantine(self, entry: QuarantineEntry) -> None:
        self._pending.quarantine.append(entry)
        self.metrics.quarantined[entry.reason] += 1
        self._kick.set()

    def after_commit(self, ack: Callable[[], None], messages: int = 1) -> None:
        """Run ``ack`` once everything queued so far is durable (it acknowledges ``messages`` MQTT messages).

        A commit starts at once when ``ack_threshold`` messages are waiting for their acknowledgement.
        """
        pending = self._pending
        pending.acks.append(ack)
        pending.acked += messages
        self._kick.set()
        if pending.acked >= self.ack_threshold:
            self._urgent.set()

    @property
    def full(self) -> bool:
        """Whether the pending messages reached ``max_pending_messages`` (the reader should ``hold``)."""
        return self._pending.messages >= self.max_pending_messages

    def hold(self, resume: Callable[[], None]) -> None:
        """A reader stopped reading because the commit is ``full``: ``resume`` it once a commit takes the pending
        writes (a commit starts at once)."""
        self._held.append(resume)
        self.metrics.reads_held += 1
        self._kick.set()
        self._urgent.set()

    async def durable(self) -> None:
        """Wait until everything queued so far is committed (a CoAP request waits here before answering)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.waiters.append(fut)
        self._kick.set()
        self._urgent.set()
        await fut

    def batch_acked(self, seq: int) -> None:
        """The cloud broker acknowledged batch ``seq``: delete it in the next commit."""
        self._pending.acked_batches.append(seq)
        self._kick.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="committer")
        self._seal_task = asyncio.create_task(self._seal_timer(), name="seal-timer")

    async def stop(self) -> None:
        """Stop the background loop, then commit what is left with every loose record sealed."""
        await cancel_and_wait(self._task, self._seal_task)
        await self.commit(force_seal=True)

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._urgent.wait()
            self._kick.clear()
            self._urgent.clear()
            try:
                await self.commit()
            except StoreError as exc:  # disk full, I/O error: the writes were put back and are retried
                self.metrics.commit_errors += 1
                self.last_error = str(exc)
                log.error("commit failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(min(5.0, self.interval * 20))

    async def _seal_timer(self) -> None:
        """Kick a commit when the oldest loose record is due for sealing by age."""
        while True:
            deadline = self.outbox.next_seal_deadline()
            delay = 1.0 if deadline is None else max(0.01, deadline - self.clock())
            await asyncio.sleep(min(delay, 1.0))
            deadline = self.outbox.next_seal_deadline()
            if deadline is not None and deadline <= self.clock():
                self._kick.set()

    async def commit(self, *, force_seal: bool = False) -> CommitResult:
        pending, self._pending = self._pending, _Pending()
        held, self._held = self._held, []
        for resume in held:
            resume()
        now = self.clock()
        started = time.perf_counter()
        try:
            result = await self.thread.run(self._write, pending, now, set(self.in_flight), force_seal)
        except BaseException:
            # Nothing was committed: put the writes back in front of whatever arrived meanwhile.
            self._restore(pending)
            raise
        self.metrics.observe_commit(time.perf_counter() - started)
        if pending.messages:
            self.metrics.committed += pending.messages
            self.metrics.last_committed_at = self.clock()
        self.last_commit_ok = now
        self.last_error = None
        for kind, n in result.dropped.items():
            self.metrics.outbox_dropped[kind] += n
        for seq in pending.acked_batches:
            self.in_flight.discard(seq)
        for ack in pending.acks:
            ack()
        for fut in pending.waiters:
            if not fut.done():
                fut.set_result(None)
        if result.sealed:
            self.on_sealed()
        return result

    def _restore(self, pending: _Pending) -> None:
        current = self._pending
        current.journal[:0] = pending.journal
        current.records[:0] = pending.records
        for key, ts in pending.marks.items():
            current.marks[key] = max(ts, current.marks.get(key, ts))
        current.quarantine[:0] = pending.quarantine
        current.acks[:0] = pending.acks
        current.acked += pending.acked
        current.waiters[:0] = pending.waiters
        current.acked_batches[:0] = pending.acked_batches
        current.messages += pending.messages
        self._kick.set()

    # ------------------------------------------------------------------ store thread

    def _write(self, p: _Pending, now: float, in_flight: set[int], force_seal: bool) -> CommitResult:
        conn = self.conn
        dumps = cbor2.dumps
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.journal_store.append(now, p.journal)
            self.outbox.add(
                [(KIND_CODES[rec.kind], created, dumps(rec.to_wire())) for created, rec in p.records]
            )
            self.journal_store.set_marks(p.marks, now)
            self.quarantine_store.add(p.quarantine)
            deleted = self.outbox.delete_batches(p.acked_batches)
            sealed = self.outbox.seal_due(now, force=force_seal)
            dropped = self.outbox.enforce_cap(in_flight)
            if now - self._last_prune >= JOURNAL_PRUNE_EVERY:
                self.journal_store.prune(now - self.hold_horizon)
                self._last_prune = now
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            # The in-memory mirrors moved with the rolled-back statements: rebuild them from the tables.
            self.outbox.reload()
            self.journal_store.reload()
            raise
        return CommitResult(sealed, dropped, deleted)

    @property
    def running(self) -> bool:
        """False once the commit loop died of an unexpected error (the agent reports itself unhealthy)."""
        return self._task is not None and not self._task.done()

    def describe(self) -> dict[str, Any]:
        s = self.outbox.stats
        return {
            "outbox_records": s.total_records,
            "outbox_bytes": s.total_bytes,
            "outbox_batches": s.batches,
            "journal_rows": self.journal_store.rows,
            "quarantine_rows": self.quarantine_store.rows,
            "last_commit_ok": self.last_commit_ok,
            "last_error": self.last_error,
        }
