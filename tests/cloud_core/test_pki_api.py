"""The PKI API over real HTTP (SQLite): enrollment tokens, enrollment and its every refusal, renewal by proof of
possession, revocation, and the CRL and CA chain as OpenSSL reads them."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from certs import PrivateKey, create_authority, generate_key, make_csr
from certs.crl import parse_crls
from certs.rotation import rotate_intermediate
from cloud_core.models import EnrollmentToken
from cloud_core.pki import GATEWAY_REVOKED, PkiService
from cloud_core.settings import CloudSettings, DatabaseSettings
from tests.cloud_core.cloudkit import Cloud, postgres_database, running_cloud
from tests.servicekit import require_binary


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CloudSettings]:
    """A fresh cloud core's settings on each engine (PostgreSQL on 127.0.0.1:5432, skipped when absent)."""
    if request.param == "sqlite":
        yield CloudSettings(data_dir=tmp_path / "cloud")
        return
    async with postgres_database() as url:
        yield CloudSettings(data_dir=tmp_path / "cloud", database=DatabaseSettings(url=url))


@pytest.fixture
async def cloud(tmp_path: Path, backend: CloudSettings) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path, backend) as cloud:
        async with cloud.client("operator") as operator:
            for gateway in ("gw-1", "gw-2"):
                assert (await operator.post("/api/v1/gateways", json={"id": gateway})).status_code == 201
            assert (await operator.post("/api/v1/devices", json={"id": "dev-1"})).status_code == 201
        yield cloud


@pytest.fixture
async def anonymous(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with cloud.client(None) as client:
        yield client


def pem(value: x509.Certificate | x509.CertificateSigningRequest) -> str:
    return value.public_bytes(serialization.Encoding.PEM).decode()


def csr_for(key: PrivateKey, name: x509.Name | str) -> str:
    if isinstance(name, str):
        return pem(make_csr(key, name))
    return pem(x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()))


def proof(key: ec.EllipticCurvePrivateKey, csr: str) -> str:
    der = x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(key.sign(der, ec.ECDSA(hashes.SHA256()))).decode()


async def token(cloud: Cloud, owner: str = "gw-1", kind: str = "gateways", **body: object) -> str:
    async with cloud.client("operator") as operator:
        answer = await operator.post(f"/api/v1/{kind}/{owner}/enrollment-tokens", json=body or None)
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


async def enroll(client: httpx.AsyncClient, token: str, csr: str) -> httpx.Response:
    return await client.post("/api/v1/pki/enroll", json={"token": token, "csr": csr})


