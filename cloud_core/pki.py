"""The cloud's PKI service: signs gateway and device certificates with the issuing CA, renews them on proof of
possession, revokes them and publishes the CRL (docs/enrollment.md).

The CA is loaded from ``pki.ca_dir`` (default ``<data_dir>/pki``). In development, a directory without a CA gets
one on first start (``certs.create_authority``, root key unencrypted); in production a missing or unreadable CA
stops the start-up: point ``pki.ca_dir`` at an intermediate made with ``fieldline certs init``. Every signed
certificate is recorded (``IssuedCertificate``); the CRL is built from the database, and built again as soon as the
revocations there change, so every replica of the cloud core publishes the same revocations.

After ``fieldline certs rotate-intermediate`` (and a restart), the new intermediate signs while every retired one
still valid keeps working: certificates it issued renew, and the published CRL is a bundle of one CRL per issuing
intermediate (the broker's ``crlfile`` needs one for each CA in its ``cafile``); its DER form, which holds one CRL,
is the current intermediate's.

Renewal authenticates the gateway by its current certificate with a proof of possession (a signature over the
new CSR made with the current key): uvicorn terminates TLS for the whole connection and cannot hand a client
certificate to one request, so mutual TLS is not available at this layer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from certs import (
    CaError,
    CertificateAuthority,
    CsrRejected,
    RevokedCertificate,
    check_csr,
    create_authority,
)
from certs.rotation import issuing_authorities
from cloud_core import enrollment
from cloud_core.after_commit import queue_event
from cloud_core.bus import EventBus
from cloud_core.db import Database
from cloud_core.models import Device, EnrollmentToken, Gateway, IssuedCertificate
from cloud_core.pki_errors import (
    CertificateNotFound,
    CsrRefused,
    EnrollmentRefused,
    RenewalRefused,
)
from cloud_core.problems import Problem, not_found
from cloud_core.rate_limit import RateLimiter
from cloud_core.schemas.timestamps import as_utc
from cloud_core.settings import CloudSettings, PkiSettings

log = logging.getLogger("fieldline.cloud")

GATEWAY_REVOKED = "gateway.revoked"
DEVICE_REVOKED = "device.revoked"
CERTIFICATE_REVOKED = "certificate.revoked"
OWNERS: dict[str, type[Gateway] | type[Device]] = {"gateway": Gateway, "device": Device}


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    row: IssuedCertificate
    chain_pem: str

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class _CachedCrl:
    state: tuple[int, datetime | None]
    """How many revoked certificates it lists and the latest revocation time."""
    built: datetime
    crls: tuple[x509.CertificateRevocationList, ...]
    """One per issuing intermediate, the current one's first."""


def serial_hex(serial: int) -> str:
    return format(serial, "x")


