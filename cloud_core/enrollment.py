"""Enrollment tokens: what an operator hands to a gateway (or a device) so it can get its first certificate.

A token is 192 random bits (``secrets``), shown once by the create and stored only as its SHA-256: the lookup
is by hash, so no stored secret is ever compared byte by byte (nothing to time). A token is bound to one
gateway or device, expires (``pki.token_ttl`` by default, at most ``pki.max_token_ttl``), and pays for one
certificate: it is consumed by a conditional update in the transaction that records the certificate, so two
concurrent enrollments with the same token cannot both succeed. A refused enrollment (bad CSR, wrong subject)
leaves the token usable; an attempt after a successful one is refused with the time it was used. Revoking the
owner revokes its unused tokens too.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.models import EnrollmentToken
from cloud_core.pki_errors import EnrollmentRefused
from cloud_core.schemas.timestamps import as_utc

TOKEN_PREFIX = "flenr_"
TOKEN_BYTES = 24


@dataclass(frozen=True)
class NewToken:
    token: str
    """The whole token; never stored."""
    row: EnrollmentToken


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: AsyncSession,
    kind: str,
    owner_id: str,
    *,
    ttl: timedelta,
    created_by: str | None,
    now: datetime,
) -> NewToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    row = EnrollmentToken(
        token_hash=hash_token(token),
        kind=kind,
        owner_id=owner_id,
        created_at=now,
        created_by=created_by,
        expires_at=now + ttl,
    )
    session.add(row)
    return NewToken(token, row)


async def usable_token(session: AsyncSession, token: str, now: datetime) -> EnrollmentToken:
    """The token's row if it can still pay for a certificate; otherwise ``EnrollmentRefused`` saying why."""
    row = await session.get(EnrollmentToken, hash_token(token))
    if row is None:
        raise EnrollmentRefused("the enrollment token is not recognised (mistyped, or never issued)")
    if row.used_at is not None:
        raise EnrollmentRefused(
            f"the enrollment token was already used at {_when(row.used_at)} "
            f"(certificate {row.used_serial}); ask an operator for a new one"
        )
    if row.revoked_at is not None:
        raise EnrollmentRefused(
            f"the enrollment token was revoked at {_when(row.revoked_at)} with {row.kind} {row.owner_id}"
        )
    if as_utc(row.expires_at) <= now:
        raise EnrollmentRefused(
            f"the enrollment token expired at {_when(row.expires_at)}; ask an operator for a new one"
        )
    return row


async def consume(session: AsyncSession, row: EnrollmentToken, serial: str, now: datetime) -> None:
    """Mark the token used for ``serial``; refuses when another enrollment consumed it meanwhile."""
    result = await session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.token_hash == row.token_hash, EnrollmentToken.used_at.is_(None))
        .values(used_at=now, used_serial=serial)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise EnrollmentRefused("the enrollment token was used by a concurrent enrollment")


async def revoke_tokens(session: AsyncSession, kind: str, owner_id: str, now: datetime) -> int:
    """Revoke the owner's unused tokens; returns how many."""
    result = await session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.kind == kind,
            EnrollmentToken.owner_id == owner_id,
            EnrollmentToken.used_at.is_(None),
            EnrollmentToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _when(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")
