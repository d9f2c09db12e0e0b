"""The embedded time-series store: one SQLite file, no external service (the default backend).

Layout (``docs/timeseries.md`` has the reasoning and the figures):

- ``series (id, device, metric)``: one row per stored series, ``metric`` being a metric or a window component
  (``temperature@max``);
- ``points (slice, series_id, ms, value)`` ``WITHOUT ROWID``, keyed by ``(slice, series_id, ms)`` where
  ``slice = ts // 10 s`` and ``ms = ts % 10 s``: within each 10-second slice a series' samples lie together, and
  a write of the newest seconds of thousands of series touches a few hundred pages rather than one page per
  series (about 27 bytes a sample). Reading one series is one index seek per slice;
- ``rollup_1m`` and ``rollup_1h`` ``(ts, series_id, count, sum, min, max, last_ts, last)``, keyed by time then
  series for the same reason: per series and per minute/hour, maintained incrementally in the same transaction
  as the points they summarise. Reading one series is one seek per minute or hour;
- ``latest (series_id, ts, value)``: each series' newest sample.

Writes run on one dedicated thread that groups whatever is waiting into one transaction (group commit), so the
event loop never blocks on the disk; reads run on a small pool of read-only connections (WAL lets them proceed
during writes). A sample is unique by ``(series, ts)``: writing one again keeps the larger value (the rule
VictoriaMetrics' deduplication applies), and the rollups of the minutes it touches are recomputed from the raw
points. Retention is per tier (raw, 1 min, 1 h) with hour-aligned horizons, enforced by a background task in
chunks of an hour (a day for the hourly tier); points older than the raw horizon are refused at write time and
counted, since no tier could take them consistently.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from cloud_core.settings import RetentionSettings
from cloud_core.tsdb.aggregate import (
    Samples,
    SeriesStats,
    Stats,
    answer_device,
    latest_of,
    plan,
    stats_by_bucket,
)
from cloud_core.tsdb.errors import StoreUnavailable, TimeSeriesError
from cloud_core.tsdb.model import HOUR_MS, MINUTE_MS, Aggregation, Answer, Latest, Point, Query
from fieldline.tasks import cancel_and_wait

log = logging.getLogger("fieldline.cloud.tsdb")

SCHEMA_VERSION = 1
SLICE_MS = 10_000
"""Width of the time slices that lead the points table's key."""
_ROLLUP_COLUMNS = (
    "ts INTEGER NOT NULL, series_id INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL, "
    "min REAL NOT NULL, max REAL NOT NULL, last_ts INTEGER NOT NULL, last REAL NOT NULL, "
    "PRIMARY KEY (ts, series_id)"
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, metric TEXT NOT NULL, UNIQUE (device, metric));
CREATE TABLE IF NOT EXISTS points (
    slice INTEGER NOT NULL, series_id INTEGER NOT NULL, ms INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (slice, series_id, ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m ({_ROLLUP_COLUMNS}) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h ({_ROLLUP_COLUMNS}) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (series_id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, value REAL NOT NULL);
"""
# Each transaction stages its samples in a temporary table keyed by (series, ts) (a sample sent twice in one
# transaction keeps the larger value), then moves them into the points and folds them into the rollups in SQL.
_INCOMING = (
    "CREATE TEMP TABLE IF NOT EXISTS incoming (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
    "value REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
)
_STAGE = (
    "INSERT INTO incoming (series_id, ts, value) VALUES (?, ?, ?) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = max(value, excluded.value)"
)
_MOVE = f"""
INSERT OR IGNORE INTO points (slice, series_id, ms, value)
SELECT ts / {SLICE_MS}, series_id, ts % {SLICE_MS}, value FROM incoming
"""
_MOVE_KEEP_LARGER = f"""
INSERT INTO points (slice, series_id, ms, value)
SELECT ts / {SLICE_MS}, series_id, ts % {SLICE_MS}, value FROM incoming WHERE true
ON CONFLICT (slice, series_id, ms) DO UPDATE SET value = max(value, excluded.value)
"""
_ADD_ROLLUP = """
INSERT INTO {table} (ts, series_id, count, sum, min, max, last_ts, last)
SELECT g.b, g.series_id, g.n, g.s, g.lo, g.hi, g.lt, i.value
FROM (SELECT series_id, ts - ts % {width} AS b, count(*) AS n, sum(value) AS s, min(value) AS lo,
             max(value) AS hi, max(ts) AS lt
      FROM incoming GROUP BY series_id, b) AS g
JOIN incoming AS i ON i.series_id = g.series_id AND i.ts = g.lt
WHERE true
ON CONFLICT (ts, series_id) DO UPDATE SET
    count = count + excluded.count, sum = sum + excluded.sum,
    min = min(min, excluded.min), max = max(max, excluded.max),
    last = CASE WHEN excluded.last_ts > last_ts THEN excluded.last ELSE last END,
    last_ts = max(last_ts, excluded.last_ts)
"""
_SET_ROLLUP = "INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SET_LATEST = """
INSERT INTO latest (series_id, ts, value)
SELECT i.series_id, i.ts, i.value
FROM (SELECT series_id, max(ts) AS lt FROM incoming GROUP BY series_id) AS g
JOIN incoming AS i ON i.series_id = g.series_id AND i.ts = g.lt
WHERE true
ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value
WHERE excluded.ts > ts OR (excluded.ts = ts AND excluded.value > value)
"""
# One seek per slice (minute, hour): CROSS JOIN keeps the generated times as the outer loop, so rows come in
# time order.
_SAMPLES = f"""
WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s WHERE n < :last)
SELECT p.slice * {SLICE_MS} + p.ms AS t, p.value FROM s CROSS JOIN points p ON p.slice = s.n AND p.series_id = :sid
WHERE t >= :start AND t < :end
"""
_ROLLUPS = """
WITH RECURSIVE m(t) AS (SELECT :start UNION ALL SELECT t + :width FROM m WHERE t + :width < :end)
SELECT r.ts, r.count, r.sum, r.min, r.max, r.last_ts, r.last
FROM m CROSS JOIN {table} r ON r.ts = m.t AND r.series_id = :sid
"""
_NEWEST_BEFORE = f"""
WITH RECURSIVE s(n) AS (SELECT :last UNION ALL SELECT n - 1 FROM s WHERE n > :first)
SELECT p.slice * {SLICE_MS} + p.ms AS t, p.value FROM s CROSS JOIN points p ON p.slice = s.n AND p.series_id = :sid
WHERE t > :since AND t <= :at ORDER BY t DESC LIMIT 1
"""
#: Tiers a query can read, coarsest first: ``every`` must be a multiple of the tier's width.
_TIERS = ((HOUR_MS, "rollup_1h"), (MINUTE_MS, "rollup_1m"))
#: Per table: the key column retention compares, its unit in ms, and how much one retention transaction removes.
_EXPIRY = {
    "points": ("slice", SLICE_MS, HOUR_MS),
    "rollup_1m": ("ts", 1, HOUR_MS),
    "rollup_1h": ("ts", 1, 24 * HOUR_MS),
}
_STOP = object()


class _Job:
    """A ``write`` (``points``) or a maintenance ``call`` waiting for the writer thread."""

    __slots__ = ("call", "future", "loop", "points")

    def __init__(
        self,
        points: Sequence[Point],
        call: Callable[[sqlite3.Connection], Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.points = points
        self.call = call
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _translate(exc: sqlite3.Error) -> TimeSeriesError:
    if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O error: may pass
        return StoreUnavailable("sqlite", str(exc))
    return TimeSeriesError("sqlite", str(exc))


def _merge_rollups(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Count, sum, min, max, last_ts and last of several rollup rows (each ``(count, sum, min, max, last_ts,
    last)``)."""
    n, total, lo, hi, last_ts, last = rows[0]
    for count, s, mn, mx, lt, lv in rows[1:]:
        n += count
        total += s
        lo = min(lo, mn)
        hi = max(hi, mx)
        if lt > last_ts:
            last_ts, last = lt, lv
    return [n, total, lo, hi, last_ts, last]


class SQLiteStore:
    """Telemetry in one SQLite file; an async context manager (``TimeSeriesStore``)."""

    backend = "sqlite"

    def __init__(
        self,
        path: Path,
        retention: RetentionSettings | None = None,
        *,
        transaction_points: int = 200_000,
        retention_interval: float = 600.0,
        readers: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention = retention or RetentionSettings()
        if not self.retention.raw <= self.retention.rollup_1m <= self.retention.rollup_1h:
            raise ValueError("retention must not shrink from raw to rollup_1m to rollup_1h")
        self.transaction_points = transaction_points
        self.retention_interval = retention_interval
        self.clock = clock
        self._readers = readers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ids: dict[str, dict[str, int]] = {}
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self.counters = dict.fromkeys(
            (
                "points_written",
                "points_too_old",
                "points_duplicate",
                "transactions",
                "write_errors",
                "rows_expired",
                "retention_errors",
                "series",
            ),
            0,
        )

    # ----------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> SQLiteStore:
        try:
            conn = await asyncio.to_thread(self._open)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="fieldline-tsdb-writer", daemon=True
        )
        self._thread.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="fieldline-tsdb-read")
        self._retention_task = asyncio.create_task(self._retention_loop(), name="tsdb-retention")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._retention_task)
        if self._thread is not None:
            self._queue.put(_STOP)  # after every write already queued: they are committed first
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            conn.close()
            raise TimeSeriesError("sqlite", f"{self.path}: schema version {version} is not {SCHEMA_VERSION}")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute(_INCOMING)
        for sid, device, metric in conn.execute("SELECT id, device, metric FROM series"):
            self._ids.setdefault(device, {})[metric] = sid
            self.counters["series"] += 1
        return conn

    async def ready(self) -> None:
        """Raises ``StoreUnavailable`` unless the writer thread runs and the file can be read."""
        if self._thread is None or not self._thread.is_alive():
            raise StoreUnavailable("sqlite", "the writer thread is not running")
        await self._read(lambda conn: conn.execute("SELECT count(*) FROM series").fetchone())

    def stats(self) -> dict[str, float]:
        """Counters for ``/metrics`` (source ``tsdb``)."""
        return {**self.counters, "write_queue": self._queue.qsize()}

    # ----------------------------------------------------------------------------------------- writes

    async def write(self, points: Sequence[Point]) -> None:
        """Store ``points``; returns once they are committed (with any other writes that were waiting)."""
        if points:
            await self._submit(points, None)

    async def _submit(self, points: Sequence[Point], call: Callable[[sqlite3.Connection], Any] | None) -> Any:
        if self._thread is None:
            raise StoreUnavailable("sqlite", "the store is not open")
        job = _Job(points, call, asyncio.get_running_loop())
        self._queue.put(job)
        return await job.future

    def _run(self, conn: sqlite3.Connection) -> None:
        """The writer thread: one transaction per maintenance call, one for all the writes waiting together."""
        held: Any = None
        try:
            while True:
                job = held if held is not None else self._queue.get()
                held = None
                if job is _STOP:
                    return
                if job.call is not None:
                    self._finish([job], job.call, conn)
                    continue
                jobs, count = [job], len(job.points)
                while count < self.transaction_points:
                    try:
                        held = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if held is _STOP or held.call is not None:
                        break
                    jobs.append(held)
                    count += len(held.points)
                    held = None
                points = jobs[0].points if len(jobs) == 1 else [p for j in jobs for p in j.points]
                self._finish(jobs, partial(self._write, points=points), conn)
        finally:
            conn.close()

    def _finish(
        self, jobs: list[_Job], fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection
    ) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(conn)
        except sqlite3.Error as exc:
            error = _translate(exc)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this transaction, which raises it
            error = exc
        if error is not None and jobs[0].call is None:
            self.counters["write_errors"] += 1
        for job in jobs:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)

    def _write(self, conn: sqlite3.Connection, *, points: Sequence[Point]) -> None:
        horizon = self._horizons()["points"]
        ids = self._ids
        created: list[tuple[str, str]] = []
        rows: list[tuple[int, int, float]] = []
        append = rows.append
        too_old = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for device, ts, values in points:
                if ts < horizon:
                    too_old += len(values)
                    continue
                by_name = ids.get(device)
                if by_name is None:
                    by_name = ids[device] = {}
                for name, value in values.items():
                    sid = by_name.get(name)
                    if sid is None:
                        sid = conn.execute(
                            "INSERT INTO series (device, metric) VALUES (?, ?)", (device, name)
                        ).lastrowid
                        by_name[name] = sid
                        created.append((device, name))
                    append((sid, ts, value))
            conn.execute("DELETE FROM incoming")
            conn.executemany(_STAGE, rows)
            staged = conn.execute("SELECT count(*) FROM incoming").fetchone()[0]
            before = conn.total_changes
            conn.execute(_MOVE)
            inserted = conn.total_changes - before
            if inserted == staged:
                conn.execute(_ADD_ROLLUP.format(table="rollup_1m", width=MINUTE_MS))
                conn.execute(_ADD_ROLLUP.format(table="rollup_1h", width=HOUR_MS))
            else:
                self._merge_duplicates(conn)
            conn.execute(_SET_LATEST)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for device, name in created:
                ids[device].pop(name, None)
            raise
        self.counters["transactions"] += 1
        self.counters["points_written"] += inserted
        self.counters["points_duplicate"] += len(rows) - inserted
        self.counters["points_too_old"] += too_old
        self.counters["series"] += len(created)

    @classmethod
    def _merge_duplicates(cls, conn: sqlite3.Connection) -> None:
        """Some staged samples existed already: keep the larger value of each and recompute the rollups of every
        minute and hour they touch from the points (rare: ingest drops repeated batches before they get here)."""
        conn.execute(_MOVE_KEEP_LARGER)
        touched = conn.execute(f"SELECT DISTINCT series_id, ts - ts % {MINUTE_MS} FROM incoming").fetchall()
        for sid, minute in touched:
            s = stats_by_bucket(cls._samples(conn, sid, minute, minute + MINUTE_MS), MINUTE_MS)[minute]
            conn.execute(
                _SET_ROLLUP.format(table="rollup_1m"),
                (minute, sid, s.count, s.sum, s.min, s.max, s.last_ts, s.last),
            )
        for sid, hour in {(sid, m - m % HOUR_MS) for sid, m in touched}:
            args = {"sid": sid, "start": hour, "end": hour + HOUR_MS, "width": MINUTE_MS}
            found = conn.execute(_ROLLUPS.format(table="rollup_1m"), args).fetchall()
            conn.execute(
                _SET_ROLLUP.format(table="rollup_1h"), (hour, sid, *_merge_rollups([r[1:] for r in found]))
            )

    # ----------------------------------------------------------------------------------------- retention

    def _horizons(self) -> dict[str, int]:
        """Per table, the hour-aligned time before which rows are expired (epoch ms)."""
        now = int(self.clock() * 1000)
        out = {}
        for table, keep in zip(
            _EXPIRY, (self.retention.raw, self.retention.rollup_1m, self.retention.rollup_1h), strict=True
        ):
            horizon = now - int(keep * 1000)
            out[table] = horizon - horizon % HOUR_MS
        return out

    async def enforce_retention(self) -> dict[str, int]:
        """Delete what every tier no longer keeps, an hour (a day for the hourly tier) per transaction so that
        writes interleave; returns the rows deleted per table."""
        horizons = self._horizons()
        deleted = dict.fromkeys(_EXPIRY, 0)
        for table, (column, unit, step) in _EXPIRY.items():
            limit = horizons[table] // unit
            oldest = await self._submit(
                (), lambda conn, t=table, c=column: conn.execute(f"SELECT min({c}) FROM {t}").fetchone()[0]
            )
            while oldest is not None and oldest < limit:
                upto = min(oldest + step // unit, limit)
                deleted[table] += await self._submit(
                    (), partial(self._expire, table=table, column=column, upto=upto)
                )
                oldest = upto
        self.counters["rows_expired"] += sum(deleted.values())
        return deleted

    @staticmethod
    def _expire(conn: sqlite3.Connection, *, table: str, column: str, upto: int) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (upto,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return count

    async def _retention_loop(self) -> None:
        while True:
            try:
                deleted = await self.enforce_retention()
                if any(deleted.values()):
                    log.info("time-series retention", extra={"deleted": deleted})
            except TimeSeriesError as exc:
                self.counters["retention_errors"] += 1
                log.warning("time-series retention failed: %s", exc)
            await asyncio.sleep(self.retention_interval)

    # ----------------------------------------------------------------------------------------- reads

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._lock:
                self._reader_connections.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._pool is None:
            raise StoreUnavailable("sqlite", "the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(self._reader()))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    @staticmethod
    def _series_of(conn: sqlite3.Connection, devices: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {d: {} for d in devices}
        for i in range(0, len(devices), 500):
            chunk = devices[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for device, metric, sid in conn.execute(
                f"SELECT device, metric, id FROM series WHERE device IN ({marks})", chunk
            ):
                out[device][metric] = sid
        return out

    @staticmethod
    def _samples(conn: sqlite3.Connection, sid: int, start: int, end: int) -> Samples:
        args = {
            "sid": sid,
            "first": start // SLICE_MS,
            "last": (end - 1) // SLICE_MS,
            "start": start,
            "end": end,
        }
        rows = conn.execute(_SAMPLES, args).fetchall()
        if not rows:
            return Samples([], [])
        ts, values = zip(*rows, strict=True)
        return Samples(list(ts), list(values))

    @classmethod
    def _stats(cls, conn: sqlite3.Connection, sid: int, query: Query) -> SeriesStats:
        """Per-bucket stats of one series from the coarsest tier whose width divides ``every`` (queries are
        aligned to ``every``, so each rollup row lies inside one bucket), else from the points."""
        for width, table in _TIERS:
            if query.every % width:
                continue
            args = {"sid": sid, "start": query.start, "end": query.end, "width": width}
            rows = conn.execute(_ROLLUPS.format(table=table), args).fetchall()
            if query.every == width:
                return {r[0]: Stats(*r[1:]) for r in rows}
            grouped: dict[int, list[Any]] = {}
            for r in rows:
                grouped.setdefault(r[0] - r[0] % query.every, []).append(r[1:])
            return {b: Stats(*_merge_rollups(parts)) for b, parts in grouped.items()}
        return stats_by_bucket(cls._samples(conn, sid, query.start, query.end), query.every)

    async def query(self, query: Query) -> Answer:
        """Aggregate as ``query`` asks (``cloud_core.tsdb.aggregate`` has the rules)."""

        def run(conn: sqlite3.Connection) -> Answer:
            series: dict[str, Any] = {}
            for device, names in self._series_of(conn, query.devices).items():
                wanted = plan(names, query.metrics, query.agg)
                needed = {n for ns in wanted.values() for n in ns}
                if query.agg is Aggregation.P95:
                    samples = {n: self._samples(conn, names[n], query.start, query.end) for n in needed}
                    series[device] = answer_device(query, wanted, samples=samples)
                else:
                    stats = {n: self._stats(conn, names[n], query) for n in needed}
                    series[device] = answer_device(query, wanted, stats=stats)
            return Answer(query, series)

        return await self._read(run)

    @staticmethod
    def _newest(conn: sqlite3.Connection, sid: int, at: int, within: int) -> Latest | None:
        row = conn.execute("SELECT ts, value FROM latest WHERE series_id = ?", (sid,)).fetchone()
        if row is None:
            return None
        if row[0] <= at:
            return Latest(*row) if row[0] > at - within else None
        # the series has samples after ``at``: look back through the slices (rare: ``at`` is now in the API)
        args = {
            "sid": sid,
            "first": (at - within) // SLICE_MS,
            "last": at // SLICE_MS,
            "since": at - within,
            "at": at,
        }
        row = conn.execute(_NEWEST_BEFORE, args).fetchone()
        return None if row is None else Latest(*row)

    async def latest(
        self, devices: Sequence[str], metrics: Sequence[str] | None, *, at: int, within: int
    ) -> dict[str, dict[str, Latest]]:
        """The newest value of each metric of each device in ``(at - within, at]`` (epoch ms)."""

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, Latest]]:
            out = {}
            for device, names in self._series_of(conn, devices).items():
                wanted = plan(names, metrics, Aggregation.LAST)
                newest = {}
                for name in {n for ns in wanted.values() for n in ns}:
                    found = self._newest(conn, names[name], at, within)
                    if found is not None:
                        newest[name] = found
                out[device] = latest_of(wanted, newest)
            return out

        return await self._read(run)
