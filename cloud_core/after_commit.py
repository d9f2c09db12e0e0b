"""Events that wait for a transaction: queued on a session, published on the bus when it commits, dropped when
it rolls back. A subscriber that reacts to ``device.registered`` can therefore always read the device."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cloud_core.bus import EventBus

_PENDING = "fieldline_pending_events"


def queue_event(
    session: AsyncSession, bus: EventBus, type: str, data: dict[str, Any], *, device_id: str | None = None
) -> None:
    """Publish ``type`` on ``bus`` when the session's transaction commits (dropped if it rolls back)."""
    sync = session.sync_session
    pending: list[tuple[EventBus, str, dict[str, Any], str | None]] | None = sync.info.get(_PENDING)
    if pending is None:
        pending = sync.info[_PENDING] = []
        event.listen(sync, "after_commit", _publish_pending)
        event.listen(sync, "after_rollback", _drop_pending)
    pending.append((bus, type, data, device_id))


def _publish_pending(session: Session) -> None:
    pending = session.info[_PENDING]
    for bus, type, data, device_id in pending:
        bus.emit(type, data, device_id=device_id)
    pending.clear()


def _drop_pending(session: Session) -> None:
    session.info[_PENDING].clear()
