"""The crash journal: cleaned points held by open windows and swinging-door segments, and the marks.

A point that feeds a window or a swinging-door compressor is represented in no output until the window closes or
the compressor archives. Until then it lives here, written in the same transaction that acknowledges its MQTT
message, so a crash (``kill -9``, power loss) loses nothing the broker handed over. At start-up the agent replays
the journal into its downsampler; the marks (per device and metric, "everything up to this timestamp is already in
the outbox") make the replay skip what was emitted before the crash. Rows older than the hold horizon (the longest
window plus lateness, or swinging-door interval) are pruned.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterator

import cbor2

from fieldline.wire import Point


class Journal:
    """Journal operations on a connection owned by the store thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.reload()

    def reload(self) -> None:
        """Rebuild the in-memory bookkeeping (at start-up and after a rolled-back transaction)."""
        conn = self.conn
        # (received_at, highest id written in that commit), oldest first: pruning by id needs no index.
        self._commits: deque[tuple[float, int]] = deque()
        row = conn.execute("SELECT max(id), max(received) FROM journal").fetchone()
        if row[0] is not None:
            self._commits.append((row[1], row[0]))
        self.rows = conn.execute("SELECT count(*) FROM journal").fetchone()[0]

    def append(self, rows: list[tuple[float, str, float, bytes]]) -> None:
        """Insert ``(received_at, device_id, ts, cbor(metrics))`` rows."""
        if not rows:
            return
        cur = self.conn.executemany(
            "INSERT INTO journal (received, device, ts, metrics) VALUES (?, ?, ?, ?)", rows
        )
        del cur
        last_id = self.conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        self._commits.append((rows[-1][0], last_id))
        self.rows += len(rows)

    def set_marks(self, marks: dict[tuple[str, str], float], now: float) -> None:
        if marks:
            self.conn.executemany(
                "INSERT INTO marks VALUES (?, ?, ?, ?) ON CONFLICT(device, metric) "
                "DO UPDATE SET ts=max(ts, excluded.ts), updated=excluded.updated",
                [(d, m, ts, now) for (d, m), ts in marks.items()],
            )

    def prune(self, older_than: float) -> int:
        """Delete rows received before ``older_than`` and marks not updated since; returns rows deleted."""
        last_id = None
        while self._commits and self._commits[0][0] < older_than:
            last_id = self._commits.popleft()[1]
        if last_id is None:
            return 0
        n = self.conn.execute("DELETE FROM journal WHERE id<=?", (last_id,)).rowcount
        self.conn.execute("DELETE FROM marks WHERE updated<?", (older_than,))
        self.rows -= n
        return n

    def marks(self) -> dict[tuple[str, str], float]:
        return {(d, m): ts for d, m, ts in self.conn.execute("SELECT device, metric, ts FROM marks")}

    def replay(self) -> Iterator[Point]:
        """Every journaled point, oldest first."""
        for device, ts, metrics in self.conn.execute("SELECT device, ts, metrics FROM journal ORDER BY id"):
            yield Point(device, ts, cbor2.loads(metrics))
