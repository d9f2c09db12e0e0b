"""API keys on the wire: what an admin sends to create one, what the API shows (never the secret or its hash),
and the one response that carries the whole key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_core.schemas.timestamps import UtcDateTime

RoleName = Literal["viewer", "operator", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
    name: str = Field("", max_length=200, description="what the key is for")


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="the public part of the key (fl_<id>_<secret>)")
    name: str
    role: RoleName
    created_at: UtcDateTime
    created_by: str | None = Field(description="the principal that created the key (cli for the command)")
    last_used_at: UtcDateTime | None = Field(description="updated at most once a minute")
    revoked_at: UtcDateTime | None


class KeyCreated(KeyPublic):
    token: str = Field(description="the whole key; shown once, only a hash of its secret is stored")
