"""The CA, CSR checks and validity helpers, in process (no broker)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import certs
from certs import (
    CaError,
    CertificateAuthority,
    CertificateFileError,
    CsrRejected,
    RevokedCertificate,
    check_csr,
    create_authority,
    generate_key,
    load_authority,
    load_private_key,
    make_csr,
    needs_renewal,
    remaining_fraction,
)
from certs.crl import crl_number, parse_reason, verify_crl
from certs.errors import CrlError
from certs.validity import renewal_time


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return create_authority(tmp_path_factory.mktemp("ca") / "ca", root_passphrase=b"offline")


def _csr(key: object, *attributes: x509.NameAttribute) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(list(attributes)))
        .sign(key, hashes.SHA256())
    )  # type: ignore[arg-type]


def test_public_names() -> None:
    assert sorted(certs.__all__) == [
        "CaError", "CertificateAuthority", "CertificateFileError", "CertsError", "CrlError", "CsrRejected",
        "KeyKind", "PrivateKey", "RevokedCertificate", "StoreError", "check_csr", "create_authority",
        "generate_key", "load_authority", "load_certificates", "load_csr", "load_private_key", "make_csr",
        "needs_renewal", "remaining_fraction", "write_pem", "write_private_key",
    ]  # fmt: skip
    for name in certs.__all__:
        assert hasattr(certs, name), name


def test_root_and_intermediate_are_proper_cas(ca: CertificateAuthority) -> None:
    intermediate, root = ca.chain
    for cert, path_length in ((root, 1), (intermediate, 0)):
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert usage.crl_sign
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = intermediate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    intermediate.verify_directly_issued_by(root)


def test_key_files_are_private_and_the_root_key_is_encrypted(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    create_authority(directory, root_passphrase=b"offline", key_kind="rsa-3072")
    for name in ("root.key", "intermediate.key"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
    assert b"ENCRYPTED" in (directory / "root.key").read_bytes()
    with pytest.raises(CertificateFileError, match="a passphrase is needed"):
        load_private_key(directory / "root.key")
    with pytest.raises(CertificateFileError, match="wrong passphrase"):
        load_private_key(directory / "root.key", b"guess")
    assert isinstance(load_private_key(directory / "root.key", b"offline"), rsa.RSAPrivateKey)
    assert load_authority(directory).certificate.public_key().key_size == 3072  # type: ignore[union-attr]


def test_an_existing_ca_is_never_overwritten(tmp_path: Path) -> None:
    create_authority(tmp_path / "ca")
    before = (tmp_path / "ca" / "intermediate.key").read_bytes()
    with pytest.raises(CaError, match="refusing to overwrite"):
        create_authority(tmp_path / "ca")
    assert (tmp_path / "ca" / "intermediate.key").read_bytes() == before


def test_load_authority_refuses_mismatched_files(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="not a CA directory"):
        load_authority(tmp_path)
    create_authority(tmp_path / "a")
    create_authority(tmp_path / "b")
    (tmp_path / "a" / "intermediate.key").write_bytes((tmp_path / "b" / "intermediate.key").read_bytes())
    with pytest.raises(CaError, match="does not belong"):
        load_authority(tmp_path / "a")


def test_client_profile(ca: CertificateAuthority) -> None:
    key = generate_key()
    cert = ca.sign_csr(make_csr(key, "gw-1"), common_name="gw-1")
    assert cert.subject.rfc4514_string() == "CN=gw-1"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.certificate)


def test_server_profile_carries_the_sans(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_server("broker", [x509.DNSName("mqtt.example.com")])
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["mqtt.example.com"]
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    default, _ = ca.issue_server("cloud-api", [])
    assert default.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["cloud-api"]


def test_validity_never_outlives_the_intermediate(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_client("gw-1", validity=timedelta(days=100_000))
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_check_csr_accepts_the_expected_subject_and_keys() -> None:
    for key in (
        generate_key(),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(65537, 2048),
    ):
        check_csr(make_csr(key, "gw-1"), expected_cn="gw-1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        (
            [x509.NameAttribute(NameOID.COMMON_NAME, "gw-2")],
            "the CSR's subject CN is 'gw-2'; expected 'gw-1'",
        ),
        (
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil"),
                x509.NameAttribute(NameOID.COMMON_NAME, "gw-1"),
            ],
            "carries attributes besides CN (O=Evil)",
        ),
        ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil")], "has 0 common names"),
        ([], "subject is empty"),
    ],
)
def test_check_csr_refuses_wrong_subjects(attributes: list[x509.NameAttribute], reason: str) -> None:
    with pytest.raises(CsrRejected) as caught:
        check_csr(_csr(generate_key(), *attributes), expected_cn="gw-1")
    assert reason in caught.value.reason


def test_check_csr_refuses_weak_or_unusual_keys() -> None:
    with pytest.raises(CsrRejected, match="RSA 1024, too short: RSA keys need at least 2048 bits"):
        check_csr(make_csr(rsa.generate_private_key(65537, 1024), "gw-1"), expected_cn="gw-1")
    with pytest.raises(CsrRejected, match="EC P-521; accepted keys are"):
        check_csr(make_csr(ec.generate_private_key(ec.SECP521R1()), "gw-1"), expected_cn="gw-1")


def test_check_csr_refuses_a_bad_signature() -> None:
    der = bytearray(make_csr(generate_key(), "gw-1").public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # inside the signature value
    with pytest.raises(CsrRejected, match="signature does not verify"):
        check_csr(x509.load_der_x509_csr(bytes(der)), expected_cn="gw-1")


@pytest.mark.parametrize("name", ["gw/1", "gw+", "#", "", "-gw"])
def test_check_csr_refuses_names_that_would_break_topic_patterns(name: str) -> None:
    with pytest.raises(CsrRejected, match="not a valid Fieldline id"):
        check_csr(
            _csr(generate_key(), x509.NameAttribute(NameOID.COMMON_NAME, name or "x")), expected_cn=name
        )


def test_sign_csr_checks_first(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRejected, match="expected 'gw-1'"):
        ca.sign_csr(make_csr(generate_key(), "gw-2"), common_name="gw-1")


def test_crl_lists_revocations_with_reasons_and_growing_numbers(ca: CertificateAuthority) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # X.509 times have whole seconds
    first = ca.build_crl([], now=now)
    second = ca.build_crl(
        [RevokedCertificate(42, now, parse_reason("keyCompromise")), RevokedCertificate(43, now)],
        now=now + timedelta(seconds=1),
        next_update=timedelta(hours=6),
    )
    assert crl_number(second) > crl_number(first)
    assert second.next_update_utc == now + timedelta(seconds=1, hours=6)
    entry = second.get_revoked_certificate_by_serial_number(42)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    unspecified = second.get_revoked_certificate_by_serial_number(43)
    assert unspecified is not None
    assert len(unspecified.extensions) == 0
    verify_crl(second, ca.chain, source="test")


def test_verify_crl_refuses_another_cas_crl(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = create_authority(tmp_path / "other", organization="Elsewhere")
    with pytest.raises(CrlError, match="not in the CA chain"):
        verify_crl(other.build_crl([]), ca.chain, source="test")
    same_name = create_authority(tmp_path / "same-name")
    with pytest.raises(CrlError, match="signature does not verify"):
        verify_crl(same_name.build_crl([]), ca.chain, source="test")


def test_validity_fraction_and_renewal_threshold(ca: CertificateAuthority) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    cert, _ = ca.issue_client("gw-1", validity=timedelta(days=90), now=start)
    begin = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - begin
    assert remaining_fraction(cert, begin - timedelta(days=1)) == 1.0
    assert remaining_fraction(cert, begin + lifetime / 2) == pytest.approx(0.5)
    assert remaining_fraction(cert, cert.not_valid_after_utc + timedelta(days=1)) == 0.0
    assert not needs_renewal(cert, begin + lifetime / 2)
    assert needs_renewal(cert, begin + lifetime * 0.7)
    assert needs_renewal(cert, begin + lifetime / 2, threshold=0.6)
    assert renewal_time(cert) == cert.not_valid_after_utc - lifetime / 3
