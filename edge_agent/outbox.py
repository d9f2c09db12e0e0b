"""The outbox: records waiting to go up, sealed into numbered batches, bounded by bytes with an overflow policy.

Records arrive loose (one row each, CBOR-encoded) in the same transaction as the data they came from. A kind's
loose records are sealed into a batch (zlib-compressed CBOR, see ``fieldline.wire``) once they reach
``batch_max_bytes`` or the oldest is ``batch_max_age`` old; sealing assigns the next sequence number, which the
batch keeps through every retransmission. A batch is deleted only after the cloud broker's PUBACK.

Overflow: when loose plus sealed bytes exceed ``max_bytes``, the oldest data is dropped kind by kind in
``DROP_ORDER`` (raw points first, then quality flags, device states, events and last aggregates), never a batch
that is in flight. Every dropped record is counted per kind, in metrics and persistently in the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_agent.store import meta_get, meta_set
from fieldline.wire import RecordKind, encode_body_items

KIND_CODES: dict[RecordKind, int] = {
    RecordKind.RAW: 0,
    RecordKind.FLAG: 1,
    RecordKind.STATE: 2,
    RecordKind.AGG: 3,
    RecordKind.EVENT: 4,
}
CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}
DROP_ORDER = [
    KIND_CODES[kind]
    for kind in (RecordKind.RAW, RecordKind.FLAG, RecordKind.STATE, RecordKind.EVENT, RecordKind.AGG)
]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    seq: int
    kind: RecordKind
    created: float
    count: int
    body: bytes


@dataclass(slots=True)
class OutboxStats:
    """Mirror of the outbox's size, kept in memory and updated by every transaction."""

    loose_records: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KIND_CODES.values(), 0))
    loose_bytes: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KIND_CODES.values(), 0))
    oldest_loose: dict[int, float | None] = field(default_factory=lambda: dict.fromkeys(KIND_CODES.values()))
    batches: int = 0
    batch_records: int = 0
    batch_bytes: int = 0
    dropped_records: dict[str, int] = field(default_factory=dict)
    dropped_bytes: dict[str, int] = field(default_factory=dict)
    next_seq: int = 1

    @property
    def total_bytes(self) -> int:
        return sum(self.loose_bytes.values()) + self.batch_bytes

    @property
    def total_records(self) -> int:
        return sum(self.loose_records.values()) + self.batch_records


