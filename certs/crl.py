"""Certificate revocation lists: reason names as RFC 5280 spells them, reading PEM or DER, checking that a CRL
comes from our CA chain, and its CRL number."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import CertificateFileError, CertsError, CrlError

# RFC 5280 5.3.1 CRLReason names (``certificateHold``/``removeFromCRL`` are left out: revocation here is final).
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}


def parse_reason(name: str) -> x509.ReasonFlags:
    """The flag for an RFC 5280 reason name (case-insensitive: ``keyCompromise``, ``keycompromise``)."""
    for known, flag in REASONS.items():
        if known.lower() == name.lower():
            return flag
    raise CertsError(f"unknown revocation reason {name!r}; expected one of {', '.join(REASONS)}")


def reason_name(flag: x509.ReasonFlags) -> str:
    return next((name for name, known in REASONS.items() if known == flag), flag.value)


def crl_bytes(crl: x509.CertificateRevocationList, *, der: bool = False) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def parse_crl(data: bytes, *, source: str) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER bytes; anything else raises :class:`CrlError` naming ``source``."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"not a PEM or DER CRL ({exc})", source=source) from exc


def parse_crls(data: bytes, *, source: str) -> list[x509.CertificateRevocationList]:
    """Every CRL in PEM ``data`` (a broker's ``crlfile`` holds one per issuing intermediate), or the one DER CRL."""
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in data:
        return [parse_crl(data, source=source)]
    return [parse_crl(marker + block, source=source) for block in data.split(marker)[1:]]


def crl_bundle(crls: Sequence[x509.CertificateRevocationList]) -> bytes:
    """The CRLs one after the other in PEM (what Mosquitto's ``crlfile`` and OpenSSL read)."""
    return b"".join(crl_bytes(crl) for crl in crls)


def load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateFileError(exc.strerror or str(exc), path=path) from exc
    return parse_crl(data, source=str(path))


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The CRL number extension's value; a CRL without one counts as -1 (older than any numbered CRL)."""
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


def verify_crl(
    crl: x509.CertificateRevocationList, chain: Sequence[x509.Certificate], *, source: str
) -> None:
    """Accept ``crl`` only if a certificate of ``chain`` with the CRL's issuer name signed it."""
    issuers = [c for c in chain if c.subject == crl.issuer]
    if not issuers:
        raise CrlError(
            f"issued by {crl.issuer.rfc4514_string()!r}, which is not in the CA chain", source=source
        )
    for issuer in issuers:
        if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return
    raise CrlError("signature does not verify against the CA chain", source=source)


def revoked_serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {entry.serial_number for entry in crl}
