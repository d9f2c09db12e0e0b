"""Human summaries of PKI files: a certificate (or a chain), a CSR or a CRL, as labelled rows for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.authority import CertificateAuthority
from certs.crl import crl_number, reason_name
from certs.errors import CertificateFileError
from certs.keys import describe_key
from certs.store import CertificateStore, format_serial
from certs.validity import remaining_fraction

E = TypeVar("E", bound=x509.ExtensionType)
EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


@dataclass
class Summary:
    """One object found in a file: what it is and its labelled facts."""

    kind: str
    rows: list[tuple[str, str]] = field(default_factory=list)


def describe_file(
    path: Path,
    *,
    now: datetime,
    authority: CertificateAuthority | None = None,
    store: CertificateStore | None = None,
) -> list[Summary]:
    """Summaries of every certificate, or the CSR, or the CRL in ``path`` (PEM or DER). With ``authority`` and
    ``store`` (``--dir``), certificates also say whether this CA issued and revoked them."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateFileError(exc.strerror or str(exc), path=path) from exc
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs = x509.load_pem_x509_certificates(data)
            return [describe_certificate(c, now=now, authority=authority, store=store) for c in certs]
        if b"-----BEGIN CERTIFICATE REQUEST-----" in data:
            return [describe_csr(x509.load_pem_x509_csr(data))]
        if b"-----BEGIN X509 CRL-----" in data:
            return [describe_crl(x509.load_pem_x509_crl(data), now=now)]
    except ValueError as exc:
        raise CertificateFileError(f"unreadable PEM ({exc})", path=path) from exc
    for parse in (
        lambda: describe_certificate(
            x509.load_der_x509_certificate(data), now=now, authority=authority, store=store
        ),
        lambda: describe_csr(x509.load_der_x509_csr(data)),
        lambda: describe_crl(x509.load_der_x509_crl(data), now=now),
    ):
        try:
            return [parse()]
        except ValueError:
            continue
    raise CertificateFileError("neither a certificate, a CSR nor a CRL (PEM or DER)", path=path)


def describe_certificate(
    cert: x509.Certificate,
    *,
    now: datetime,
    authority: CertificateAuthority | None = None,
    store: CertificateStore | None = None,
) -> Summary:
    ca = _extension(cert, x509.BasicConstraints)
    kind = "CA certificate" if ca is not None and ca.ca else "certificate"
    rows = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", format_serial(cert.serial_number)),
        ("key", describe_key(cert.public_key())),
        ("valid from", f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"),
        ("valid until", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({_left(cert, now)})"),
    ]
    sans = _extension(cert, x509.SubjectAlternativeName)
    if sans is not None:
        rows.append(("SANs", ", ".join(_general_name(n) for n in sans)))
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is not None:
        rows.append(("usage", ", ".join(EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)))
    if ca is not None and ca.ca:
        rows.append(("path length", "unlimited" if ca.path_length is None else str(ca.path_length)))
    if authority is not None:
        rows.append(("issued by this CA", _issued_by(cert, authority)))
    if store is not None:
        rows.append(("revoked", _revocation(cert, store)))
    return Summary(kind, rows)


def describe_csr(csr: x509.CertificateSigningRequest) -> Summary:
    return Summary(
        "certificate signing request",
        [
            ("subject", csr.subject.rfc4514_string() or "(empty)"),
            ("key", describe_key(csr.public_key())),
            ("signature", "valid" if csr.is_signature_valid else "INVALID"),
        ],
    )


def describe_crl(crl: x509.CertificateRevocationList, *, now: datetime) -> Summary:
    next_update = crl.next_update_utc
    rows = [
        ("issuer", crl.issuer.rfc4514_string()),
        ("CRL number", str(crl_number(crl))),
        ("this update", f"{crl.last_update_utc:%Y-%m-%d %H:%M} UTC"),
        (
            "next update",
            "none"
            if next_update is None
            else f"{next_update:%Y-%m-%d %H:%M} UTC ({_delta(next_update - now)})",
        ),
        ("revoked", str(len(crl))),
    ]
    for entry in crl:
        try:
            reason = reason_name(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason)
        except x509.ExtensionNotFound:
            reason = "unspecified"
        rows.append(
            (
                f"  {format_serial(entry.serial_number)}",
                f"{entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC, {reason}",
            )
        )
    return Summary("certificate revocation list", rows)


def _left(cert: x509.Certificate, now: datetime) -> str:
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    return f"{_delta(cert.not_valid_after_utc - now)}, {remaining_fraction(cert, now):.0%} of its life left"


def _delta(left: timedelta) -> str:
    if left.total_seconds() <= 0:
        return f"EXPIRED {_span(-left)} ago"
    return f"{_span(left)} left"


def _span(span: timedelta) -> str:
    if span.days >= 2:
        return f"{span.days} days"
    hours = int(span.total_seconds() // 3600)
    return f"{hours} h" if hours else f"{int(span.total_seconds() // 60)} min"


def _general_name(name: x509.GeneralName) -> str:
    prefix = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI"}.get(
        type(name), ""
    )
    return f"{prefix}:{name.value}" if prefix else str(name.value)


def _issued_by(cert: x509.Certificate, authority: CertificateAuthority) -> str:
    for issuer in authority.chain:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return f"yes ({issuer.subject.rfc4514_string()})"
    return "NO: not signed by this CA's intermediate or root"


def _revocation(cert: x509.Certificate, store: CertificateStore) -> str:
    record = store.find(cert.serial_number)
    if record is None:
        return "unknown to this CA's registry"
    if record.revoked_at is None:
        return "no"
    return f"YES, {record.revoked_at:%Y-%m-%d %H:%M} UTC ({record.reason})"


def _extension(cert: x509.Certificate, kind: type[E]) -> E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