class Outbox:
    """Outbox operations on a connection owned by the store thread (every method runs on that thread)."""

    def __init__(
        self, conn: sqlite3.Connection, *, max_bytes: int, batch_max_bytes: int, batch_max_age: float
    ):
        self.conn = conn
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_age = batch_max_age
        self.stats = OutboxStats()
        self.reload()

    def reload(self) -> None:
        """Rebuild the in-memory mirror from the tables (at start-up and after a rolled-back transaction)."""
        self.stats = s = OutboxStats()
        for code, n, size, oldest in self.conn.execute(
            "SELECT kind, count(*), coalesce(sum(length(data)), 0), min(created) FROM records GROUP BY kind"
        ):
            s.loose_records[code], s.loose_bytes[code], s.oldest_loose[code] = n, size, oldest
        s.batches, s.batch_records, s.batch_bytes = self.conn.execute(
            "SELECT count(*), coalesce(sum(count), 0), coalesce(sum(raw_bytes), 0) FROM batches"
        ).fetchone()
        last_seq = self.conn.execute("SELECT max(seq) FROM batches").fetchone()[0] or 0
        s.next_seq = max(int(meta_get(self.conn, "next_seq", 1)), last_seq + 1)
        for kind in KIND_CODES:
            s.dropped_records[kind.value] = int(meta_get(self.conn, f"dropped_records.{kind.value}", 0))
            s.dropped_bytes[kind.value] = int(meta_get(self.conn, f"dropped_bytes.{kind.value}", 0))

    # ------------------------------------------------------------------ writing (inside a transaction)

    def add(self, rows: list[tuple[int, float, bytes]]) -> None:
        """Insert loose records ``(kind_code, created, cbor)``."""
        if not rows:
            return
        self.conn.executemany("INSERT INTO records (kind, created, data) VALUES (?, ?, ?)", rows)
        s = self.stats
        for code, created, data in rows:
            s.loose_records[code] += 1
            s.loose_bytes[code] += len(data)
            if s.oldest_loose[code] is None:
                s.oldest_loose[code] = created

    def seal_due(self, now: float, *, force: bool = False) -> int:
        """Seal loose records into batches where size or age says so (all of them when ``force``)."""
        sealed = 0
        s = self.stats
        for code in KIND_CODES.values():
            while s.loose_records[code] and (
                force
                or s.loose_bytes[code] >= self.batch_max_bytes
                or now - (s.oldest_loose[code] or now) >= self.batch_max_age
            ):
                self._seal_one(code, now)
                sealed += 1
        return sealed

    def _seal_one(self, code: int, now: float) -> None:
        items: list[bytes] = []
        size = 0
        last_id = 0
        cursor = self.conn.execute("SELECT id, data FROM records WHERE kind=? ORDER BY id", (code,))
        for rid, data in cursor:
            if items and size + len(data) > self.batch_max_bytes:
                break
            items.append(data)
            size += len(data)
            last_id = rid
        cursor.close()
        s = self.stats
        seq = s.next_seq
        self.conn.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
            (seq, code, now, len(items), size, encode_body_items(items)),
        )
        self.conn.execute("DELETE FROM records WHERE kind=? AND id<=?", (code, last_id))
        s.next_seq = seq + 1
        meta_set(self.conn, "next_seq", s.next_seq)
        s.batches += 1
        s.batch_records += len(items)
        s.batch_bytes += size
        s.loose_records[code] -= len(items)
        s.loose_bytes[code] -= size
        s.oldest_loose[code] = (
            self.conn.execute("SELECT min(created) FROM records WHERE kind=?", (code,)).fetchone()[0]
            if s.loose_records[code]
            else None
        )

    def delete_batches(self, seqs: Iterable[int]) -> int:
        """Remove batches acknowledged by the cloud broker; returns how many existed."""
        removed = 0
        s = self.stats
        for seq in seqs:
            row = self.conn.execute(
                "DELETE FROM batches WHERE seq=? RETURNING count, raw_bytes", (seq,)
            ).fetchone()
            if row is not None:
                removed += 1
                s.batches -= 1
                s.batch_records -= row[0]
                s.batch_bytes -= row[1]
        return removed

    def enforce_cap(self, in_flight: set[int]) -> dict[str, int]:
        """Drop the oldest data in ``DROP_ORDER`` until the outbox fits ``max_bytes``; returns records dropped per kind."""
        dropped: dict[str, int] = {}
        s = self.stats
        for code in DROP_ORDER:
            if s.total_bytes <= self.max_bytes:
                break
            kind = CODE_KINDS[code].value
            # Sealed batches of this kind first (they are the oldest), then loose records.
            for seq, count, size in self.conn.execute(
                "SELECT seq, count, raw_bytes FROM batches WHERE kind=? ORDER BY seq", (code,)
            ).fetchall():
                if s.total_bytes <= self.max_bytes:
                    break
                if seq in in_flight:
                    continue
                self.conn.execute("DELETE FROM batches WHERE seq=?", (seq,))
                s.batches -= 1
                s.batch_records -= count
                s.batch_bytes -= size
                self._count_drop(kind, count, size, dropped)
            while s.total_bytes > self.max_bytes and s.loose_records[code]:
                excess = s.total_bytes - self.max_bytes
                rows = self.conn.execute(
                    "SELECT id, length(data) FROM records WHERE kind=? ORDER BY id LIMIT 512", (code,)
                ).fetchall()
                freed, n, last_id = 0, 0, 0
                for rid, size in rows:
                    freed += size
                    n += 1
                    last_id = rid
                    if freed >= excess:
                        break
                self.conn.execute("DELETE FROM records WHERE kind=? AND id<=?", (code, last_id))
                s.loose_records[code] -= n
                s.loose_bytes[code] -= freed
                s.oldest_loose[code] = self.conn.execute(
                    "SELECT min(created) FROM records WHERE kind=?", (code,)
                ).fetchone()[0]
                self._count_drop(kind, n, freed, dropped)
        return dropped

    def _count_drop(self, kind: str, records: int, size: int, dropped: dict[str, int]) -> None:
        s = self.stats
        s.dropped_records[kind] += records
        s.dropped_bytes[kind] += size
        dropped[kind] = dropped.get(kind, 0) + records
        meta_set(self.conn, f"dropped_records.{kind}", s.dropped_records[kind])
        meta_set(self.conn, f"dropped_bytes.{kind}", s.dropped_bytes[kind])

    # ------------------------------------------------------------------ reading

    def fetch(self, after_seq: int, limit: int) -> list[StoredBatch]:
        """The next ``limit`` sealed batches with ``seq > after_seq``, in order."""
        return [
            StoredBatch(seq, CODE_KINDS[code], created, count, body)
            for seq, code, created, count, body in self.conn.execute(
                "SELECT seq, kind, created, count, body FROM batches WHERE seq>? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    def next_seal_deadline(self) -> float | None:
        """When the oldest loose record becomes due for sealing by age."""
        oldest = [t for t in self.stats.oldest_loose.values() if t is not None]
        return min(oldest) + self.batch_max_age if oldest else None
