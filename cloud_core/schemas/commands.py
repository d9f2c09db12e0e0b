"""Commands on the wire: what an operator sends (create) and how the API shows one and its outcome (public)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud_core.models import Command
from cloud_core.schemas.timestamps import UtcDateTime

CommandStatus = Literal["pending", "delivered", "acknowledged", "failed", "expired"]
MAX_EXPIRY = 30 * 86400.0


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="what the device should do (its firmware's command name)"
    )
    params: dict[str, Any] = Field(
        {}, description="the command's arguments, passed to the device as they are"
    )
    expires_in: float | None = Field(
        None,
        gt=0,
        le=MAX_EXPIRY,
        description="seconds until an unanswered command expires; default commands.default_expiry (300)",
    )


class CommandPublic(BaseModel):
    id: str
    device: str
    gateway: str | None = Field(description="the gateway the command was routed through")
    name: str
    params: dict[str, Any]
    status: CommandStatus = Field(
        description="pending, then delivered (the gateway handed it to the device), then acknowledged or "
        "failed (the device answered); expired when no final answer came before expires_at"
    )
    created_by: str | None
    created_at: UtcDateTime
    expires_at: UtcDateTime
    delivered_at: UtcDateTime | None
    completed_at: UtcDateTime | None = Field(description="when it became acknowledged, failed or expired")
    result: dict[str, Any] | None = Field(description="the device's answer, when acknowledged")
    error: str | None = Field(description="why it failed")

    @classmethod
    def of(cls, command: Command) -> CommandPublic:
        return cls(
            id=command.id,
            device=command.device_id,
            gateway=command.gateway_id,
            name=command.name,
            params=command.params,
            status=command.status,  # type: ignore[arg-type]
            created_by=command.created_by,
            created_at=command.created_at,
            expires_at=command.expires_at,
            delivered_at=command.delivered_at,
            completed_at=command.completed_at,
            result=command.result,
            error=command.error,
        )
