"""Events from gateways (device state changes, rule firings, workflow changes) and the alerts among them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud_core.models.base import Base, utcnow


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    gateway_id: Mapped[str | None] = mapped_column(String(128), default=None)
    device_id: Mapped[str | None] = mapped_column(String(128), default=None)
    type: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str | None] = mapped_column(String(16), default=None)
    ts: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    """What raised it on the gateway: ``rule:<id>``, a workflow instance id; None for device states."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_events_device_ts", "device_id", "ts"),
        Index("ix_events_gateway_ts", "gateway_id", "ts"),
        Index("ix_events_type_ts", "type", "ts"),
        Index("ix_events_ts", "ts"),
    )


class AlertStatus(enum.StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(Base):
    """An alert raised by a rule on a gateway (or in the cloud); operators acknowledge and resolve it."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    gateway_id: Mapped[str | None] = mapped_column(String(128), default=None)
    device_id: Mapped[str | None] = mapped_column(String(128), default=None)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.ACTIVE.value)
    message: Mapped[str] = mapped_column(default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raised_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the rule itself cleared (hysteresis); the alert stays until an operator resolves it."""
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(128), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_alerts_status_raised", "status", "raised_at"),
        Index("ix_alerts_device", "device_id"),
    )
