"""Events and alerts on the wire: what the API shows of each (both are written by ingest, not by clients)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from cloud_core.models import Alert, EventRow
from cloud_core.schemas.timestamps import UtcDateTime

AlertStatus = Literal["active", "acknowledged", "resolved"]
Severity = Literal["info", "warning", "error", "critical"]


class EventPublic(BaseModel):
    id: int
    type: str = Field(
        description="device.state, alert, alert.cleared, command.delivered, workflow.succeeded, ... (any name a "
        "gateway's rules and workflows emit)"
    )
    gateway: str | None = Field(description="the gateway that sent it")
    device: str | None
    severity: Severity | None = Field(description="for alerts and events that carry one")
    ts: UtcDateTime = Field(description="when it happened, by the gateway's clock")
    source: str | None = Field(
        description="what raised it: rule:<id>, a workflow instance id; null for states"
    )
    data: dict[str, Any]
    received_at: UtcDateTime

    @classmethod
    def of(cls, row: EventRow) -> EventPublic:
        return cls(
            id=row.id,
            type=row.type,
            gateway=row.gateway_id,
            device=row.device_id,
            severity=row.severity,  # type: ignore[arg-type]
            ts=row.ts,
            source=row.source,
            data=row.data,
            received_at=row.received_at,
        )


class AlertPublic(BaseModel):
    id: int
    rule: str = Field(description="the rule that raised it")
    gateway: str | None
    device: str | None
    severity: Severity
    status: AlertStatus
    message: str
    data: dict[str, Any] = Field(description="the alert event's data (rule, firing, values in scope)")
    raised_at: UtcDateTime
    cleared_at: UtcDateTime | None = Field(
        description="when the rule cleared (its condition stopped holding); the alert stays open until resolved"
    )
    acknowledged_by: str | None
    acknowledged_at: UtcDateTime | None
    resolved_by: str | None
    resolved_at: UtcDateTime | None

    @classmethod
    def of(cls, alert: Alert) -> AlertPublic:
        return cls(
            id=alert.id,
            rule=alert.rule_id,
            gateway=alert.gateway_id,
            device=alert.device_id,
            severity=alert.severity,  # type: ignore[arg-type]
            status=alert.status,  # type: ignore[arg-type]
            message=alert.message,
            data=alert.data,
            raised_at=alert.raised_at,
            cleared_at=alert.cleared_at,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=alert.acknowledged_at,
            resolved_by=alert.resolved_by,
            resolved_at=alert.resolved_at,
        )
