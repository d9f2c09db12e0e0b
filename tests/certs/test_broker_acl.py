"""The broker configuration `fieldline certs broker-config` writes, run by a real Mosquitto: mutual TLS, the CN
as username, and the pattern ACL that keeps each gateway on its own topics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from certs import CertificateAuthority
from tests.tlskit import (
    TlsMosquitto,
    cloud_client,
    make_ca,
    mqtt_client,
    refusal,
    tls_mosquitto,
    write_client,
)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def broker(tmp_path: Path, ca: CertificateAuthority) -> Iterator[TlsMosquitto]:
    yield from tls_mosquitto(tmp_path / "broker", ca)


async def _drain(client: aiomqtt.Client, marker: str) -> list[tuple[str, bytes]]:
    """Messages received until the one on topic ``marker`` (published last, so everything before it has been
    routed: Mosquitto keeps per-client order)."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.topic.value == marker:
                return got
            got.append((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]
    return got


async def test_gateway_telemetry_reaches_the_cloud_directly_and_through_a_shared_subscription(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    gateway = write_client(ca, tmp_path / "clients", "gw-1")
    async with (
        cloud_client(broker, "cloud-direct") as direct,
        cloud_client(broker, "cloud-shared") as shared,
        mqtt_client(broker, gateway, "gw-1") as gw,
    ):
        await direct.subscribe("fl/+/up/#", qos=1)
        await shared.subscribe("$share/ingest/fl/+/up/#", qos=1)
        await gw.publish("fl/gw-1/up/telemetry", b"point", qos=1)
        await gw.publish("fl/gw-1/up/status", b"end", qos=1)
        assert await _drain(direct, "fl/gw-1/up/status") == [("fl/gw-1/up/telemetry", b"point")]
        assert await _drain(shared, "fl/gw-1/up/status") == [("fl/gw-1/up/telemetry", b"point")]


async def test_a_gateway_cannot_publish_on_another_gateways_topics(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    a = write_client(ca, tmp_path / "clients", "gw-a")
    b = write_client(ca, tmp_path / "clients", "gw-b")
    async with (
        cloud_client(broker, "cloud") as cloud,
        mqtt_client(broker, a, "gw-a") as gw,
        mqtt_client(broker, b, "gw-b") as gw_b,
    ):
        await cloud.subscribe("fl/#", qos=1)
        await gw_b.subscribe("fl/gw-b/down/#", qos=1)
        await gw.publish("fl/gw-b/up/telemetry", b"forged", qos=1)
        await gw.publish("fl/gw-b/down/config", b"forged", qos=1)
        await gw.publish("fl/gw-a/down/commands", b"forged", qos=1)
        await gw.publish("fl/gw-a/up/status", b"end", qos=1)
        assert await _drain(cloud, "fl/gw-a/up/status") == []
        await cloud.publish("fl/gw-b/down/commands", b"end", qos=1)
        assert await _drain(gw_b, "fl/gw-b/down/commands") == []  # the forged config never reached gw-b


async def test_a_gateway_receives_nothing_from_another_gateways_downlink(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    a = write_client(ca, tmp_path / "clients", "gw-a")
    b = write_client(ca, tmp_path / "clients", "gw-b")
    async with (
        cloud_client(broker, "cloud") as cloud,
        mqtt_client(broker, a, "gw-a") as gw_a,
        mqtt_client(broker, b, "gw-b") as gw_b,
    ):
        await gw_a.subscribe("fl/gw-b/down/#", qos=1)
        await gw_a.subscribe("fl/+/down/#", qos=1)
        await gw_a.subscribe("$share/spy/fl/+/up/#", qos=1)
        await gw_a.subscribe("fl/gw-a/down/#", qos=1)
        await gw_b.subscribe("fl/gw-b/down/#", qos=1)
        await cloud.publish("fl/gw-b/down/commands", b"for b", qos=1)
        await gw_b.publish("fl/gw-b/up/telemetry", b"b's data", qos=1)
        await cloud.publish("fl/gw-a/down/config", b"end", qos=1)
        await cloud.publish("fl/gw-b/down/config", b"end", qos=1)
        # gw-a gets its own end marker (twice: once per matching filter) and nothing of gw-b's, not even
        # through a shared subscription.
        assert await _drain(gw_a, "fl/gw-a/down/config") == []
        assert await _drain(gw_b, "fl/gw-b/down/config") == [("fl/gw-b/down/commands", b"for b")]


def test_expired_certificate_is_refused(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    expired = write_client(
        ca,
        tmp_path / "clients",
        "gw-old",
        now=datetime.now(UTC) - timedelta(days=30),
        validity=timedelta(days=1),
    )
    assert refusal(broker, expired, "gw-old") == "SSLV3_ALERT_CERTIFICATE_EXPIRED"


def test_certificate_from_another_ca_is_refused(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    other = make_ca(tmp_path / "other-ca", organization="Elsewhere")
    stranger = write_client(other, tmp_path / "clients", "gw-1", trust=ca)
    assert refusal(broker, stranger, "gw-1") == "TLSV1_ALERT_UNKNOWN_CA"
    assert refusal(broker, write_client(ca, tmp_path / "clients", "gw-2"), "gw-2") is None


async def test_a_gateway_cannot_take_over_another_gateways_session(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    """The gateway listener forces the client id to the CN: gw-b asking for client id gw-a gets its own session,
    and gw-a stays connected."""
    a = write_client(ca, tmp_path / "clients", "gw-a")
    b = write_client(ca, tmp_path / "clients", "gw-b")
    async with cloud_client(broker, "cloud") as cloud, mqtt_client(broker, a, "gw-a") as gw_a:
        await cloud.subscribe("fl/+/up/#", qos=1)
        async with mqtt_client(broker, b, "gw-a") as gw_b:
            await gw_b.publish("fl/gw-b/up/status", b"b is here", qos=1)
            await gw_a.publish("fl/gw-a/up/telemetry", b"a still here", qos=1)
            await gw_a.publish("fl/gw-a/up/status", b"end", qos=1)
            assert await _drain(cloud, "fl/gw-a/up/status") == [
                ("fl/gw-b/up/status", b"b is here"),
                ("fl/gw-a/up/telemetry", b"a still here"),
            ]
    assert "as gw-a (p5, c1, k60, u'gw-b')" not in broker.log()