def refused(answer: httpx.Response, status: int, problem: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == f"urn:fieldline:problem:{problem}"
    return body["detail"]


async def test_enrollment_issues_a_certificate_that_chains_to_the_ca(
    cloud: Cloud, anonymous: httpx.AsyncClient
) -> None:
    async with cloud.client("operator") as operator:
        created = await operator.post("/api/v1/gateways/gw-1/enrollment-tokens", json={"ttl": "2h"})
    assert created.status_code == 201
    body = created.json()
    assert body["kind"] == "gateway"
    assert body["owner_id"] == "gw-1"
    expires = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert expires == timedelta(hours=2)
    key = generate_key()
    answer = await enroll(anonymous, body["token"], csr_for(key, "gw-1"))
    assert answer.status_code == 201, answer.text
    issued = answer.json()
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    chain = x509.load_pem_x509_certificates(issued["chain"].encode())
    assert cert.subject.rfc4514_string() == "CN=gw-1"
    assert format(cert.serial_number, "x") == issued["serial"]
    cert.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(chain[1])
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    # the token is stored hashed, never as given
    async with cloud.services.database.session() as session:
        rows = (await session.execute(EnrollmentToken.__table__.select())).all()
    assert all(body["token"] not in str(row) for row in rows)
    async with cloud.client("admin") as admin:
        listed = (await admin.get("/api/v1/pki/certificates", params={"owner": "gw-1"})).json()
        audit = (await admin.get("/api/v1/audit", params={"resource": "pki/enroll"})).json()
    assert [c["serial"] for c in listed] == [issued["serial"]]
    assert listed[0]["issued_via"] == "enroll"
    assert listed[0]["revoked_at"] is None
    assert audit["items"][0]["status_code"] == 201


async def test_tokens_need_an_operator_and_a_registered_owner(cloud: Cloud) -> None:
    async with cloud.client(None) as anonymous:
        assert (await anonymous.post("/api/v1/gateways/gw-1/enrollment-tokens")).status_code == 401
    async with cloud.client("viewer") as viewer:
        assert (await viewer.post("/api/v1/gateways/gw-1/enrollment-tokens")).status_code == 403
    async with cloud.client("operator") as operator:
        assert (await operator.post("/api/v1/gateways/gw-9/enrollment-tokens")).status_code == 404
        too_long = await operator.post("/api/v1/gateways/gw-1/enrollment-tokens", json={"ttl": "90d"})
        assert "at most" in refused(too_long, 422, "validation")


async def test_a_used_token_is_refused_with_when_it_was_used(
    cloud: Cloud, anonymous: httpx.AsyncClient
) -> None:
    secret = await token(cloud)
    first = await enroll(anonymous, secret, csr_for(generate_key(), "gw-1"))
    assert first.status_code == 201
    again = await enroll(anonymous, secret, csr_for(generate_key(), "gw-1"))
    detail = refused(again, 403, "enrollment-refused")
    assert detail.startswith("the enrollment token was already used at ")
    assert first.json()["serial"] in detail


async def test_concurrent_enrollments_with_one_token_get_one_certificate(
    cloud: Cloud, anonymous: httpx.AsyncClient
) -> None:
    secret = await token(cloud)
    answers = await asyncio.gather(
        *(enroll(anonymous, secret, csr_for(generate_key(), "gw-1")) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [201] + [403] * 7
    for answer in answers:
        if answer.status_code == 403:
            assert "the enrollment token was " in refused(answer, 403, "enrollment-refused")
    async with cloud.client("admin") as admin:
        assert len((await admin.get("/api/v1/pki/certificates")).json()) == 1


async def test_an_expired_token_is_refused(cloud: Cloud, anonymous: httpx.AsyncClient) -> None:
    secret = await token(cloud)
    async with cloud.services.database.session() as session:
        await session.execute(
            update(EnrollmentToken).values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    answer = await enroll(anonymous, secret, csr_for(generate_key(), "gw-1"))
    assert refused(answer, 403, "enrollment-refused").startswith("the enrollment token expired at ")


async def test_unknown_token_and_token_for_another_gateway(
    cloud: Cloud, anonymous: httpx.AsyncClient
) -> None:
    unknown = await enroll(anonymous, "flenr_nothing", csr_for(generate_key(), "gw-1"))
    assert "not recognised" in refused(unknown, 403, "enrollment-refused")
    secret = await token(cloud, "gw-2")
    answer = await enroll(anonymous, secret, csr_for(generate_key(), "gw-1"))
    assert (
        refused(answer, 403, "enrollment-refused")
        == "the token was issued for gateway gw-2, the CSR's subject is CN=gw-1"
    )
    # a refused attempt does not consume the token
    assert (await enroll(anonymous, secret, csr_for(generate_key(), "gw-2"))).status_code == 201


async def test_csr_with_a_wrong_subject_or_a_bad_signature_is_refused(
    cloud: Cloud, anonymous: httpx.AsyncClient
) -> None:
    secret = await token(cloud)
    key = generate_key()
    extra = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gw-1"),
        ]
    )
    wrong = await enroll(anonymous, secret, csr_for(key, extra))
    assert "attributes besides CN (O=Acme)" in refused(wrong, 422, "csr-rejected")
    der = bytearray(make_csr(key, "gw-1").public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    forged = pem(x509.load_der_x509_csr(bytes(der)))
    bad = await enroll(anonymous, secret, forged)
    assert refused(bad, 422, "csr-rejected").startswith("the CSR's signature does not verify")
    short = await enroll(anonymous, secret, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    assert "not a readable PEM" in refused(short, 422, "csr-rejected")
    weak = await enroll(anonymous, secret, csr_for(ec.generate_private_key(ec.SECP192R1()), "gw-1"))
    assert "accepted keys are" in refused(weak, 422, "csr-rejected")
    assert (await enroll(anonymous, secret, csr_for(key, "gw-1"))).status_code == 201


async def test_devices_enroll_with_their_own_tokens(cloud: Cloud, anonymous: httpx.AsyncClient) -> None:
    secret = await token(cloud, "dev-1", "devices")
    answer = await enroll(anonymous, secret, csr_for(generate_key(), "dev-1"))
    assert answer.status_code == 201
    async with cloud.client("admin") as admin:
        listed = (await admin.get("/api/v1/pki/certificates", params={"kind": "device"})).json()
    assert [(c["owner_id"], c["kind"]) for c in listed] == [("dev-1", "device")]


async def enrolled(
    cloud: Cloud, anonymous: httpx.AsyncClient, owner: str = "gw-1"
) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = generate_key()
    answer = await enroll(anonymous, await token(cloud, owner), csr_for(key, owner))
    assert answer.status_code == 201
    return key, answer.json()["certificate"]  # type: ignore[return-value]


async def renew(client: httpx.AsyncClient, cert: str, csr: str, signature: str) -> httpx.Response:
    return await client.post(
        "/api/v1/pki/renew", json={"certificate": cert, "csr": csr, "signature": signature}
    )


async def test_renewal_with_proof_of_possession(cloud: Cloud, anonymous: httpx.AsyncClient) -> None:
    key, cert = await enrolled(cloud, anonymous)
    new_key = generate_key()
    csr = csr_for(new_key, "gw-1")
    answer = await renew(anonymous, cert, csr, proof(key, csr))
    assert answer.status_code == 201, answer.text
    old_serial = format(x509.load_pem_x509_certificate(cert.encode()).serial_number, "x")
    async with cloud.client("admin") as admin:
        listed = (await admin.get("/api/v1/pki/certificates", params={"owner": "gw-1"})).json()
    renewed = next(c for c in listed if c["serial"] == answer.json()["serial"])
    assert renewed["issued_via"] == "renew"
    assert renewed["renewed_from"] == old_serial
    # the old certificate stays valid: nobody is disconnected by a renewal
    assert all(c["revoked_at"] is None for c in listed)


async def test_renewal_refusals(cloud: Cloud, anonymous: httpx.AsyncClient, tmp_path: Path) -> None:
    key, cert = await enrolled(cloud, anonymous)
    csr = csr_for(generate_key(), "gw-1")
    wrong_key = await renew(anonymous, cert, csr, proof(generate_key(), csr))  # type: ignore[arg-type]
    assert "no proof of possession" in refused(wrong_key, 403, "renewal-refused")
    other = csr_for(generate_key(), "gw-2")
    stolen = await renew(anonymous, cert, other, proof(key, other))
    assert refused(stolen, 422, "csr-rejected") == "the CSR's subject CN is 'gw-2'; expected 'gw-1'"
    garbage = await renew(anonymous, cert, csr, "***")
    assert refused(garbage, 403, "renewal-refused") == "the signature is not valid base64"

    foreign_ca = create_authority(tmp_path / "other-ca")
    foreign, foreign_key = foreign_ca.issue_client("gw-1")
    outsider = await renew(anonymous, pem(foreign), csr, proof(foreign_key, csr))  # type: ignore[arg-type]
    assert "was not issued by this cloud's CA" in refused(outsider, 403, "renewal-refused")

    pki: PkiService = cloud.services.parts["pki"]
    old_key = generate_key()
    async with cloud.services.database.session() as session:
        expired = pki._sign(
            session,
            make_csr(old_key, "gw-1"),
            "gateway",
            "gw-1",
            datetime.now(UTC) - timedelta(days=200),
            via="enroll",
        )
    late = await renew(anonymous, expired.pem, csr, proof(old_key, csr))  # type: ignore[arg-type]
    assert f"certificate {expired.row.serial} expired at " in refused(late, 403, "renewal-refused")

    async with cloud.client("admin") as admin:
        serial = format(x509.load_pem_x509_certificate(cert.encode()).serial_number, "X")
        revoked = await admin.post(
            f"/api/v1/pki/certificates/0x{serial}/revoke", json={"reason": "superseded"}
        )
        assert revoked.status_code == 200
        assert revoked.json()["reason"] == "superseded"
        again = await admin.post(
            f"/api/v1/pki/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
        )
        assert again.json()["reason"] == "superseded"  # idempotent: the first reason stays
        assert (await admin.post("/api/v1/pki/certificates/abc/revoke")).status_code == 404
    after = await renew(anonymous, cert, csr, proof(key, csr))
    assert "was revoked at " in refused(after, 403, "renewal-refused")


async def test_revoking_a_gateway_publishes_the_crl_and_shuts_it_out(
    cloud: Cloud, anonymous: httpx.AsyncClient, tmp_path: Path
) -> None:
    key, cert = await enrolled(cloud, anonymous)
    _, other = await enrolled(cloud, anonymous, "gw-2")
    unused = await token(cloud)
    before = x509.load_pem_x509_crl((await anonymous.get("/api/v1/pki/crl")).content)
    assert len(before) == 0
    async with cloud.services.bus.subscribe(GATEWAY_REVOKED) as events:
        async with cloud.client("operator") as operator:
            assert (await operator.post("/api/v1/gateways/gw-1/revoke")).status_code == 403
        async with cloud.client("admin") as admin:
            answer = await admin.post("/api/v1/gateways/gw-1/revoke", json={"reason": "keyCompromise"})
            assert answer.status_code == 200, answer.text
            assert (await admin.post("/api/v1/gateways/gw-404/revoke")).status_code == 404
        event = events.queue.get_nowait()
    serial = x509.load_pem_x509_certificate(cert.encode()).serial_number
    assert [c["serial"] for c in answer.json()["revoked"]] == [format(serial, "x")]
    assert event.data == {
        "gateway": "gw-1",
        "serials": [format(serial, "x")],
        "reason": "keyCompromise",
        "tokens": 1,
    }

    pem_crl = await anonymous.get("/api/v1/pki/crl")
    der_crl = await anonymous.get("/api/v1/pki/crl", headers={"Accept": "application/pkix-crl"})
    chain = await anonymous.get("/api/v1/pki/ca")
    assert pem_crl.headers["content-type"] == "application/x-pem-file"
    assert der_crl.headers["content-type"] == "application/pkix-crl"
    intermediate, _root = x509.load_pem_x509_certificates(chain.content)
    for crl in (x509.load_pem_x509_crl(pem_crl.content), x509.load_der_x509_crl(der_crl.content)):
        assert crl.is_signature_valid(intermediate.public_key())  # type: ignore[arg-type]
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        assert (
            entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            is x509.ReasonFlags.key_compromise
        )
        assert (
            crl.get_revoked_certificate_by_serial_number(
                x509.load_pem_x509_certificate(other.encode()).serial_number
            )
            is None
        )

    openssl = require_binary("openssl")
    (tmp_path / "crl.der").write_bytes(der_crl.content)
    (tmp_path / "chain.pem").write_bytes(chain.content)
    command = [
        "crl",
        "-inform",
        "DER",
        "-in",
        str(tmp_path / "crl.der"),
        "-CAfile",
        str(tmp_path / "chain.pem"),
    ]
    checked = await asyncio.to_thread(
        subprocess.run, [openssl, *command, "-noout", "-text"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "verify OK" in checked.stderr + checked.stdout
    assert f"Serial Number: {serial:X}" in checked.stdout.replace("Serial Number: 0", "Serial Number: ")

    csr = csr_for(generate_key(), "gw-1")
    assert "was revoked at" in refused(
        await renew(anonymous, cert, csr, proof(key, csr)), 403, "renewal-refused"
    )
    old_token = await enroll(anonymous, unused, csr)
    assert "was revoked at" in refused(old_token, 403, "enrollment-refused")
    # re-enrolling needs a token an operator issues after the revocation (a replaced gateway)
    assert (await enroll(anonymous, await token(cloud), csr)).status_code == 201


async def test_ca_chain_is_public(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/api/v1/pki/ca")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pem-certificate-chain"
    assert len(x509.load_pem_x509_certificates(answer.content)) == 2


async def test_after_an_intermediate_rotation_both_generations_renew_and_are_revoked(tmp_path: Path) -> None:
    """``fieldline certs rotate-intermediate`` and a restart: the new intermediate signs, certificates of the
    retired one still renew, and the CRL is one per intermediate, each listing the revocations."""
    settings = CloudSettings(data_dir=tmp_path / "cloud")
    async with running_cloud(tmp_path, settings) as cloud:
        async with cloud.client("operator") as operator:
            assert (await operator.post("/api/v1/gateways", json={"id": "gw-1"})).status_code == 201
        async with cloud.client(None) as anonymous:
            old_key, old_cert = await enrolled(cloud, anonymous)
    first = x509.load_pem_x509_certificate(old_cert.encode()).issuer
    rotate_intermediate(settings.pki_dir)

    async with running_cloud(tmp_path, settings) as cloud, cloud.client(None) as anonymous:
        intermediate, retired, _root = x509.load_pem_x509_certificates(
            (await anonymous.get("/api/v1/pki/ca")).content
        )
        assert retired.subject == first != intermediate.subject
        csr = csr_for(generate_key(), "gw-1")
        renewed = await renew(anonymous, old_cert, csr, proof(old_key, csr))
        assert renewed.status_code == 201, renewed.text
        new_cert = x509.load_pem_x509_certificate(renewed.json()["certificate"].encode())
        assert new_cert.issuer == intermediate.subject

        async with cloud.client("admin") as admin:
            revoked = await admin.post("/api/v1/gateways/gw-1/revoke", json={"reason": "keyCompromise"})
            assert revoked.status_code == 200, revoked.text
        serials = {x509.load_pem_x509_certificate(old_cert.encode()).serial_number, new_cert.serial_number}
        crls = parse_crls((await anonymous.get("/api/v1/pki/crl")).content, source="GET /api/v1/pki/crl")
        assert [crl.issuer for crl in crls] == [intermediate.subject, retired.subject]
        for crl, signer in zip(crls, (intermediate, retired), strict=True):
            assert crl.is_signature_valid(signer.public_key())  # type: ignore[arg-type]
            assert {entry.serial_number for entry in crl} == serials
        der = x509.load_der_x509_crl(
            (await anonymous.get("/api/v1/pki/crl", headers={"Accept": "application/pkix-crl"})).content
        )
        assert der.issuer == intermediate.subject
