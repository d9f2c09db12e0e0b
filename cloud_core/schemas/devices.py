"""Devices on the wire: what an operator sends to register one (create), to change one (a JSON merge patch) and
what the API shows (public)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import Row

from cloud_core.models import Device
from cloud_core.point_reads import DeviceRow
from cloud_core.schemas.common import EntityId, Labels, LabelsPatch
from cloud_core.schemas.timestamps import UtcDateTime

DeviceStatus = Literal["active", "disabled", "quarantined"]
Capability = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Capabilities = Annotated[list[Capability], Field(max_length=100, description="what the device can do")]
Text200 = Annotated[str, StringConstraints(max_length=200)]
Firmware = Annotated[str, StringConstraints(max_length=64)]


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EntityId
    name: Text200 = ""
    type: EntityId | None = Field(None, description="id of a registered device type")
    gateway: EntityId | None = Field(None, description="id of a registered gateway")
    manufacturer: Text200 | None = None
    model: Text200 | None = None
    firmware_version: Firmware | None = None
    capabilities: Capabilities = []
    labels: Labels = {}
    status: DeviceStatus = "active"


class DeviceUpdate(BaseModel):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears a field (``name`` to "", ``labels``
    and ``capabilities`` to empty), labels are merged key by key."""

    model_config = ConfigDict(extra="forbid")

    name: Text200 | None = None
    type: EntityId | None = None
    gateway: EntityId | None = None
    manufacturer: Text200 | None = None
    model: Text200 | None = None
    firmware_version: Firmware | None = None
    capabilities: Capabilities | None = None
    labels: LabelsPatch | None = None
    status: DeviceStatus | None = Field(None, description="cannot be null")

    @field_validator("status")
    @classmethod
    def _status_not_null(cls, value: DeviceStatus | None) -> DeviceStatus:
        if value is None:
            raise ValueError("status cannot be null")
        return value


class DevicePublic(BaseModel):
    id: str
    name: str
    type: str | None
    gateway: str | None
    manufacturer: str | None
    model: str | None
    firmware_version: str | None
    capabilities: list[str]
    labels: dict[str, str]
    status: DeviceStatus
    last_seen: UtcDateTime | None = Field(description="when data from the device last reached the cloud")
    created_at: UtcDateTime
    updated_at: UtcDateTime
    version: int = Field(description="counts changes to the registration; the ETag is derived from it")

    @classmethod
    def of(cls, device: Device | DeviceRow | Row[Any]) -> DevicePublic:
        """From the ORM object or a row with the same columns (``point_reads``, ``RETURNING``)."""
        return cls(
            id=device.id,
            name=device.name,
            type=device.type_id,
            gateway=device.gateway_id,
            manufacturer=device.manufacturer,
            model=device.model,
            firmware_version=device.firmware_version,
            capabilities=device.capabilities,
            labels=device.labels,
            status=device.status,  # type: ignore[arg-type]
            last_seen=device.last_seen,
            created_at=device.created_at,
            updated_at=device.updated_at,
            version=device.version,
        )


class ImportRow(BaseModel):
    row: int = Field(description="CSV: the line number (the header is line 1); JSON: the 1-based array index")
    id: str | None = Field(description="the device id, when the row has one")
    status: Literal["created", "updated", "error"] = Field(
        description="updated also covers an upsert that found nothing to change (changed is then empty)"
    )
    changed: list[str] = Field([], description="fields an upsert changed")
    error: str | None = None


class ImportReport(BaseModel):
    mode: Literal["create", "upsert"]
    total: int
    created: int
    updated: int
    failed: int
    rows: list[ImportRow] = Field(description="one entry per row, in the order of the input")