class PkiService:
    """Signs, renews, revokes and lists certificates; one per cloud core process (``services.parts["pki"]``)."""

    def __init__(
        self,
        settings: PkiSettings,
        authority: CertificateAuthority,
        database: Database,
        bus: EventBus,
        *,
        retired: Sequence[CertificateAuthority] = (),
    ) -> None:
        self.settings = settings
        self.authorities = (authority, *retired)
        """The issuing CA, then the retired intermediates still valid (they sign CRLs for what they issued)."""
        self.database = database
        self.bus = bus
        self.chain_pem = authority.chain_pem().decode()
        self.public_limit = RateLimiter(settings.public_rate, settings.public_burst)
        """Enrollment and renewal requests per client address (the API answers 429 past it)."""
        self._crl: _CachedCrl | None = None

    @property
    def authority(self) -> CertificateAuthority:
        """The issuing CA: the one that signs."""
        return self.authorities[0]

    @property
    def validity(self) -> timedelta:
        return timedelta(seconds=self.settings.certificate_validity)

    # ------------------------------------------------------------------ tokens

    async def create_token(
        self, kind: str, owner_id: str, *, ttl: float | None, created_by: str
    ) -> enrollment.NewToken:
        seconds = self.settings.token_ttl if ttl is None else ttl
        if not 0 < seconds <= self.settings.max_token_ttl:
            raise Problem(
                422,
                "Invalid request",
                f"ttl must be longer than zero and at most {self.settings.max_token_ttl:g}s (pki.max_token_ttl)",
                type="validation",
            )
        async with self.database.session() as session:
            if await session.get(OWNERS[kind], owner_id) is None:
                raise not_found(kind, owner_id)
            return enrollment.create_token(
                session, kind, owner_id, ttl=timedelta(seconds=seconds), created_by=created_by, now=_now()
            )

    # ------------------------------------------------------------------ signing

    async def enroll(self, token: str, csr_pem: str) -> Issued:
        """Sign ``csr_pem`` for the gateway or device the token was issued for; the token pays once."""
        csr = _parse_csr(csr_pem)
        now = _now()
        async with self.database.session() as session:
            row = await enrollment.usable_token(session, token, now)
            subject = _subject_cn(csr)
            if subject != row.owner_id:
                found = f"CN={subject}" if subject is not None else repr(csr.subject.rfc4514_string())
                raise EnrollmentRefused(
                    f"the token was issued for {row.kind} {row.owner_id}, the CSR's subject is {found}"
                )
            if await session.get(OWNERS[row.kind], row.owner_id) is None:
                raise EnrollmentRefused(f"{row.kind} {row.owner_id} is no longer registered")
            issued = self._sign(session, csr, row.kind, row.owner_id, now, via="enroll")
            await enrollment.consume(session, row, issued.row.serial, now)
        log.info(
            "certificate issued",
            extra={"kind": row.kind, "owner": row.owner_id, "serial": issued.row.serial, "via": "enroll"},
        )
        return issued

    async def renew(self, certificate_pem: str, csr_pem: str, signature: str) -> Issued:
        """A new certificate for the holder of a current one: the current certificate must be ours, on record,
        unrevoked and unexpired, and ``signature`` (base64) must verify over the new CSR's DER with its key."""
        current = _parse_certificate(certificate_pem)
        csr = _parse_csr(csr_pem)
        try:
            proof = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise RenewalRefused("the signature is not valid base64") from None
        if not any(_issued_by(current, authority) for authority in self.authorities):
            raise RenewalRefused(
                f"the current certificate (issuer {current.issuer.rfc4514_string()!r}) was not issued by "
                "this cloud's CA"
            )
        serial = serial_hex(current.serial_number)
        now = _now()
        async with self.database.session() as session:
            row = await session.get(IssuedCertificate, serial)
            if row is None or row.fingerprint != _fingerprint(current):
                raise RenewalRefused(f"certificate {serial} is not on record")
            if row.revoked_at is not None:
                raise RenewalRefused(
                    f"certificate {serial} was revoked at {_when(row.revoked_at)} ({row.reason}); "
                    "it cannot be renewed"
                )
            if as_utc(row.not_after) <= now:
                raise RenewalRefused(
                    f"certificate {serial} expired at {_when(row.not_after)}; enroll again with a new token"
                )
            if not _verify_proof(current, proof, csr.public_bytes(serialization.Encoding.DER)):
                raise RenewalRefused(
                    "the signature over the new CSR does not verify with the current certificate's key "
                    "(no proof of possession)"
                )
            issued = self._sign(session, csr, row.kind, row.owner_id, now, via="renew", renewed_from=serial)
        log.info(
            "certificate renewed",
            extra={"kind": row.kind, "owner": row.owner_id, "serial": issued.row.serial, "from": serial},
        )
        return issued

    def _sign(
        self,
        session: AsyncSession,
        csr: x509.CertificateSigningRequest,
        kind: str,
        owner_id: str,
        now: datetime,
        *,
        via: str,
        renewed_from: str | None = None,
    ) -> Issued:
        try:
            check_csr(csr, expected_cn=owner_id)
        except CsrRejected as exc:
            raise CsrRefused(exc.reason) from None
        cert = self.authority.sign_csr(csr, common_name=owner_id, validity=self.validity, now=now)
        row = IssuedCertificate(
            serial=serial_hex(cert.serial_number),
            subject=cert.subject.rfc4514_string(),
            kind=kind,
            owner_id=owner_id,
            fingerprint=_fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=now,
            issued_via=via,
            renewed_from=renewed_from,
        )
        session.add(row)
        return Issued(cert, row, self.chain_pem)

    # ------------------------------------------------------------------ revocation

    async def revoke_owner(
        self, kind: str, owner_id: str, reason: x509.ReasonFlags
    ) -> list[IssuedCertificate]:
        """Revoke every unexpired certificate of a gateway or device and its unused tokens; publishes
        ``gateway.revoked`` (``device.revoked``) when the transaction commits. Works for an owner deleted from
        the registry as long as certificates or tokens of it are on record."""
        now = _now()
        async with self.database.session() as session:
            known = await session.get(OWNERS[kind], owner_id) is not None
            rows = list(
                (
                    await session.execute(
                        select(IssuedCertificate).where(
                            IssuedCertificate.kind == kind,
                            IssuedCertificate.owner_id == owner_id,
                            IssuedCertificate.revoked_at.is_(None),
                            IssuedCertificate.not_after > now,
                        )
                    )
                ).scalars()
            )
            tokens = await enrollment.revoke_tokens(session, kind, owner_id, now)
            if not known and not rows and not tokens and not await _has_history(session, kind, owner_id):
                raise not_found(kind, owner_id)
            for row in rows:
                row.revoked_at, row.reason = now, reason.value
            queue_event(
                session,
                self.bus,
                GATEWAY_REVOKED if kind == "gateway" else DEVICE_REVOKED,
                {
                    kind: owner_id,
                    "serials": [r.serial for r in rows],
                    "reason": reason.value,
                    "tokens": tokens,
                },
            )
        log.warning(
            "certificates revoked",
            extra={
                "kind": kind,
                "owner": owner_id,
                "serials": [r.serial for r in rows],
                "reason": reason.value,
            },
        )
        return rows

    async def revoke_serial(self, serial: str, reason: x509.ReasonFlags) -> IssuedCertificate:
        """Revoke one certificate (idempotent: a revoked one keeps its first date and reason)."""
        now = _now()
        async with self.database.session() as session:
            row = await session.get(IssuedCertificate, _normal_serial(serial))
            if row is None:
                raise CertificateNotFound(f"no certificate with serial {serial!r}")
            if row.revoked_at is None:
                row.revoked_at, row.reason = now, reason.value
                queue_event(
                    session,
                    self.bus,
                    CERTIFICATE_REVOKED,
                    {"serial": row.serial, "kind": row.kind, "owner": row.owner_id, "reason": reason.value},
                )
                log.warning("certificate revoked", extra={"serial": row.serial, "reason": reason.value})
        return row

    async def list_certificates(
        self, *, owner: str | None, kind: str | None, revoked: bool | None, limit: int
    ) -> list[IssuedCertificate]:
        query = select(IssuedCertificate).order_by(IssuedCertificate.issued_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(IssuedCertificate.owner_id == owner)
        if kind is not None:
            query = query.where(IssuedCertificate.kind == kind)
        if revoked is not None:
            column = IssuedCertificate.revoked_at
            query = query.where(column.is_not(None) if revoked else column.is_(None))
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    async def crl(self) -> tuple[x509.CertificateRevocationList, ...]:
        """The CRLs of every revoked certificate that has not expired, one signed by each issuing intermediate (the
        current one's first; serials are random, so each listing them all is harmless). They are rebuilt (in a
        thread: signing 10,000 entries takes a good part of a second) when the revocations changed or a quarter
        of ``crl_next_update`` has passed; otherwise one cheap count query answers."""
        now = _now()
        current = and_(IssuedCertificate.revoked_at.is_not(None), IssuedCertificate.not_after > now)
        next_update = timedelta(seconds=self.settings.crl_next_update)
        async with self.database.session() as session:
            count, latest = (
                await session.execute(
                    select(func.count(), func.max(IssuedCertificate.revoked_at)).where(current)
                )
            ).one()
            state = (int(count), as_utc(latest) if latest is not None else None)
            cached = self._crl
            if cached is not None and cached.state == state and now - cached.built < next_update / 4:
                return cached.crls
            rows = (
                await session.execute(
                    select(IssuedCertificate.serial, IssuedCertificate.revoked_at, IssuedCertificate.reason)
                    .where(current)
                    .order_by(IssuedCertificate.revoked_at)
                )
            ).all()
        entries = [
            RevokedCertificate(int(serial, 16), as_utc(when), x509.ReasonFlags(reason or "unspecified"))
            for serial, when, reason in rows
        ]
        crls = await asyncio.to_thread(
            lambda: tuple(a.build_crl(entries, next_update=next_update, now=now) for a in self.authorities)
        )
        self._crl = _CachedCrl(state, now, crls)
        return crls


@asynccontextmanager
async def open_pki(settings: CloudSettings, database: Database, bus: EventBus) -> AsyncIterator[PkiService]:
    """Load the issuing CA (creating one in development when the directory has none) and serve with it."""
    authority, *retired = await asyncio.to_thread(_authorities, settings)
    yield PkiService(settings.pki, authority, database, bus, retired=retired)


def _authorities(settings: CloudSettings) -> list[CertificateAuthority]:
    """The issuing CA, then the retired intermediates still valid."""
    directory = settings.pki_dir
    if not (directory / "intermediate.pem").exists() and settings.environment == "development":
        log.warning("no CA in %s: creating one (development only; root key unencrypted)", directory)
        return [create_authority(directory)]
    try:
        return issuing_authorities(directory, _now())
    except CaError as exc:
        raise CaError(f"{exc} (pki.ca_dir)") from exc


def _issued_by(certificate: x509.Certificate, authority: CertificateAuthority) -> bool:
    try:
        certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


async def _has_history(session: AsyncSession, kind: str, owner_id: str) -> bool:
    for model in (IssuedCertificate, EnrollmentToken):
        found = await session.execute(
            select(model.owner_id).where(model.kind == kind, model.owner_id == owner_id).limit(1)
        )
        if found.first() is not None:
            return True
    return False


def _parse_csr(text: str) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(text.encode())
    except ValueError as exc:
        raise CsrRefused(f"the csr is not a readable PEM certificate signing request ({exc})") from None


def _parse_certificate(text: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError as exc:
        raise RenewalRefused(f"the certificate is not a readable PEM certificate ({exc})") from None


def _subject_cn(csr: x509.CertificateSigningRequest) -> str | None:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    return value if isinstance(value, str) else None


def _verify_proof(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _normal_serial(serial: str) -> str:
    """``0x1A2b`` / ``1a:2b`` / ``001A2B`` → ``1a2b`` (the stored form); other text is left to miss."""
    text = serial.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return serial_hex(int(text, 16))
    except ValueError:
        return text


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")
