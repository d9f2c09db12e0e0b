"""Reads of one device by id for ``GET /api/v1/devices/{id}``, the registry's hot path, without the ORM.

Through an ``AsyncSession``, one lookup by primary key costs ~700 µs on SQLite (aiosqlite hands every DBAPI
call — cursor, execute, fetch, commit, reset — to its connection's thread and back, and each pooled connection
has its own thread contending for the GIL) and ~1 ms on PostgreSQL (pre-ping, BEGIN, SELECT, ROLLBACK). Here:

- **SQLite** (a file): one dedicated thread with its own connection, used only to read (WAL: readers never wait
  for the writer), runs the prepared ``SELECT`` in one hand-off, ~25 µs.
- **PostgreSQL**: the same ``SELECT`` straight on the asyncpg connection of a pooled SQLAlchemy connection (no
  ORM session, no transaction; asyncpg keeps the statement prepared), ~180 µs of CPU instead of ~290 µs through
  SQLAlchemy Core. Any other engine: SQLAlchemy Core.

Either way the row is read committed, exactly as a session would see it, so a client reads its own writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, bindparam, select
from sqlalchemy.dialects import sqlite

from cloud_core.db import Database
from cloud_core.models import Device

_TABLE = Device.__table__
_COLUMNS = tuple(c.key for c in _TABLE.c)
DeviceRow = namedtuple("DeviceRow", _COLUMNS)  # type: ignore[misc]
"""A device's columns, read by attribute like the ORM object (``DevicePublic.of`` takes either)."""
_QUERY = select(_TABLE).where(_TABLE.c.id == bindparam("id"))
_JSON = frozenset(c.key for c in _TABLE.c if isinstance(c.type, JSON))
_DATETIMES = frozenset(c.key for c in _TABLE.c if c.type.python_type is datetime)


def _decoded(values: Sequence[Any]) -> DeviceRow:
    """Decode what a driver returns without SQLAlchemy's types: JSON columns as text (sqlite3, asyncpg) and
    datetimes as ISO text (sqlite3: naive UTC)."""
    decoded = []
    for name, value in zip(_COLUMNS, values, strict=True):
        if isinstance(value, str) and name in _JSON:
            value = orjson.loads(value)
        elif isinstance(value, str) and name in _DATETIMES:
            value = datetime.fromisoformat(value)
        decoded.append(value)
    return DeviceRow(*decoded)


class _SqliteReader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sql = str(_QUERY.compile(dialect=sqlite.dialect()))
        self.local: sqlite3.Connection | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="fieldline-point-reads")

    def _open(self) -> None:
        self.local = sqlite3.connect(self.path, check_same_thread=False)
        self.local.execute("PRAGMA busy_timeout=5000")

    def _fetch(self, device_id: str) -> tuple[Any, ...] | None:
        if self.local is None:
            self._open()
        assert self.local is not None
        return self.local.execute(self.sql, (device_id,)).fetchone()

    def _close(self) -> None:
        if self.local is not None:
            self.local.close()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def device(self, device_id: str) -> DeviceRow | None:
        values = await self.run(self._fetch, device_id)
        return None if values is None else _decoded(values)

    async def close(self) -> None:
        await self.run(self._close)
        self.executor.shutdown(wait=True)


class PointReader:
    """``async with PointReader(database) as reader: row = await reader.device("dev-1")``"""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._sqlite: _SqliteReader | None = None
        self._asyncpg_sql: str | None = None

    async def __aenter__(self) -> PointReader:
        if self.database.is_sqlite:
            path = self.database.url.split("///", 1)[-1]
            if path and path != ":memory:":
                self._sqlite = _SqliteReader(path)
        elif self.database.engine.dialect.driver == "asyncpg":
            self._asyncpg_sql = str(_QUERY.compile(dialect=self.database.engine.dialect))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None

    async def device(self, device_id: str) -> DeviceRow | None:
        """The device's columns, or None when it is not registered."""
        if self._sqlite is not None:
            return await self._sqlite.device(device_id)
        async with self.database.engine.connect() as connection:
            if self._asyncpg_sql is not None:
                raw = await connection.get_raw_connection()
                values = await raw.driver_connection.fetchrow(self._asyncpg_sql, device_id)
                return None if values is None else _decoded(tuple(values))
            row = (await connection.execute(_QUERY, {"id": device_id})).first()
        return None if row is None else DeviceRow(*row)
