"""The CLI's registry of what a CA directory issued and revoked: ``index.json`` beside the CA files and a copy of
every issued certificate under ``issued/<SERIAL>.pem``. Every write is atomic (temporary file, fsync, rename).

The cloud core keeps the same facts in its database and uses only :class:`certs.CertificateAuthority`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ValidationError

from certs.authority import RevokedCertificate, crl_number_at
from certs.crl import REASONS, parse_reason, reason_name
from certs.errors import CertsError, StoreError
from certs.keys import write_atomic, write_pem

INDEX = "index.json"
ISSUED_DIR = "issued"


class IssuedRecord(BaseModel):
    serial: str
    """Upper-case hexadecimal, as ``openssl x509 -serial`` prints it."""
    common_name: str
    profile: Literal["client", "server"]
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)


class StoreIndex(BaseModel):
    certificates: list[IssuedRecord] = []
    last_crl_number: int = 0


def format_serial(serial: int) -> str:
    return f"{serial:X}"


def parse_serial(text: str) -> int:
    """A serial in hexadecimal as ``openssl`` and ``inspect`` print it (``4F1A…``, ``4f:1a:…`` or ``0x4f1a…``)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(cleaned, 16)
    except ValueError:
        raise CertsError(f"{text!r} is not a hexadecimal serial number (as `inspect` prints it)") from None


class CertificateStore:
    """``index.json`` of one CA directory, loaded in memory; each change is written back at once."""

    def __init__(self, directory: Path, index: StoreIndex) -> None:
        self.directory = directory
        self.index = index

    @property
    def path(self) -> Path:
        return self.directory / INDEX

    @classmethod
    def open(cls, directory: Path) -> CertificateStore:
        path = directory / INDEX
        if not path.exists():
            return cls(directory, StoreIndex())
        try:
            return cls(directory, StoreIndex.model_validate_json(path.read_bytes()))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StoreError(f"corrupt registry: {where}: {first['msg']}", path=path) from None
        except OSError as exc:
            raise StoreError(exc.strerror or str(exc), path=path) from exc

    def add(self, cert: x509.Certificate, profile: Literal["client", "server"]) -> IssuedRecord:
        """Keep ``cert`` (a copy under ``issued/``) and its record."""
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        record = IssuedRecord(
            serial=format_serial(cert.serial_number),
            common_name=str(names[0].value) if names else "",
            profile=profile,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
        write_pem(self.directory / ISSUED_DIR / f"{record.serial}.pem", cert)
        self.index.certificates.append(record)
        self._save()
        return record

    def find(self, serial: int) -> IssuedRecord | None:
        return next((r for r in self.index.certificates if r.serial_number == serial), None)

    def revoke(self, serial: int, reason: str, now: datetime | None = None) -> IssuedRecord:
        """Mark ``serial`` revoked for ``reason`` (an RFC 5280 name); unknown or already revoked serials raise."""
        flag = parse_reason(reason)
        record = self.find(serial)
        if record is None:
            raise StoreError(
                f"no certificate with serial {format_serial(serial)} was issued here", path=self.path
            )
        if record.revoked_at is not None:
            raise StoreError(
                f"serial {record.serial} ({record.common_name}) is already revoked since "
                f"{record.revoked_at:%Y-%m-%d %H:%M} UTC ({record.reason})",
                path=self.path,
            )
        record.revoked_at = now or datetime.now(UTC)
        record.reason = reason_name(flag)
        self._save()
        return record

    def revoked(self) -> list[RevokedCertificate]:
        return [
            RevokedCertificate(r.serial_number, r.revoked_at, REASONS[r.reason or "unspecified"])
            for r in self.index.certificates
            if r.revoked_at is not None
        ]

    def next_crl_number(self, now: datetime | None = None) -> int:
        """A CRL number above every one this directory handed out, and above the time-based numbers the cloud's
        ``build_crl`` default uses, so CRLs from either source keep increasing."""
        number = max(self.index.last_crl_number + 1, crl_number_at(now or datetime.now(UTC)))
        self.index.last_crl_number = number
        self._save()
        return number

    def _save(self) -> None:
        write_atomic(self.path, self.index.model_dump_json(indent=2).encode(), 0o644)
