"""``/api/v1/events`` and ``/api/v1/alerts``: what gateways reported (device states, rule firings, workflow and
command outcomes), and the alerts operators acknowledge and resolve. Both are written by ingest; the API reads
them and records who acknowledged or resolved an alert, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from cloud_core import events
from cloud_core.api.deps import OperatorDep, ServicesDep, ViewerDep
from cloud_core.pagination import PaginationError, Sort, decode_cursor, encode_cursor
from cloud_core.registry import InvalidQuery, utcnow
from cloud_core.schemas.common import Cursor, Limit, Page, problem_responses
from cloud_core.schemas.events import AlertPublic, AlertStatus, EventPublic, Severity
from cloud_core.schemas.timestamps import as_utc

router = APIRouter(prefix="/api/v1/events", tags=["events"])
alerts_router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

EVENT_ORDER = Sort("ts", descending=True)
ALERT_ORDER = Sort("id", descending=True)
MAX_ID = 2**31 - 1
"""Event and alert ids are 32-bit integers (PostgreSQL ``integer``)."""

AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _row_id(text: str) -> int:
    row_id = int(text)
    if not 0 < row_id <= MAX_ID:
        raise ValueError("id out of range")
    return row_id


def _utc(value: datetime | None, name: str) -> datetime | None:
    try:
        return None if value is None else as_utc(value)
    except OverflowError:
        raise InvalidQuery(f"{name} is out of range") from None


@router.get("", response_model=Page[EventPublic], responses=problem_responses(400, 401, 403, 422))
async def list_events(
    services: ServicesDep,
    _: ViewerDep,
    device: Annotated[str | None, Query(description="events about this device")] = None,
    gateway: Annotated[str | None, Query(description="events this gateway sent")] = None,
    type: Annotated[str | None, Query(description="events of this type, e.g. alert or device.state")] = None,
    since: Annotated[datetime | None, Query(description="events at or after this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="events before this time (ISO 8601)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[EventPublic]:
    """Events newest first (by the time they happened, then by arrival)."""
    after = None
    if cursor is not None:
        try:
            ts, row_id = decode_cursor(cursor, EVENT_ORDER)
            after = (as_utc(ts), _row_id(row_id))
        except (PaginationError, TypeError, ValueError, AttributeError, OverflowError):
            raise InvalidQuery("the cursor is not one this API issued") from None
    where = events.EventFilter(device, gateway, type, _utc(since, "since"), _utc(until, "until"))
    async with services.database.session() as session:
        rows = await events.list_events(session, where, after=after, limit=limit)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(EVENT_ORDER, rows[-1].ts, str(rows[-1].id))
    return Page(items=[EventPublic.of(r) for r in rows], next_cursor=next_cursor)


@alerts_router.get("", response_model=Page[AlertPublic], responses=problem_responses(400, 401, 403, 422))
async def list_alerts(
    services: ServicesDep,
    _: ViewerDep,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    device: Annotated[str | None, Query(description="alerts about this device")] = None,
    rule: Annotated[str | None, Query(description="alerts raised by this rule")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertPublic]:
    """Alerts newest first."""
    before = None
    if cursor is not None:
        try:
            before = _row_id(decode_cursor(cursor, ALERT_ORDER)[1])
        except (PaginationError, ValueError):
            raise InvalidQuery("the cursor is not one this API issued") from None
    where = events.AlertFilter(status, severity, device, rule)
    async with services.database.session() as session:
        rows = await events.list_alerts(session, where, before_id=before, limit=limit)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(ALERT_ORDER, rows[-1].id, str(rows[-1].id))
    return Page(items=[AlertPublic.of(r) for r in rows], next_cursor=next_cursor)


@alerts_router.get("/{alert_id}", response_model=AlertPublic, responses=problem_responses(401, 403, 404, 422))
async def read_alert(alert_id: AlertId, services: ServicesDep, _: ViewerDep) -> AlertPublic:
    async with services.database.session() as session:
        return AlertPublic.of(await events.get_alert(session, alert_id))


@alerts_router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertPublic,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def acknowledge_alert(alert_id: AlertId, services: ServicesDep, principal: OperatorDep) -> AlertPublic:
    """Say someone is on it: active → acknowledged, with who and when (409 if it is not active)."""
    async with services.database.session() as session:
        alert = await events.acknowledge_alert(session, alert_id, principal.id, utcnow())
    return AlertPublic.of(alert)


@alerts_router.post(
    "/{alert_id}/resolve", response_model=AlertPublic, responses=problem_responses(401, 403, 404, 409, 422)
)
async def resolve_alert(alert_id: AlertId, services: ServicesDep, principal: OperatorDep) -> AlertPublic:
    """Close the alert: active or acknowledged → resolved, with who and when (409 if already resolved)."""
    async with services.database.session() as session:
        alert = await events.resolve_alert(session, alert_id, principal.id, utcnow())
    return AlertPublic.of(alert)
