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
from collections.abc import Iterator

import orjson

from fieldline.wire import Point


class Journal:
    """Journal operations on a connection owned by the store thread.

    One row per commit holds every point that commit journaled (a JSON array of ``[device, ts, metrics]``):
    one INSERT per commit instead of one per point keeps the card's write load and the store thread's time
    independent of the message rate. JSON through orjson, not CBOR: it encodes several times faster, holds the
    GIL for less time, and round-trips every value a point can carry (finite floats exactly, int64, bool,
    str, null).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.reload()

    def reload(self) -> None:
        """Rebuild the in-memory count (at start-up and after a rolled-back transaction)."""
        self.rows = self.conn.execute("SELECT coalesce(sum(count), 0) FROM journal").fetchone()[0]

    def append(self, received_at: float, points: list[Point]) -> None:
        """Journal the points of one commit."""
        if not points:
            return
        blob = orjson.dumps([(p.device_id, p.ts, p.metrics) for p in points])
        self.conn.execute(
            "INSERT INTO journal (received, count, points) VALUES (?, ?, ?)", (received_at, len(points), blob)
        )
        self.rows += len(points)

    def set_marks(self, marks: dict[tuple[str, str], float], now: float) -> None:
        if marks:
            self.conn.executemany(
                "INSERT INTO marks VALUES (?, ?, ?, ?) ON CONFLICT(device, metric) "
                "DO UPDATE SET ts=max(ts, excluded.ts), updated=excluded.updated",
                [(d, m, ts, now) for (d, m), ts in marks.items()],
            )

    def prune(self, older_than: float) -> int:
        """Delete rows committed before ``older_than`` and marks not updated since; returns points deleted."""
        n = self.conn.execute(
            "DELETE FROM journal WHERE received<? RETURNING count", (older_than,)
        ).fetchall()
        self.conn.execute("DELETE FROM marks WHERE updated<?", (older_than,))
        deleted = sum(row[0] for row in n)
        self.rows -= deleted
        return deleted

    def marks(self) -> dict[tuple[str, str], float]:
        return {(d, m): ts for d, m, ts in self.conn.execute("SELECT device, metric, ts FROM marks")}

    def replay(self) -> Iterator[Point]:
        """Every journaled point, oldest first."""
        for (blob,) in self.conn.execute("SELECT points FROM journal ORDER BY id"):
            for device, ts, metrics in orjson.loads(blob):
                yield Point(device, ts, metrics)
