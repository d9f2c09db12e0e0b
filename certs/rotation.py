"""Rotating the issuing intermediate: the root (brought back online for the occasion) signs a new intermediate,
which issues from then on; the old one is kept under ``retired/`` so that the certificates it issued stay trusted
(it stays in ``chain.pem``) and revocable (it keeps signing its own CRL) until it expires.

Files: ``retired/intermediate-<SERIAL>.pem`` and ``.key`` (0600). ``chain.pem`` becomes the new intermediate, every
retired intermediate still valid, then the root; brokers and clients reading it trust both generations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certs.authority import (
    CHAIN,
    INTERMEDIATE_CERT,
    INTERMEDIATE_KEY,
    ROOT_KEY,
    CertificateAuthority,
    ca_certificate,
    ca_name,
    load_authority,
    load_issuer,
)
from certs.errors import CaError, CertificateFileError
from certs.keys import generate_key, load_certificates, load_private_key, write_pem, write_private_key

RETIRED_DIR = "retired"


def rotate_intermediate(
    directory: Path,
    *,
    root_passphrase: bytes | None = None,
    validity: timedelta = timedelta(days=1825),
    now: datetime | None = None,
) -> CertificateAuthority:
    """Retire the current intermediate and make a new one signed by the root (whose key must be in
    ``directory``, unlocked by ``root_passphrase``). Returns the new issuing CA."""
    now = now or datetime.now(UTC)
    current = load_authority(directory)
    root = current.root
    if not (directory / ROOT_KEY).exists():
        raise CaError(
            "root.key is not here: bring the offline root key back to sign a new intermediate", path=directory
        )
    try:
        root_key = load_private_key(directory / ROOT_KEY, root_passphrase)
    except CertificateFileError as exc:
        raise CaError(str(exc), path=directory) from exc
    if root_key.public_key().public_numbers() != root.public_key().public_numbers():  # type: ignore[union-attr]
        raise CaError("root.key does not belong to root.pem", path=directory)
    retired = directory / RETIRED_DIR
    stem = f"intermediate-{current.certificate.serial_number:X}"
    write_private_key(retired / f"{stem}.key", current.key)
    write_pem(retired / f"{stem}.pem", current.certificate)
    generation = len(list(retired.glob("intermediate-*.pem"))) + 1
    organizations = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    organization = str(organizations[0].value) if organizations else "Fieldline"
    key = generate_key("rsa-3072" if isinstance(current.key, rsa.RSAPrivateKey) else "ec-p256")
    name = ca_name(organization, f"{organization} Issuing CA {generation}")
    not_after = min(now + validity, root.not_valid_after_utc)
    intermediate = ca_certificate(name, key, root.subject, root_key, root, 0, now, not_after)
    trusted = [a.certificate for a in retired_authorities(directory, now)]
    write_private_key(directory / INTERMEDIATE_KEY, key)
    write_pem(directory / INTERMEDIATE_CERT, intermediate)
    write_pem(directory / CHAIN, intermediate, *trusted, root)
    return CertificateAuthority(certificate=intermediate, key=key, chain=[intermediate, *trusted, root])


def retired_authorities(directory: Path, now: datetime) -> list[CertificateAuthority]:
    """Retired intermediates that have not expired (they still sign CRLs for what they issued)."""
    root = load_certificates(directory / "root.pem")[0]
    found = []
    for cert_file in sorted((directory / RETIRED_DIR).glob("intermediate-*.pem")):
        authority = load_issuer(cert_file, cert_file.with_suffix(".key"), root)
        if authority.certificate.not_valid_after_utc > now:
            found.append(authority)
    return found


def issuing_authorities(directory: Path, now: datetime) -> list[CertificateAuthority]:
    """The current issuing CA first, then every retired one still valid: one CRL each goes into ``crlfile``."""
    return [load_authority(directory), *retired_authorities(directory, now)]
