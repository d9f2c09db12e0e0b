"""Which uplink batches were already ingested: one sequence mark per gateway, read and written under a lock.

A gateway numbers its batches ``1, 2, 3, ...``; ``SeqMark`` remembers them as ``low`` (every seq at or below it
was ingested) plus ``seen``, the seqs above ``low`` that arrived early (out of order, or after a gap). A batch
whose seq is at or below ``low`` or in ``seen`` is a duplicate. ``seen`` is bounded: when it holds more than
``max_seen`` seqs, ``low`` jumps over the oldest gap, which is then taken as lost for good (the gateway's outbox
dropped those batches; a batch from that gap arriving later would count as a duplicate) and counted.

``lock_marks`` reads the marks of some gateways inside the caller's transaction and locks them (``SELECT ... FOR
UPDATE`` on PostgreSQL; on SQLite the caller's first statement was a write, so the transaction already holds the
database's write lock), so two ingest replicas that receive batches of the same gateway decide one after the
other. ``save_marks`` writes them back in the same transaction, after the points are stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.models import IngestMark
from cloud_core.models.base import utcnow
from cloud_core.upsert import insert_ignore

MAX_SEEN = 1000
"""Seqs above ``low`` a mark remembers at most: far beyond any reordering the uplink window allows."""


@dataclass
class SeqMark:
    low: int = 0
    seen: set[int] = field(default_factory=set)
    abandoned: int = 0
    """Seqs given up on since this mark was loaded (gaps ``low`` jumped over)."""

    def __contains__(self, seq: int) -> bool:
        return seq <= self.low or seq in self.seen

    def add(self, seq: int, max_seen: int = MAX_SEEN) -> bool:
        """Record ``seq``; False when it was already there (a duplicate)."""
        if seq in self:
            return False
        self.seen.add(seq)
        self._advance()
        while len(self.seen) > max_seen:
            oldest = min(self.seen)
            self.abandoned += oldest - self.low - 1
            self.low = oldest
            self.seen.discard(oldest)
            self._advance()
        return True

    def _advance(self) -> None:
        while self.low + 1 in self.seen:
            self.low += 1
            self.seen.discard(self.low)


async def lock_marks(session: AsyncSession, gateway_ids: Iterable[str]) -> dict[str, SeqMark]:
    """The marks of ``gateway_ids``, created when missing and locked until the transaction ends."""
    ids = sorted(set(gateway_ids))
    if not ids:
        return {}
    marks = await _read(session, ids)
    missing = [g for g in ids if g not in marks]
    if missing:
        rows = [{"gateway_id": g, "low": 0, "seen": []} for g in missing]
        await session.execute(insert_ignore(session, IngestMark, rows))
        marks.update(await _read(session, missing))
    return marks


async def _read(session: AsyncSession, ids: list[str]) -> dict[str, SeqMark]:
    query = select(IngestMark.gateway_id, IngestMark.low, IngestMark.seen).where(
        IngestMark.gateway_id.in_(ids)
    )
    if session.bind.dialect.name != "sqlite":
        query = query.order_by(IngestMark.gateway_id).with_for_update()
    rows = await session.execute(query)
    return {gateway: SeqMark(low, set(seen or ())) for gateway, low, seen in rows}


async def save_marks(session: AsyncSession, marks: dict[str, SeqMark]) -> None:
    """Write the marks back (one statement, executed for each mark)."""
    if not marks:
        return
    table = IngestMark.__table__
    await session.execute(
        update(table)
        .where(table.c.gateway_id == bindparam("gateway"))
        .values(low=bindparam("new_low"), seen=bindparam("new_seen"), updated_at=bindparam("now")),
        [
            {"gateway": g, "new_low": m.low, "new_seen": sorted(m.seen), "now": utcnow()}
            for g, m in sorted(marks.items())
        ],
    )
