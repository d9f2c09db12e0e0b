"""``SQLiteStore``: the engine's durable ``InstanceStore`` on one SQLite file (WAL), as the edge agent uses it.

Writes (``save``, ``put_definition``, ``purge``) are queued to one writer thread that owns the write connection.
It takes everything queued, up to ``max_batch`` writes, applies it in ONE transaction and only then resolves the
callers' futures (group commit): ``save`` returns once its transaction has committed. Rows are encoded on the
caller's side when ``save`` is called, so the engine may go on mutating its instances. A caller cancelled while
waiting does not withdraw its write. Reads run on a second thread with their own connection; WAL lets them
proceed while the writer commits, and each query sees every transaction committed before it started.

``sync="full"`` fsyncs the WAL at every commit (a returned ``save`` survives power loss); ``"normal"`` fsyncs at
checkpoints only (it survives a crash or ``kill -9`` of the process, but power loss may take the last commits).

Schema (version 1, kept in ``PRAGMA user_version``)::

    instances(id TEXT PRIMARY KEY, workflow_id, version, status, parent_id, created_at REAL, updated_at REAL,
              record BLOB)              -- record = orjson(Instance.to_record()); the other columns are for queries
        indexes: (status), (workflow_id, created_at), (parent_id)
    history(seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id, ts REAL, kind, state, detail BLOB)
        index: (instance_id, seq)       -- detail = orjson(HistoryEntry.detail)
    definitions(workflow_id, version, source TEXT, deployed_at REAL, PRIMARY KEY (workflow_id, version))
    states(namespace, key, value BLOB, PRIMARY KEY (namespace, key))   -- value = orjson(value)

Errors::

    WorkflowError (workflows.errors)
    └── StoreError      the database cannot be opened or a transaction failed (retryable; ``path``)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from workflows.errors import WorkflowError
from workflows.instance import HistoryEntry, Instance, Status
from workflows.store import StoredDefinition

T = TypeVar("T")

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE instances (
    id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, version TEXT NOT NULL, status TEXT NOT NULL, parent_id TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, record BLOB NOT NULL);
CREATE INDEX instances_status ON instances (status);
CREATE INDEX instances_workflow ON instances (workflow_id, created_at);
CREATE INDEX instances_parent ON instances (parent_id);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    state TEXT, detail BLOB NOT NULL);
CREATE INDEX history_instance ON history (instance_id, seq);
CREATE TABLE definitions (
    workflow_id TEXT NOT NULL, version TEXT NOT NULL, source TEXT NOT NULL, deployed_at REAL NOT NULL,
    PRIMARY KEY (workflow_id, version));
CREATE TABLE states (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
"""

UPSERT_INSTANCE = """
INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET
    workflow_id = excluded.workflow_id, version = excluded.version, status = excluded.status,
    parent_id = excluded.parent_id, created_at = excluded.created_at, updated_at = excluded.updated_at,
    record = excluded.record
"""
INSERT_HISTORY = "INSERT INTO history (instance_id, ts, kind, state, detail) VALUES (?, ?, ?, ?, ?)"
UPSERT_STATE = (
    "INSERT INTO states VALUES (?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"
)
DELETE_STATE = "DELETE FROM states WHERE namespace = ? AND key = ?"
UPSERT_DEFINITION = """
INSERT INTO definitions VALUES (?, ?, ?, ?) ON CONFLICT (workflow_id, version) DO UPDATE SET
    source = excluded.source, deployed_at = excluded.deployed_at
"""

ACTIVE = tuple(s.value for s in Status if not s.terminal)
TERMINAL = tuple(s.value for s in Status if s.terminal)


class StoreError(WorkflowError):
    """Raised when the workflow database cannot be opened or a transaction fails; ``path`` names the file."""

    retryable = True

    def __init__(self, message: str, *, path: str, retryable: bool = True) -> None:
        self.path = path
        self.retryable = retryable
        super().__init__(f"{path}: {message}")


@dataclass(slots=True)
class _Write:
    """One queued write, applied inside the writer's current transaction; ``future`` receives its result."""

    apply: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    is_save: bool


