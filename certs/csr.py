"""Certificate signing requests: made on the gateway (its key never leaves it), checked by the CA before it signs.

The CA copies nothing from a CSR but its public key: subject, extensions and validity come from the CA's profile,
so requested extensions are ignored rather than trusted."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs.errors import CertificateFileError, CsrRejected
from certs.keys import PrivateKey, describe_key
from fieldline.wire import valid_id

ACCEPTED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048


def make_csr(key: PrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """A CSR whose subject is exactly ``CN=common_name``, signed with ``key`` (SHA-256)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def check_csr(csr: x509.CertificateSigningRequest, *, expected_cn: str) -> None:
    """Accept ``csr`` only if its signature verifies with its own key, its subject is exactly
    ``CN=expected_cn`` and its key is EC P-256/P-384 or RSA of at least 2048 bits; otherwise raise
    :class:`CsrRejected` whose ``reason`` says which check failed and what was found."""
    if not csr.is_signature_valid:
        raise CsrRejected(
            "the CSR's signature does not verify with its public key (corrupted or forged request)"
        )
    attributes = list(csr.subject)
    if not attributes:
        raise CsrRejected(f"the CSR's subject is empty; expected exactly CN={expected_cn}")
    names = [a for a in attributes if a.oid == NameOID.COMMON_NAME]
    if len(names) != 1:
        raise CsrRejected(
            f"the CSR's subject {csr.subject.rfc4514_string()!r} has {len(names)} common names; "
            f"expected exactly CN={expected_cn}"
        )
    if not valid_id(expected_cn):
        raise CsrRejected(
            f"the expected common name {expected_cn!r} is not a valid Fieldline id (letters, digits, '.', '_', ':', "
            "'-', at most 128, starting with a letter or digit); it becomes the MQTT username in ACL topic patterns"
        )
    if names[0].value != expected_cn:
        raise CsrRejected(f"the CSR's subject CN is {names[0].value!r}; expected {expected_cn!r}")
    extra = [a for a in attributes if a.oid != NameOID.COMMON_NAME]
    if extra:
        listed = ", ".join(a.rfc4514_string() for a in extra)
        raise CsrRejected(
            f"the CSR's subject carries attributes besides CN ({listed}); expected exactly CN={expected_cn}"
        )
    _check_key(csr.public_key())


def _check_key(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            raise CsrRejected(
                f"the CSR's key is {describe_key(key)}; accepted keys are EC P-256, EC P-384 or RSA >= 2048"
            )
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejected(
                f"the CSR's key is RSA {key.key_size}, too short: RSA keys need at least {MIN_RSA_BITS} bits"
            )
        return
    raise CsrRejected(
        f"the CSR's key is {describe_key(key)}; accepted keys are EC P-256, EC P-384 or RSA >= 2048"
    )


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    """A CSR from a PEM (or DER) file; unreadable content raises :class:`CertificateFileError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateFileError(exc.strerror or str(exc), path=path) from exc
    return parse_csr(data, path=path)


def parse_csr(data: bytes, *, path: Path | None = None) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER bytes; raises :class:`CsrRejected` (or :class:`CertificateFileError` with ``path``)
    when the bytes are not a CSR."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        if path is not None:
            raise CertificateFileError(f"not a certificate signing request ({exc})", path=path) from exc
        raise CsrRejected(f"the request is not a readable PEM or DER CSR ({exc})") from exc
