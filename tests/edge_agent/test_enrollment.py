"""``fieldline edge enroll`` as an operator runs it (a real subprocess) against a real cloud core on uvicorn:
the key is made on the gateway and kept 0600, certificate and chain land at the configured paths and verify with
OpenSSL, and every refusal prints the cloud's reason and writes nothing. Over HTTPS the gateway verifies the
cloud with the CA file it is given and refuses a cloud that file does not vouch for."""

from __future__ import annotations

import asyncio
import ipaddress
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from certs import load_certificates, load_private_key, write_pem, write_private_key
from certs.tls import client_context
from tests.cloud_core.cloudkit import Cloud, running_cloud
from tests.servicekit import free_port, require_binary
from tests.tlskit import make_ca


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path) as cloud:
        async with cloud.client("operator") as operator:
            for gateway in ("gw-1", "gw-2"):
                assert (await operator.post("/api/v1/gateways", json={"id": gateway})).status_code == 201
        yield cloud


async def new_token(cloud: Cloud, gateway: str) -> str:
    async with cloud.client("operator") as operator:
        answer = await operator.post(f"/api/v1/gateways/{gateway}/enrollment-tokens")
    assert answer.status_code == 201
    return answer.json()["token"]


def write_config(tmp_path: Path, gateway: str = "gw-1", tls: bool = True) -> Path:
    identity = tmp_path / "identity"
    data: dict[str, object] = {"gateway": {"id": gateway}}
    if tls:
        data["uplink"] = {
            "url": "mqtts://127.0.0.1:8883",
            "tls": {
                "ca": str(identity / "ca.pem"),
                "cert": str(identity / "gateway.pem"),
                "key": str(identity / "gateway.key"),
            },
        }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def enroll(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fieldline",
        "edge",
        "enroll",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess([], process.returncode, out.decode(), err.decode())


async def test_enroll_stores_key_certificate_and_chain(cloud: Cloud, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = await enroll(config, "--cloud", cloud.url, "--token", await new_token(cloud, "gw-1"))
    assert result.returncode == 0, result.stderr
    assert "enrolled gw-1: certificate " in result.stdout
    identity = tmp_path / "identity"
    key_file, cert_file, ca_file = identity / "gateway.key", identity / "gateway.pem", identity / "ca.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    leaf, intermediate = load_certificates(cert_file)
    assert leaf.subject.rfc4514_string() == "CN=gw-1"
    assert intermediate.subject == leaf.issuer
    assert [c.subject for c in load_certificates(ca_file)] == [intermediate.subject, intermediate.issuer]
    key = load_private_key(key_file)
    assert leaf.public_key() == key.public_key()
    async with cloud.client("admin") as admin:
        listed = (await admin.get("/api/v1/pki/certificates", params={"owner": "gw-1"})).json()
    assert [c["serial"] for c in listed] == [format(leaf.serial_number, "x")]
    openssl = require_binary("openssl")
    verified = await asyncio.to_thread(
        subprocess.run,
        [openssl, "verify", "-CAfile", str(ca_file), str(cert_file)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    )


async def test_every_refusal_prints_the_reason_and_writes_nothing(cloud: Cloud, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    identity = tmp_path / "identity"
    token = await new_token(cloud, "gw-1")
    assert (await enroll(config, "--cloud", cloud.url, "--token", token)).returncode == 0
    key_before = (identity / "gateway.key").read_bytes()
    cert_before = (identity / "gateway.pem").read_bytes()

    reused = await enroll(config, "--cloud", cloud.url, "--token", token)
    assert reused.returncode == 1
    assert "403 Enrollment refused: the enrollment token was already used at " in reused.stderr

    other = await enroll(config, "--cloud", cloud.url, "--token", await new_token(cloud, "gw-2"))
    assert other.returncode == 1
    assert "the token was issued for gateway gw-2, the CSR's subject is CN=gw-1" in other.stderr

    unknown = await enroll(config, "--cloud", cloud.url, "--token", "flenr_guess")
    assert "the enrollment token is not recognised" in unknown.stderr

    nowhere = await enroll(config, "--cloud", f"http://127.0.0.1:{free_port()}", "--token", token)
    assert nowhere.returncode == 1
    assert "cannot reach the cloud" in nowhere.stderr

    assert (identity / "gateway.key").read_bytes() == key_before
    assert (identity / "gateway.pem").read_bytes() == cert_before


async def test_enroll_needs_the_certificate_paths_and_a_cloud(cloud: Cloud, tmp_path: Path) -> None:
    bare = write_config(tmp_path, tls=False)
    missing = await enroll(bare, "--cloud", cloud.url, "--token", "t")
    assert missing.returncode == 2
    assert "set uplink.tls.cert and uplink.tls.key" in missing.stderr
    no_cloud = await enroll(write_config(tmp_path), "--token", "t")
    assert no_cloud.returncode == 2
    assert "pass --cloud or set pki.cloud_url" in no_cloud.stderr


async def test_enroll_over_https_verifies_the_cloud(tmp_path: Path) -> None:
    web_ca = make_ca(tmp_path / "web-ca")
    cert, key = web_ca.issue_server("cloud", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    chain, key_file = tmp_path / "cloud.pem", tmp_path / "cloud.key"
    write_pem(chain, cert, web_ca.certificate)
    write_private_key(key_file, key)
    trusted = tmp_path / "web-ca.pem"
    trusted.write_bytes(web_ca.chain_pem())
    stranger = tmp_path / "other-ca.pem"
    stranger.write_bytes(make_ca(tmp_path / "other-ca").chain_pem())

    async with running_cloud(tmp_path, tls=(chain, key_file)) as cloud:
        assert cloud.url.startswith("https://")
        async with cloud.client("operator", verify=client_context(ca_file=trusted)) as operator:
            assert (await operator.post("/api/v1/gateways", json={"id": "gw-1"})).status_code == 201
            answer = await operator.post("/api/v1/gateways/gw-1/enrollment-tokens")
        token = answer.json()["token"]
        config = write_config(tmp_path)
        identity = tmp_path / "identity"

        refused = await enroll(config, "--cloud", cloud.url, "--token", token, "--ca-file", str(stranger))
        assert refused.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
        assert not (identity / "gateway.key").exists()
        assert not (identity / "gateway.pem").exists()

        done = await enroll(config, "--cloud", cloud.url, "--token", token, "--ca-file", str(trusted))
        assert done.returncode == 0, done.stderr
    assert load_certificates(identity / "gateway.pem")[0].subject.rfc4514_string() == "CN=gw-1"
