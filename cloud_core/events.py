"""Events from gateways, stored and put on the bus; the alerts among them; the queries the API runs over both.

Ingest calls ``store_records`` inside its transaction with a batch's ``StateRecord``s (stored as ``device.state``
events, ``{"state", "attributes"}``) and ``EventRecord``s (stored under their own type). Some types do more:

- ``alert`` raises an ``Alert`` (rule id from ``data.rule`` or a ``rule:<id>`` source, severity, device, message,
  data). While an alert of the same rule and device is still open (not cleared, not resolved), a new firing
  updates that alert instead of raising another;
- ``alert.cleared`` sets ``cleared_at`` on the open alert of that rule and device (it stays open until an
  operator resolves it);
- ``command.delivered``/``command.acknowledged``/``command.failed`` move the command's status forward
  (``cloud_core.commands.apply_status``).

The caller publishes the returned bus events once its transaction has committed. Operators acknowledge and
resolve alerts (``acknowledge_alert``/``resolve_alert``), each recorded with who and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.commands import apply_status
from cloud_core.models import Alert, AlertStatus, EventRow
from cloud_core.problems import Problem, not_found
from cloud_core.schemas.timestamps import as_utc
from fieldline.wire import EventRecord, StateRecord
from workflows.events import DEVICE_STATE, Event
from workflows.rules import ALERT, ALERT_CLEARED

OPEN_STATUSES = (AlertStatus.ACTIVE.value, AlertStatus.ACKNOWLEDGED.value)
SEVERITIES = ("info", "warning", "error", "critical")


def from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def store_records(
    session: AsyncSession,
    gateway_id: str,
    records: Sequence[StateRecord | EventRecord],
    received_at: datetime,
) -> list[Event]:
    """Store the records as events (with their alert and command effects); returns what goes on the bus."""
    out: list[Event] = []
    for record in records:
        ts = from_epoch(record.ts)
        if isinstance(record, StateRecord):
            data: dict[str, Any] = {"state": record.state, "attributes": record.attributes}
            session.add(
                EventRow(
                    gateway_id=gateway_id,
                    device_id=record.device_id,
                    type=DEVICE_STATE,
                    ts=ts,
                    data=data,
                    received_at=received_at,
                )
            )
            out.append(Event(DEVICE_STATE, data, device_id=record.device_id, ts=record.ts, source=gateway_id))
            continue
        severity = record.data.get("severity")
        session.add(
            EventRow(
                gateway_id=gateway_id,
                device_id=record.device_id,
                type=record.type,
                severity=severity if severity in SEVERITIES else None,
                ts=ts,
                data=record.data,
                source=record.source,
                received_at=received_at,
            )
        )
        if record.type == ALERT:
            await _raise_alert(session, gateway_id, record, ts)
        elif record.type == ALERT_CLEARED:
            await _clear_alert(session, record, ts)
        else:
            await apply_status(session, record.type, record.data, ts)
        out.append(Event.from_record(record, default_source=gateway_id))
    return out


def rule_of(record: EventRecord) -> str:
    rule = record.data.get("rule")
    if isinstance(rule, str) and rule:
        return rule[:128]
    if record.source and record.source.startswith("rule:"):
        return record.source[5:][:128]
    return (record.source or "unknown")[:128]


async def _open_alert(session: AsyncSession, rule_id: str, device_id: str | None) -> Alert | None:
    query = (
        select(Alert)
        .where(
            Alert.rule_id == rule_id,
            Alert.device_id.is_(None) if device_id is None else Alert.device_id == device_id,
            Alert.status.in_(OPEN_STATUSES),
            Alert.cleared_at.is_(None),
        )
        .order_by(Alert.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _raise_alert(session: AsyncSession, gateway_id: str, record: EventRecord, ts: datetime) -> None:
    rule_id = rule_of(record)
    severity = record.data.get("severity")
    message = record.data.get("message") or record.data.get("description") or f"rule {rule_id} fired"
    alert = await _open_alert(session, rule_id, record.device_id)
    if alert is None:
        alert = Alert(rule_id=rule_id, gateway_id=gateway_id, device_id=record.device_id, raised_at=ts)
        session.add(alert)
    alert.severity = severity if severity in SEVERITIES else "warning"
    alert.message = str(message)
    alert.data = record.data


async def _clear_alert(session: AsyncSession, record: EventRecord, ts: datetime) -> None:
    alert = await _open_alert(session, rule_of(record), record.device_id)
    if alert is not None:
        alert.cleared_at = ts


# ------------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class EventFilter:
    device_id: str | None = None
    gateway_id: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession, where: EventFilter, *, after: tuple[datetime, int] | None, limit: int
) -> list[EventRow]:
    """Events matching ``where``, newest first (by event time, then id), starting after the ``(ts, id)`` of the
    last row of the previous page; ``limit + 1`` rows at most."""
    query: Select[tuple[EventRow]] = select(EventRow)
    if where.device_id is not None:
        query = query.where(EventRow.device_id == where.device_id)
    if where.gateway_id is not None:
        query = query.where(EventRow.gateway_id == where.gateway_id)
    if where.type is not None:
        query = query.where(EventRow.type == where.type)
    if where.since is not None:
        query = query.where(EventRow.ts >= as_utc(where.since))
    if where.until is not None:
        query = query.where(EventRow.ts < as_utc(where.until))
    if after is not None:
        ts, row_id = after
        query = query.where(or_(EventRow.ts < ts, and_(EventRow.ts == ts, EventRow.id < row_id)))
    query = query.order_by(EventRow.ts.desc(), EventRow.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True, slots=True)
class AlertFilter:
    status: str | None = None
    severity: str | None = None
    device_id: str | None = None
    rule_id: str | None = None


async def list_alerts(
    session: AsyncSession, where: AlertFilter, *, before_id: int | None, limit: int
) -> list[Alert]:
    """Alerts matching ``where``, newest first (by id), below ``before_id``; ``limit + 1`` rows at most."""
    query: Select[tuple[Alert]] = select(Alert)
    if where.status is not None:
        query = query.where(Alert.status == where.status)
    if where.severity is not None:
        query = query.where(Alert.severity == where.severity)
    if where.device_id is not None:
        query = query.where(Alert.device_id == where.device_id)
    if where.rule_id is not None:
        query = query.where(Alert.rule_id == where.rule_id)
    if before_id is not None:
        query = query.where(Alert.id < before_id)
    return list((await session.execute(query.order_by(Alert.id.desc()).limit(limit + 1))).scalars())


async def get_alert(session: AsyncSession, alert_id: int, *, lock: bool = False) -> Alert:
    alert = await session.get(Alert, alert_id, with_for_update=lock)
    if alert is None:
        raise not_found("alert", str(alert_id))
    return alert


async def acknowledge_alert(session: AsyncSession, alert_id: int, who: str, now: datetime) -> Alert:
    """Active → acknowledged; a 409 problem when it is already acknowledged or resolved."""
    alert = await get_alert(session, alert_id, lock=True)
    if alert.status != AlertStatus.ACTIVE.value:
        by = alert.acknowledged_by if alert.status == AlertStatus.ACKNOWLEDGED.value else alert.resolved_by
        raise Problem(
            409, "Conflict", f"alert {alert_id} is already {alert.status} (by {by})", type="alert-state"
        )
    alert.status = AlertStatus.ACKNOWLEDGED.value
    alert.acknowledged_by = who
    alert.acknowledged_at = now
    return alert


async def resolve_alert(session: AsyncSession, alert_id: int, who: str, now: datetime) -> Alert:
    """Active or acknowledged → resolved; a 409 problem when it is already resolved."""
    alert = await get_alert(session, alert_id, lock=True)
    if alert.status == AlertStatus.RESOLVED.value:
        raise Problem(
            409,
            "Conflict",
            f"alert {alert_id} is already resolved (by {alert.resolved_by})",
            type="alert-state",
        )
    alert.status = AlertStatus.RESOLVED.value
    alert.resolved_by = who
    alert.resolved_at = now
    return alert
