"""The audit log on the wire: one entry per write request (pages of them are ``schemas.common.Page``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_core.schemas.timestamps import UtcDateTime


class AuditEntryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: UtcDateTime = Field(description="when the response status was known")
    principal: str = Field(
        description="key:<id>, jwt:<subject>, or anonymous when no credential was accepted"
    )
    role: str | None
    method: str
    path: str
    resource: str | None = Field(
        description="the route's collection and sub-resources, e.g. devices or devices/commands"
    )
    resource_id: str | None = Field(
        description="the route's path parameters joined by /, or the id of the object a create returned"
    )
    status_code: int
    detail: dict[str, Any] = Field(
        description="names of the body's fields (never values), the problem type and detail of a refusal, "
        "the claimed key id of a refused key, the id of a created sub-resource"
    )
