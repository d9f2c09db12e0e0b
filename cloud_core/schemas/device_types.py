"""Device types on the wire: a profile naming the metrics a kind of device reports and their units."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud_core.models import DeviceType
from cloud_core.schemas.common import EntityId
from cloud_core.schemas.timestamps import UtcDateTime

MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")]
Unit = Annotated[str, StringConstraints(max_length=32)]
Description = Annotated[str, StringConstraints(max_length=1000)]


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Unit = Field("", description="e.g. °C, %, hPa; empty for a dimensionless metric")
    description: Description = ""


class MetricSpecPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Unit | None = None
    description: Description | None = None


Metrics = Annotated[
    dict[MetricName, MetricSpec], Field(max_length=500, description="expected metrics by name")
]


class DeviceTypeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: EntityId
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    description: Description = ""
    metrics: Metrics = {}


class DeviceTypeUpdate(BaseModel):
    """A JSON merge patch: ``metrics`` are merged by name (a null metric is removed, a metric's fields are
    merged too); ``null`` for name or description clears it."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    description: Description | None = None
    metrics: Annotated[dict[MetricName, MetricSpecPatch | None], Field(max_length=500)] | None = None


class DeviceTypePublic(BaseModel):
    id: str
    name: str
    description: str
    metrics: dict[str, MetricSpec]
    created_at: UtcDateTime
    updated_at: UtcDateTime
    version: int = Field(description="counts changes; the ETag is derived from it")

    @classmethod
    def of(cls, row: DeviceType) -> DeviceTypePublic:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            metrics=row.metrics,  # type: ignore[arg-type]
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )
