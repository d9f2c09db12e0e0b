"""The uplink over TLS to a real Mosquitto: a broker certificate from the configured CA is accepted, any other
is refused and the data waits in the outbox."""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.agent import Agent
from tests.factories import CloudCollector, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto, free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "broker.pem", directory / "broker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_cloud(tmp_path: Path):
    """A cloud broker with a plain listener (for the test's subscriber) and a TLS listener (for the agent)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, ca, ca_path = make_ca(pki, "fieldline-test-ca")
    cert, key = make_server_cert(pki, ca_key, ca)
    tls_port = free_port()
    workdir = tmp_path / "cloud"
    workdir.mkdir()
    broker = Mosquitto(
        port=free_port(),
        workdir=workdir,
        extra_config=f"listener {tls_port} 127.0.0.1\ncafile {ca_path}\ncertfile {cert}\nkeyfile {key}\n",
    )
    broker.start()
    yield broker, tls_port, ca_path, pki
    broker.stop()


async def test_uplink_over_tls_with_the_configured_ca(
    tmp_path: Path, mosquitto: Mosquitto, tls_cloud
) -> None:
    broker, tls_port, ca_path, _ = tls_cloud
    cloud = CloudCollector(broker.port)
    config = agent_config(
        tmp_path, mosquitto.url, f"mqtts://127.0.0.1:{tls_port}", uplink={"tls": {"ca": str(ca_path)}}
    )
    async with Agent(config) as agent:
        await eventually(
            lambda: agent.uplink.connected, message=lambda: f"no TLS uplink: {agent.uplink.last_error}"
        )
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("dev-1", time.time(), {"n": i}) for i in range(50)])
        pub.close()
        await eventually(lambda: len(cloud.raw_points()) == 50)
    cloud.close()
    assert sorted(r.metrics["n"] for r in cloud.raw_points()) == list(range(50))


async def test_uplink_refuses_a_broker_certificate_from_another_ca(
    tmp_path: Path, mosquitto: Mosquitto, tls_cloud
) -> None:
    _, tls_port, _, pki = tls_cloud
    _, _, other_ca = make_ca(pki, "someone-else")
    config = agent_config(
        tmp_path, mosquitto.url, f"mqtts://127.0.0.1:{tls_port}", uplink={"tls": {"ca": str(other_ca)}}
    )
    async with Agent(config) as agent:
        # on a loaded machine a first attempt may time out before the handshake: wait for the refusal itself
        await eventually(
            lambda: (
                "CERTIFICATE_VERIFY_FAILED" in (agent.uplink.last_error or "")
                and agent.metrics.uplink_reconnects >= 1
            ),
            message=lambda: agent.uplink.last_error,
        )
        assert not agent.uplink.connected
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("dev-1", time.time(), {"n": i}) for i in range(10)])
        pub.close()
        await eventually(
            lambda: agent.outbox.stats.total_records == 10, message="data must wait in the outbox"
        )
