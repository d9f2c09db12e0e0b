"""Datetimes on the wire: always timezone-aware UTC.

SQLite hands back naive datetimes (it stores no offset); PostgreSQL hands back aware ones. ``UtcDateTime`` makes
both read the same in responses, and ``as_utc`` normalises a query bound before it is compared with a column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already. A time whose UTC equivalent falls outside
    the years 1-9999 (``0001-01-01T00:00+05:00``) is clamped to the nearest end of that range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
