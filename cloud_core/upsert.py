"""``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL alike: rows that may already exist, written by
whichever ingest replica (or API request) gets there first, without a race between a read and an insert."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_ignore(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> Any:
    """An insert of ``rows`` into ``model``'s table that skips rows whose key exists; add ``.returning(...)`` to
    learn which rows were new."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(model).values(rows).on_conflict_do_nothing()
