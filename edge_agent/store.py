"""The agent's SQLite database: one file in WAL mode holding the outbox, the crash journal and the quarantine.

All writes go through one connection on one dedicated thread (``StoreThread``), so the event loop never blocks on
the SD card and a group commit covers journal rows, outbox records and acknowledgements in one transaction.

Sync setting (``storage.sync``): ``full`` (default) fsyncs the WAL at every commit, so a committed transaction
survives power loss; ``normal`` fsyncs only at WAL checkpoints: it survives a crash or ``kill -9`` of the agent but
may lose the last commits on power loss, in exchange for far fewer writes to the card.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge_agent.errors import StoreError

T = TypeVar("T")

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, created REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, id);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, created REAL NOT NULL, count INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, received REAL NOT NULL, count INTEGER NOT NULL, points BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS marks (
    device TEXT NOT NULL, metric TEXT NOT NULL, ts REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (device, metric)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, received REAL NOT NULL, source TEXT NOT NULL, topic TEXT, device TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
"""


def connect(
    path: Path, sync: Literal["full", "normal"] = "full", *, readonly: bool = False
) -> sqlite3.Connection:
    """Open the database with the agent's pragmas; creates the schema unless ``readonly``."""
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            elif version[0] != SCHEMA_VERSION:
                raise StoreError(f"schema version {version[0]} is not {SCHEMA_VERSION}", path=str(path))
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the agent database: {exc}", path=str(path)) from exc
    return conn


def meta_get(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else row[0]


def meta_set(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
    )


class StoreThread:
    """Runs every database call on one thread, in order; awaitable from the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldline-store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(str(exc), path=str(self.path)) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True)
