"""Enrollment tokens (stored hashed) and the certificates the cloud's CA issued.

A token is bound to one gateway or device (``kind``, ``owner_id``), expires, and is used once: ``used_at`` and
``used_serial`` record the enrollment it paid for. A certificate row is written for every certificate signed
(enrollment or renewal); revoking sets ``revoked_at`` and ``reason``, and the CRL lists the revoked rows that
have not expired yet."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud_core.models.base import Base, utcnow


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the token; the token itself is shown once, by the create."""
    kind: Mapped[str] = mapped_column(String(16))
    """``gateway`` or ``device``."""
    owner_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200), default=None)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_serial: Mapped[str | None] = mapped_column(String(40), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when the owner is revoked: a token issued before a revocation never enrolls."""

    __table_args__ = (Index("ix_enrollment_tokens_owner", "kind", "owner_id"),)


class IssuedCertificate(Base):
    __tablename__ = "certificates"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    """Lower-case hexadecimal, no leading zeros (up to 160 bits)."""
    subject: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the DER certificate: renewal checks that the presented certificate is this very one."""
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    issued_via: Mapped[str] = mapped_column(String(16))
    """``enroll`` or ``renew``."""
    renewed_from: Mapped[str | None] = mapped_column(String(40), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(String(32), default=None)

    __table_args__ = (
        Index("ix_certificates_owner", "kind", "owner_id"),
        Index("ix_certificates_revoked", "revoked_at"),
    )
