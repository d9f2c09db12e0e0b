"""The certificate authority: an offline root that signs one issuing intermediate, and the intermediate that signs
every server, client and device certificate and the CRL.

Files in a CA directory (all PEM): ``root.pem``, ``root.key`` (encrypted when a passphrase is given: the root is
meant to go offline), ``intermediate.pem``, ``intermediate.key`` (mode 0600; the issuing key, used without a
passphrase by whatever signs), ``chain.pem`` (intermediate then root: the ``cafile`` of brokers and clients)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.csr import check_csr, make_csr
from certs.errors import CaError, CertificateFileError
from certs.keys import (
    KeyKind,
    PrivateKey,
    generate_key,
    load_certificates,
    load_private_key,
    write_pem,
    write_private_key,
)

Profile = Literal["client", "server"]
ROOT_CERT, ROOT_KEY = "root.pem", "root.key"
INTERMEDIATE_CERT, INTERMEDIATE_KEY = "intermediate.pem", "intermediate.key"
CHAIN = "chain.pem"
CA_FILES = (ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY, CHAIN)
# Issued certificates start a little in the past so that a peer whose clock lags still accepts them.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class RevokedCertificate:
    """One CRL entry."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


@dataclass
class CertificateAuthority:
    """The issuing (intermediate) CA: its certificate and key, and the chain ``[intermediate, root]``."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        common_name: str,
        profile: Profile = "client",
        validity: timedelta = timedelta(days=90),
        sans: Sequence[x509.GeneralName] = (),
        serial: int | None = None,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """Sign ``csr`` after :func:`check_csr` accepted it for ``common_name``. Only the CSR's public key is
        used. ``client``: EKU clientAuth, subject ``CN=common_name``, no SAN. ``server``: EKU serverAuth and
        ``sans`` (``DNS:common_name`` when none is given, since TLS clients match names against SANs only).
        The validity never reaches past the intermediate's own ``notAfter``."""
        check_csr(csr, expected_cn=common_name)
        now = now or datetime.now(UTC)
        public_key = csr.public_key()
        not_after = min(now + validity, self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(public_key), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(_authority_key_id(self.certificate), critical=False)
        )
        if profile == "server":
            names = list(sans) or [x509.DNSName(common_name)]
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            ).add_extension(x509.SubjectAlternativeName(names), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(
        self,
        name: str,
        sans: Sequence[x509.GeneralName],
        *,
        key_kind: KeyKind = "ec-p256",
        validity: timedelta = timedelta(days=397),
        now: datetime | None = None,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A new key and a server certificate for it (the broker, the cloud API)."""
        key = generate_key(key_kind)
        cert = self.sign_csr(
            make_csr(key, name), common_name=name, profile="server", validity=validity, sans=sans, now=now
        )
        return cert, key

    def issue_client(
        self,
        name: str,
        *,
        key_kind: KeyKind = "ec-p256",
        validity: timedelta = timedelta(days=90),
        now: datetime | None = None,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A new key and a client certificate ``CN=name`` (the cloud core's MQTT identity, tests)."""
        key = generate_key(key_kind)
        cert = self.sign_csr(
            make_csr(key, name), common_name=name, profile="client", validity=validity, now=now
        )
        return cert, key

    def build_crl(
        self,
        revoked: Iterable[RevokedCertificate],
        *,
        next_update: timedelta = timedelta(days=1),
        now: datetime | None = None,
        number: int | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL signed by the intermediate listing ``revoked``, valid until ``now + next_update``. Its CRL number
        is ``number`` or, by default, ``now`` in microseconds since the epoch: it grows from one CRL to the next
        without shared state, so stateless cloud replicas can each build one."""
        now = now or datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + next_update)
            .add_extension(
                x509.CRLNumber(number if number is not None else crl_number_at(now)), critical=False
            )
            .add_extension(_authority_key_id(self.certificate), critical=False)
        )
        for entry in revoked:
            item = (
                x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
            )
            if entry.reason != x509.ReasonFlags.unspecified:
                # RFC 5280 5.3.1: the reasonCode "unspecified" SHOULD be left out.
                item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
            builder = builder.add_revoked_certificate(item.build())
        return builder.sign(self.key, hashes.SHA256())

    def chain_pem(self) -> bytes:
        """The chain as PEM: intermediate, then root."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def crl_number_at(now: datetime) -> int:
    return int(now.timestamp() * 1_000_000)


def create_authority(
    directory: Path,
    *,
    key_kind: KeyKind = "ec-p256",
    organization: str = "Fieldline",
    root_passphrase: bytes | None = None,
    root_validity: timedelta = timedelta(days=3650),
    intermediate_validity: timedelta = timedelta(days=1825),
    now: datetime | None = None,
) -> CertificateAuthority:
    """Make a root CA and an issuing intermediate in ``directory`` (created if needed) and return the
    intermediate. Refuses (:class:`CaError`) when any CA file is already there."""
    existing = [name for name in CA_FILES if (directory / name).exists()]
    if existing:
        raise CaError(
            f"a CA already exists here ({', '.join(existing)}); refusing to overwrite it", path=directory
        )
    now = now or datetime.now(UTC)
    root_key = generate_key(key_kind)
    root_name = ca_name(organization, f"{organization} Root CA")
    root = ca_certificate(root_name, root_key, root_name, root_key, None, 1, now, now + root_validity)
    key = generate_key(key_kind)
    name = ca_name(organization, f"{organization} Issuing CA 1")
    not_after = min(now + intermediate_validity, root.not_valid_after_utc)
    intermediate = ca_certificate(name, key, root_name, root_key, root, 0, now, not_after)
    directory.mkdir(parents=True, exist_ok=True)
    write_private_key(directory / ROOT_KEY, root_key, root_passphrase)
    write_pem(directory / ROOT_CERT, root)
    write_private_key(directory / INTERMEDIATE_KEY, key)
    write_pem(directory / INTERMEDIATE_CERT, intermediate)
    write_pem(directory / CHAIN, intermediate, root)
    return CertificateAuthority(certificate=intermediate, key=key, chain=[intermediate, root])


def load_authority(directory: Path) -> CertificateAuthority:
    """The issuing CA from ``directory`` (``intermediate.pem``, ``intermediate.key``, ``root.pem``, and
    ``chain.pem`` for intermediates retired by a rotation but still trusted); the root key is never read. Missing
    or mismatched files raise :class:`CaError`."""
    if not (directory / INTERMEDIATE_CERT).exists():
        raise CaError(
            "not a CA directory (no intermediate.pem); create one with `fieldline certs init`", path=directory
        )
    try:
        root = load_certificates(directory / ROOT_CERT)[0]
        chain = load_certificates(directory / CHAIN)
    except CertificateFileError as exc:
        raise CaError(str(exc), path=directory) from exc
    authority = load_issuer(directory / INTERMEDIATE_CERT, directory / INTERMEDIATE_KEY, root)
    retired = [c for c in chain[1:-1] if c != authority.certificate]
    authority.chain = [authority.certificate, *retired, root]
    return authority


def load_issuer(cert_file: Path, key_file: Path, root: x509.Certificate) -> CertificateAuthority:
    """An intermediate's certificate and key, checked to belong together and to be signed by ``root``."""
    try:
        intermediate = load_certificates(cert_file)[0]
        key = load_private_key(key_file)
    except CertificateFileError as exc:
        raise CaError(str(exc), path=cert_file.parent) from exc
    if _public_der(key.public_key()) != _public_der(intermediate.public_key()):
        raise CaError(f"{key_file.name} does not belong to {cert_file.name}", path=cert_file.parent)
    try:
        intermediate.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaError(
            f"{cert_file.name} is not signed by root.pem ({type(exc).__name__})", path=cert_file.parent
        ) from exc
    return CertificateAuthority(certificate=intermediate, key=key, chain=[intermediate, root])


def ca_name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ca_certificate(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    issuer_cert: x509.Certificate | None,
    path_length: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = (
        _authority_key_id(issuer_cert)
        if issuer_cert is not None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _leaf_key_usage(public_key: object) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