class SQLiteStore:
    """The durable ``InstanceStore``: group-committed writes on a writer thread, reads on a reader thread.

    The store belongs to the event loop that opened it. ``commits`` counts committed transactions, ``saves``
    the ``save`` calls they made durable.
    """

    def __init__(
        self, path: str | Path, *, sync: Literal["full", "normal"] = "full", max_batch: int = 512
    ) -> None:
        self.path = Path(path)
        self.sync = sync
        self.max_batch = max_batch
        self.commits = 0
        self.saves = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Write | None] | None = None
        self._writer: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the directory, file and schema if needed; start the writer and reader threads."""
        write_conn = await asyncio.to_thread(self._connect, writer=True)
        try:
            self._read_conn = await asyncio.to_thread(self._connect, writer=False)
        except StoreError:
            write_conn.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._queue = queue.SimpleQueue()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldline-wf-read")
        self._writer = threading.Thread(
            target=self._run,
            args=(write_conn, self._queue, self._loop),
            name="fieldline-wf-write",
            daemon=True,
        )
        self._writer.start()

    async def close(self) -> None:
        """Commit every write queued so far, then stop both threads and close the connections."""
        if self._queue is None or self._writer is None or self._reader is None or self._read_conn is None:
            return
        pending, self._queue = self._queue, None
        pending.put(None)
        await asyncio.to_thread(self._writer.join)
        await asyncio.get_running_loop().run_in_executor(self._reader, self._read_conn.close)
        self._reader.shutdown()
        self._writer = self._reader = self._read_conn = None

    async def save(
        self,
        instances: Sequence[Instance],
        history: Sequence[HistoryEntry],
        states: Sequence[tuple[str, str, Any]] = (),
    ) -> None:
        """Upsert instances, append history and set states in one transaction; returns once committed."""
        instance_rows = [
            (
                i.id,
                i.workflow_id,
                i.version,
                i.status.value,
                i.parent_id,
                float(i.created_at),
                float(i.updated_at),
                orjson.dumps(i.to_record()),
            )
            for i in instances
        ]
        history_rows = [
            (e.instance_id, float(e.ts), e.kind, e.state, orjson.dumps(e.detail)) for e in history
        ]
        state_rows = [(ns, key, None if value is None else orjson.dumps(value)) for ns, key, value in states]
        await self._submit(partial(_apply_save, instance_rows, history_rows, state_rows), is_save=True)

    async def put_definition(self, definition: StoredDefinition) -> None:
        row = (definition.workflow_id, definition.version, definition.source, float(definition.deployed_at))
        await self._submit(partial(_apply_definition, row))

    async def purge(self, before: float) -> int:
        """Delete terminal instances last updated before ``before`` and their history; returns how many."""
        return await self._submit(partial(_apply_purge, float(before)))

    async def load_active(self) -> list[Instance]:
        """Every instance whose status is not terminal."""
        marks = ", ".join("?" * len(ACTIVE))
        return await self._read(_instances, f"SELECT record FROM instances WHERE status IN ({marks})", ACTIVE)

    async def get(self, instance_id: str) -> Instance | None:
        found = await self._read(_instances, "SELECT record FROM instances WHERE id = ?", (instance_id,))
        return found[0] if found else None

    async def list(
        self,
        *,
        workflow_id: str | None = None,
        status: Status | None = None,
        parent_id: str | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        """Instances, newest first."""
        filters = {
            "workflow_id": workflow_id,
            "status": None if status is None else status.value,
            "parent_id": parent_id,
        }
        where = [f"{column} = ?" for column, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        sql = "SELECT record FROM instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return await self._read(_instances, sql, (*params, limit))

    async def history(self, instance_id: str) -> list[HistoryEntry]:
        """An instance's history, oldest first."""
        rows = await self._read(
            _fetch,
            "SELECT instance_id, ts, kind, state, detail FROM history WHERE instance_id = ? ORDER BY seq",
            (instance_id,),
        )
        return [
            HistoryEntry(iid, ts, kind, state, orjson.loads(detail)) for iid, ts, kind, state, detail in rows
        ]

    async def definitions(self) -> list[StoredDefinition]:
        rows = await self._read(
            _fetch,
            "SELECT workflow_id, version, source, deployed_at FROM definitions ORDER BY deployed_at, rowid",
            (),
        )
        return [StoredDefinition(*row) for row in rows]

    async def get_states(self, namespace: str) -> dict[str, Any]:
        """Every key-value state of a namespace (``rules``, ``schedules``, ``requests``)."""
        rows = await self._read(_fetch, "SELECT key, value FROM states WHERE namespace = ?", (namespace,))
        return {key: orjson.loads(value) for key, value in rows}

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        """Open a connection with the store's pragmas; the writer's creates or checks the schema."""
        try:
            if writer:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the workflow database: {exc}", path=str(self.path)) from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            if not writer:
                conn.execute("PRAGMA query_only = 1")
                return conn
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"schema version {version} is not {SCHEMA_VERSION}", path=str(self.path), retryable=False
                )
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open the workflow database: {exc}", path=str(self.path)) from exc
        except StoreError:
            conn.close()
            raise
        return conn

    async def _submit(self, apply: Callable[[sqlite3.Connection], T], *, is_save: bool = False) -> T:
        if self._queue is None or self._loop is None:
            raise RuntimeError("SQLiteStore is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Write(apply, future, is_save))
        return await future

    async def _read(
        self, fn: Callable[[sqlite3.Connection, str, Sequence[Any]], T], sql: str, params: Sequence[Any]
    ) -> T:
        if self._reader is None or self._read_conn is None:
            raise RuntimeError("SQLiteStore is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, fn, self._read_conn, sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}", path=str(self.path)) from exc

    def _run(
        self,
        conn: sqlite3.Connection,
        pending: queue.SimpleQueue[_Write | None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """The writer thread: one transaction per batch of queued writes, until ``close`` queues None."""
        stopping = False
        while not stopping:
            batch = [pending.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None:  # close() queues None last, after every write
                batch.pop()
                stopping = True
            if batch:
                self._commit(conn, [w for w in batch if w is not None], loop)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write], loop: asyncio.AbstractEventLoop) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [write.apply(conn) for write in batch]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            loop.call_soon_threadsafe(self._fail, batch, exc)
            return
        self.commits += 1
        self.saves += sum(write.is_save for write in batch)
        loop.call_soon_threadsafe(_resolve, batch, results)

    def _fail(self, batch: list[_Write], exc: sqlite3.Error) -> None:
        """On the loop: every write of a failed transaction gets its own StoreError, chained from ``exc``."""
        for write in batch:
            if not write.future.done():
                error = StoreError(f"transaction failed: {exc}", path=str(self.path))
                error.__cause__ = exc
                write.future.set_exception(error)


def _resolve(batch: list[_Write], results: list[Any]) -> None:
    for write, result in zip(batch, results, strict=True):
        if not write.future.done():  # a cancelled caller
            write.future.set_result(result)


def _apply_save(
    instance_rows: list[tuple[Any, ...]],
    history_rows: list[tuple[Any, ...]],
    state_rows: list[tuple[str, str, bytes | None]],
    conn: sqlite3.Connection,
) -> None:
    if instance_rows:
        conn.executemany(UPSERT_INSTANCE, instance_rows)
    if history_rows:
        conn.executemany(INSERT_HISTORY, history_rows)
    for namespace, key, value in state_rows:
        if value is None:
            conn.execute(DELETE_STATE, (namespace, key))
        else:
            conn.execute(UPSERT_STATE, (namespace, key, value))


def _apply_definition(row: tuple[str, str, str, float], conn: sqlite3.Connection) -> None:
    conn.execute(UPSERT_DEFINITION, row)


def _apply_purge(before: float, conn: sqlite3.Connection) -> int:
    doomed = f"FROM instances WHERE status IN ({', '.join('?' * len(TERMINAL))}) AND updated_at < ?"
    conn.execute(f"DELETE FROM history WHERE instance_id IN (SELECT id {doomed})", (*TERMINAL, before))
    return conn.execute(f"DELETE {doomed}", (*TERMINAL, before)).rowcount


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _instances(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Instance]:
    return [Instance.from_record(orjson.loads(record)) for (record,) in conn.execute(sql, params)]
