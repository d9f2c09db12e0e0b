"""The quarantine: messages that failed decoding or validation, kept with their reason and (truncated) bytes.

Bounded by row count: the oldest rows are deleted beyond ``max_rows``; payloads are truncated to
``max_payload`` bytes (``size`` keeps the original length).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    received: float
    source: str  # "mqtt", "coap", "coap-observe"
    topic: str | None
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


class Quarantine:
    """Quarantine operations on a connection owned by the store thread."""

    def __init__(self, conn: sqlite3.Connection, *, max_rows: int, max_payload: int) -> None:
        self.conn = conn
        self.max_rows = max_rows
        self.max_payload = max_payload
        self.rows = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]

    def add(self, entries: list[QuarantineEntry]) -> None:
        if not entries:
            return
        self.conn.executemany(
            "INSERT INTO quarantine (received, source, topic, device, reason, detail, size, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.received,
                    e.source,
                    e.topic,
                    e.device_id,
                    e.reason,
                    e.detail[:1000],
                    len(e.payload),
                    e.payload[: self.max_payload],
                )
                for e in entries
            ],
        )
        self.rows += len(entries)
        if self.rows > self.max_rows:
            self.conn.execute(
                "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?", (self.max_rows,)
            )
            self.rows = self.max_rows

    def recent(self, limit: int = 100) -> list[QuarantineEntry]:
        return [
            QuarantineEntry(r, s, t, d, reason, detail, payload)
            for r, s, t, d, reason, detail, payload in self.conn.execute(
                "SELECT received, source, topic, device, reason, detail, payload FROM quarantine "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]
