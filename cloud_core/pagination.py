"""Keyset pagination with opaque cursors, stable under inserts and deletes.

A list is ordered by one sort key (``name``, ``-last_seen``, ...) and then by ``id``, so ties are broken the same
way on every request. The cursor is URL-safe base64 of JSON ``[sort, key of the last row, id of the last row]``;
the next page continues strictly after that position (``WHERE (key, id) > (k, i)``), so rows inserted or
deleted meanwhile never shift a page: nothing is skipped or repeated, and a new row shows up later exactly when
it sorts after the cursor. ``NULL`` keys (a device never seen) sort last in both directions, on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from cloud_core.schemas.timestamps import as_utc


class PaginationError(ValueError):
    """Raised when a sort or a cursor is not valid for the listing."""


@dataclass(frozen=True, slots=True)
class Sort:
    field: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str, allowed: Sequence[str]) -> Sort:
        descending = text.startswith("-")
        field = text[1:] if descending else text
        if field not in allowed:
            options = ", ".join(allowed)
            raise PaginationError(f"cannot sort by {text!r}: use one of {options} (a '-' prefix reverses)")
        return cls(field, descending)

    def __str__(self) -> str:
        return f"-{self.field}" if self.descending else self.field


def _encode_key(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": as_utc(value).isoformat()}
    return value


def _decode_key(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("t"), str):
        return datetime.fromisoformat(value["t"])
    if value is None or isinstance(value, str | int | float):
        return value
    raise ValueError("unexpected key")


def encode_cursor(sort: Sort, key: Any, row_id: str) -> str:
    raw = orjson.dumps([str(sort), _encode_key(key), row_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, str]:
    """(key, id) of the row the cursor points after; raises ``PaginationError``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, key, row_id = orjson.loads(raw)
        key = _decode_key(key)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise PaginationError("the cursor is not one this API issued") from None
    if made_for != str(sort) or not isinstance(row_id, str):
        raise PaginationError(f"the cursor was issued for sort={made_for}, not sort={sort}")
    return key, row_id


@dataclass(frozen=True, slots=True)
class Keyset:
    """One listing's ordering: the sortable columns by name and the unique ``id`` column that breaks ties."""

    columns: Mapping[str, InstrumentedAttribute[Any]]
    id_column: InstrumentedAttribute[Any]

    def sort(self, text: str) -> Sort:
        return Sort.parse(text, list(self.columns))

    def apply(self, query: Select[Any], sort: Sort, limit: int, cursor: str | None) -> Select[Any]:
        """Order ``query``, start it after ``cursor`` and fetch ``limit + 1`` rows (one more tells whether a
        next page exists)."""
        column = self.columns[sort.field]
        if column is self.id_column:
            order = [column.desc() if sort.descending else column.asc()]
        else:
            direction = column.desc() if sort.descending else column.asc()
            order = [direction.nulls_last(), self.id_column.asc()]
        if cursor is not None:
            key, row_id = decode_cursor(cursor, sort)
            if key is not None and not isinstance(key, column.type.python_type):
                raise PaginationError("the cursor is not one this API issued")
            query = query.where(self._after(column, sort, key, row_id))
        return query.order_by(*order).limit(limit + 1)

    def _after(self, column: Any, sort: Sort, key: Any, row_id: str) -> Any:
        if column is self.id_column:
            return column < row_id if sort.descending else column > row_id
        if key is None:
            return and_(column.is_(None), self.id_column > row_id)
        beyond = column < key if sort.descending else column > key
        return or_(beyond, and_(column == key, self.id_column > row_id), column.is_(None))

    def page(self, rows: Sequence[Any], sort: Sort, limit: int) -> tuple[list[Any], str | None]:
        """The first ``limit`` rows and the cursor of the next page (None on the last page)."""
        items = list(rows[:limit])
        if len(rows) <= limit:
            return items, None
        last = items[-1]
        return items, encode_cursor(sort, getattr(last, sort.field), last.id)
