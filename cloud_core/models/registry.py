"""Devices, device types (profiles) and gateways.

``version`` counts writes to a row; the API's ETag is derived from it and PATCH with ``If-Match`` compares it,
so two operators cannot overwrite each other's change (optimistic concurrency, ``version_id_col``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud_core.models.base import Base, Timestamped


class DeviceType(Timestamped, Base):
    __tablename__ = "device_types"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Expected metrics: ``{name: {"unit": "°C", "description": ...}}``."""
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}


class Gateway(Timestamped, Base):
    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    """``online``/``offline`` from the retained status and last will; ``unknown`` before the first."""
    agent_version: Mapped[str | None] = mapped_column(String(64), default=None)
    config_version: Mapped[str | None] = mapped_column(String(64), default=None)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}


class Device(Timestamped, Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    type_id: Mapped[str | None] = mapped_column(
        ForeignKey("device_types.id", ondelete="SET NULL"), default=None
    )
    gateway_id: Mapped[str | None] = mapped_column(
        ForeignKey("gateways.id", ondelete="SET NULL"), default=None
    )
    manufacturer: Mapped[str | None] = mapped_column(String(200), default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    firmware_version: Mapped[str | None] = mapped_column(String(64), default=None)
    capabilities: Mapped[list[Any]] = mapped_column(default=list)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active``, ``disabled``, or ``quarantined`` (seen from a gateway but not yet accepted)."""
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_devices_gateway", "gateway_id"),
        Index("ix_devices_type", "type_id"),
        Index("ix_devices_status", "status"),
        # keyset pages sorted by these keys (ties by id) read an index range instead of sorting the table;
        # last_seen is not indexed: ingest rewrites it on every flush, and its sort is rare
        Index("ix_devices_name_id", "name", "id"),
        Index("ix_devices_created_at_id", "created_at", "id"),
        Index("ix_devices_updated_at_id", "updated_at", "id"),
    )
