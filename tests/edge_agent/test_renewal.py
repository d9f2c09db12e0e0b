"""Certificate renewal and revocation end to end: a real cloud core (uvicorn) signs with the CA that a real
Mosquitto (the product's mutual-TLS configuration, tests/tlskit.py) trusts; the agent enrolls, publishes device
telemetry through that broker, renews its short-lived certificate and reconnects with it while devices keep
sending, and every point reaches the cloud subscriber exactly once. Revoking the gateway through the API and
installing the published CRL shuts it out. Without a reachable cloud the agent keeps its certificate and retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs import (
    CertificateAuthority,
    generate_key,
    load_certificates,
    make_csr,
    write_pem,
    write_private_key,
)
from certs.crl_sync import sync_once
from cloud_core.pki import PkiService
from cloud_core.settings import CloudSettings
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, PkiConfig
from edge_agent.enrollment import IdentityFiles, enroll
from edge_agent.renewal import Renewal
from tests.cloud_core.cloudkit import Cloud, running_cloud
from tests.factories import CloudCollector, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto, free_port
from tests.tlskit import ClientFiles, TlsMosquitto, make_ca, refusal, tls_mosquitto

VALIDITY = 320.0
"""Seconds of validity the cloud gives. Certificates start 5 minutes in the past (certs.authority.BACKDATE), so
with ``renew_below: 0.5`` the agent renews about 10 s after each issue."""


@dataclass
class Fleet:
    ca: CertificateAuthority
    broker: TlsMosquitto
    cloud: Cloud
    tmp_path: Path

    async def enroll(self, gateway: str) -> IdentityFiles:
        async with self.cloud.client("operator") as operator:
            assert (await operator.post("/api/v1/gateways", json={"id": gateway})).status_code == 201
            token = (await operator.post(f"/api/v1/gateways/{gateway}/enrollment-tokens")).json()["token"]
        identity = self.tmp_path / "identity" / gateway
        files = IdentityFiles(
            key=identity / "gateway.key", cert=identity / "gateway.pem", ca=self.broker.layout.cafile
        )
        await enroll(gateway, files, cloud_url=self.cloud.url, token=token)
        return files

    def agent_config(
        self, local: Mosquitto, gateway: str, files: IdentityFiles, **pki: object
    ) -> AgentConfig:
        tls = {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}
        return agent_config(
            self.tmp_path,
            local.url,
            self.broker.url,
            gateway=gateway,
            uplink={"tls": tls, "inflight": 4},
            pki={"cloud_url": self.cloud.url, "backoff": {"initial": "200ms", "max": "1s"}, **pki},
        )

    def collector(self) -> CloudCollector:
        return CloudCollector(self.broker.cloud_port, tls=self.broker.cloud_files().context())


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, TlsMosquitto]]:
    ca = make_ca(tmp_path / "ca")
    for broker in tls_mosquitto(tmp_path / "cloud-broker", ca):
        yield ca, broker


@pytest.fixture
async def fleet(
    tmp_path: Path, tls_broker: tuple[CertificateAuthority, TlsMosquitto]
) -> AsyncIterator[Fleet]:
    ca, broker = tls_broker
    settings = CloudSettings(
        data_dir=tmp_path / "cloud", pki={"ca_dir": tmp_path / "ca", "certificate_validity": VALIDITY}
    )
    async with running_cloud(tmp_path, settings) as cloud:
        yield Fleet(ca, broker, cloud, tmp_path)


def serial_of(files: IdentityFiles) -> int:
    return load_certificates(files.cert)[0].serial_number


async def test_rotation_under_load_loses_and_duplicates_nothing(fleet: Fleet, mosquitto: Mosquitto) -> None:
    files = await fleet.enroll("gw-1")
    first = serial_of(files)
    cloud = fleet.collector()
    config = fleet.agent_config(mosquitto, "gw-1", files, renew_below=0.5)
    sent = 0
    async with Agent(config) as agent:
        assert agent.renewal is not None
        await eventually(
            lambda: agent.uplink.connected, message=lambda: f"no uplink: {agent.uplink.last_error}"
        )
        device = Publisher(mosquitto.port)
        renewed_at: float | None = None
        deadline = time.monotonic() + 90
        # devices keep sending through the renewal and the reconnect, and a while after it
        while time.monotonic() < deadline:
            infos = [device.telemetry(f"dev-{i % 3}", time.time(), {"n": sent + i}) for i in range(20)]
            await asyncio.to_thread(device.wait_all, infos)
            sent += 20
            await asyncio.sleep(0.05)
            if renewed_at is None and agent.renewal.renewals >= 1:
                renewed_at = time.monotonic()
            if renewed_at is not None and time.monotonic() - renewed_at > 2 and agent.uplink.connected:
                break
        device.close()
        assert renewed_at is not None, f"no renewal: {agent.renewal.health()}"
        await eventually(
            lambda: len(cloud.raw_points()) >= sent,
            within=30,
            message=lambda: f"{len(cloud.raw_points())} of {sent} points arrived",
        )
        reconnects = agent.metrics.uplink_reconnects
        renewals = agent.renewal.renewals
        metrics = (await asyncio.to_thread(_scrape, agent)).decode()
    cloud.close()
    assert serial_of(files) != first
    assert reconnects >= 1
    assert renewals >= 1
    # exactly once: after the cloud's (gateway, seq) dedupe every point is there, none twice
    counts = Counter(r.metrics["n"] for r in cloud.raw_points())
    assert sorted(counts) == list(range(sent))
    assert max(counts.values()) == 1
    seqs = [b.seq for b in cloud.unique_batches() if b.gateway == "gw-1"]
    assert len(seqs) == len(set(seqs))
    assert not cloud.errors
    assert "fieldline_edge_certificate_renewals_total" in metrics
    assert "fieldline_edge_certificate_expiry_seconds" in metrics
    async with fleet.cloud.client("admin") as admin:
        listed = (await admin.get("/api/v1/pki/certificates", params={"owner": "gw-1"})).json()
    assert len(listed) == 1 + renewals
    assert {c["issued_via"] for c in listed} == {"enroll", "renew"}


def _scrape(agent: Agent) -> bytes:
    from edge_agent.metrics import exposition

    return exposition(agent.registry)


async def test_a_revoked_gateway_is_shut_out_once_the_crl_is_installed(
    fleet: Fleet, mosquitto: Mosquitto
) -> None:
    revoked_files = await fleet.enroll("gw-1")
    other_files = await fleet.enroll("gw-2")
    other = ClientFiles(other_files.cert, other_files.key, fleet.broker.layout.cafile)
    cloud = fleet.collector()
    async with Agent(fleet.agent_config(mosquitto, "gw-1", revoked_files)) as agent:
        await eventually(
            lambda: agent.uplink.connected, message=lambda: f"no uplink: {agent.uplink.last_error}"
        )
        device = Publisher(mosquitto.port)
        await asyncio.to_thread(device.wait_all, [device.telemetry("dev-1", time.time(), {"n": 0})])
        await eventually(lambda: len(cloud.raw_points()) == 1)

        async with fleet.cloud.client("admin") as admin:
            answer = await admin.post("/api/v1/gateways/gw-1/revoke", json={"reason": "keyCompromise"})
        assert answer.status_code == 200
        # the broker's CRL follows the cloud's (certs crl-sync); a restart cuts the sessions already open
        outcome = await asyncio.to_thread(
            sync_once,
            f"{fleet.cloud.url}/api/v1/pki/crl",
            ca_file=fleet.broker.layout.cafile,
            out=fleet.broker.layout.crlfile,
            reload=fleet.broker.restart,
        )
        assert outcome.installed, outcome.detail

        reconnects = agent.metrics.uplink_reconnects
        await eventually(
            lambda: agent.metrics.uplink_reconnects >= reconnects + 2 and not agent.uplink.connected,
            within=30,
            message=lambda: f"the revoked gateway is still let in: {agent.uplink.last_error}",
        )
        assert agent.uplink.last_error is not None
        await asyncio.to_thread(device.wait_all, [device.telemetry("dev-1", time.time(), {"n": 1})])
        device.close()
        await eventually(
            lambda: agent.outbox.stats.total_records >= 1, message="data must wait in the outbox"
        )
        assert not agent.uplink.connected
    cloud.close()
    assert [r.metrics["n"] for r in cloud.raw_points()] == [0]
    revoked = ClientFiles(revoked_files.cert, revoked_files.key, fleet.broker.layout.cafile)
    assert "REVOKED" in (await asyncio.to_thread(refusal, fleet.broker, revoked, "gw-1") or "")
    assert await asyncio.to_thread(refusal, fleet.broker, other, "gw-2") is None, "gw-2 was not revoked"


async def test_renewal_keeps_the_certificate_while_the_cloud_is_away_and_renews_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = CloudSettings(data_dir=tmp_path / "cloud")
    key = generate_key()
    async with running_cloud(tmp_path, settings, port=port) as cloud:
        async with cloud.client("operator") as operator:
            assert (await operator.post("/api/v1/gateways", json={"id": "gw-1"})).status_code == 201
        pki: PkiService = cloud.services.parts["pki"]
        async with cloud.services.database.session() as session:  # issued 80 of its 90 days ago
            issued = pki._sign(
                session,
                make_csr(key, "gw-1"),
                "gateway",
                "gw-1",
                datetime.now(UTC) - timedelta(days=80),
                via="enroll",
            )
    files = IdentityFiles(key=tmp_path / "gw.key", cert=tmp_path / "gw.pem")
    write_private_key(files.key, key)
    write_pem(files.cert, issued.certificate, *pki.authority.chain[:1])
    before = files.cert.read_bytes()
    config = PkiConfig(cloud_url=f"http://127.0.0.1:{port}", backoff={"initial": "50ms", "max": "200ms"})
    renewed: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="edge_agent.renewal"):
        async with Renewal(config, files, "gw-1", on_renewed=lambda: renewed.append(True)) as renewal:
            await eventually(lambda: renewal.failures >= 3)
            families = {f.name: f for f in renewal.collect()}
            assert files.cert.read_bytes() == before, (
                "the current certificate is kept while the cloud is away"
            )
            assert not renewed
            assert "cannot reach the cloud" in (renewal.last_error or "")
            async with running_cloud(tmp_path, settings, port=port):
                await eventually(lambda: bool(renewed), message=lambda: f"not renewed: {renewal.health()}")
    assert renewal.renewals == 1
    assert renewal.attempts == renewal.failures + 1
    assert serial_of(files) != issued.certificate.serial_number
    expiry = families["fieldline_edge_certificate_expiry_seconds"].samples[0].value
    assert 9 * 86400 < expiry <= 10 * 86400
    assert families["fieldline_edge_certificate_renewal_failures"].samples[0].value >= 3
    messages = [r.getMessage() for r in caplog.records]
    assert "certificate expires soon" in messages
    assert "certificate renewal failed" in messages


async def test_repeated_credential_swaps_under_load_keep_every_point_once(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    """``Uplink.reconnect`` alone, many times while batches are in flight: nothing lost, nothing kept twice."""
    cloud = CloudCollector(cloud_mosquitto.port)
    config = agent_config(tmp_path, mosquitto.url, cloud_mosquitto.url, uplink={"inflight": 2})
    sent = swaps = 0
    async with Agent(config) as agent:
        await eventually(lambda: agent.uplink.connected)
        device = Publisher(mosquitto.port)
        while swaps < 15:
            infos = [device.telemetry("dev-1", time.time(), {"n": sent + i}) for i in range(50)]
            await asyncio.to_thread(device.wait_all, infos)
            sent += 50
            if agent.uplink.connected:
                agent.uplink.reconnect()
                swaps += 1
            await asyncio.sleep(0.02)
        device.close()
        await eventually(
            lambda: len(cloud.raw_points()) >= sent,
            within=30,
            message=lambda: f"{len(cloud.raw_points())} of {sent} points arrived",
        )
        reconnects = agent.metrics.uplink_reconnects
    cloud.close()
    assert reconnects >= swaps
    counts = Counter(r.metrics["n"] for r in cloud.raw_points())
    assert sorted(counts) == list(range(sent))
    assert max(counts.values()) == 1
