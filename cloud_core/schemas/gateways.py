"""Gateways on the wire. An operator registers a gateway and names or labels it; its status, agent version,
applied configuration version and last-seen time are observed from its MQTT status topic, never written
through the API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud_core.models import Gateway
from cloud_core.schemas.common import EntityId, Labels, LabelsPatch
from cloud_core.schemas.timestamps import UtcDateTime

GatewayStatus = Literal["online", "offline", "unknown"]
Name = Annotated[str, StringConstraints(max_length=200)]


class GatewayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EntityId
    name: Name = ""
    labels: Labels = {}


class GatewayUpdate(BaseModel):
    """A JSON merge patch: labels are merged key by key (null removes one); ``name: null`` clears the name."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    labels: LabelsPatch | None = None


class GatewayPublic(BaseModel):
    id: str
    name: str
    labels: dict[str, str]
    status: GatewayStatus = Field(
        description="from the gateway's retained status message and its last will; unknown before the first"
    )
    agent_version: str | None
    config_version: str | None = Field(description="version of the configuration the gateway has applied")
    last_seen: UtcDateTime | None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    version: int = Field(
        description="counts changes to the registration (name, labels), not status reports; the ETag is "
        "derived from it"
    )

    @classmethod
    def of(cls, row: Gateway) -> GatewayPublic:
        return cls(
            id=row.id,
            name=row.name,
            labels=row.labels,
            status=row.status,  # type: ignore[arg-type]
            agent_version=row.agent_version,
            config_version=row.config_version,
            last_seen=row.last_seen,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )
