"""Ingest bookkeeping: the per-gateway sequence marks that make ingest idempotent, and quarantined batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud_core.models.base import Base, utcnow


class IngestMark(Base):
    """Every sequence number at or below ``low`` was ingested; ``seen`` lists the ones above it (a batch that
    arrives out of order, after a gap). A batch whose seq is ``<= low`` or in ``seen`` is a duplicate."""

    __tablename__ = "ingest_marks"

    gateway_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    low: Mapped[int] = mapped_column(default=0)
    seen: Mapped[list[Any]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QuarantinedBatch(Base):
    __tablename__ = "quarantined_batches"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    gateway_id: Mapped[str | None] = mapped_column(String(128), default=None)
    topic: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(default="")
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The first bytes of the payload (truncated)."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
