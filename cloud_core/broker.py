"""Connections to the cloud MQTT broker (``settings.broker``), for ingest and command routing.

Both parts use aiomqtt over MQTT 5. Ingest needs to acknowledge a QoS 1 message only after what it carries is
stored; aiomqtt 2.5 acknowledges on receipt and has no public switch yet (empicano/aiomqtt#345), so
``manual_acks`` turns on the manual acknowledgement of the paho-mqtt client it wraps (paho >= 2.0's
``manual_ack_set``/``ack``), in this one place, and refuses to start if that client is not there.
"""

from __future__ import annotations

from collections.abc import Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_core.settings import BrokerSettings


class BrokerUnavailable(Exception):
    """Raised when the broker cannot be reached or did not acknowledge a publish in time."""


def connect_properties(*, session_expiry: int = 0, receive_maximum: int | None = None) -> Properties:
    """MQTT 5 CONNECT properties: how long the broker keeps the session, how many QoS 1 messages may wait for
    our acknowledgement at once (the broker sends no more: backpressure)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry
    if receive_maximum is not None:
        properties.ReceiveMaximum = max(1, min(receive_maximum, 65535))
    return properties


def broker_client(
    settings: BrokerSettings,
    identifier: str,
    *,
    clean_start: bool = True,
    properties: Properties | None = None,
) -> aiomqtt.Client:
    """A client for ``settings`` (TLS and credentials included); connect with ``async with``."""
    if settings.host is None:
        raise BrokerUnavailable("no broker is configured (broker.host)")
    tls = None
    if settings.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            certfile=str(settings.cert_file) if settings.cert_file else None,
            keyfile=str(settings.key_file) if settings.key_file else None,
        )
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=identifier,
        username=settings.username,
        password=settings.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean_start,
        properties=properties,
        keepalive=settings.keepalive,
        tls_params=tls,
    )


def manual_acks(client: aiomqtt.Client) -> Callable[[aiomqtt.Message], None]:
    """Stop ``client`` from acknowledging QoS 1 messages on receipt; returns the function that acknowledges one."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
        raise RuntimeError(
            "this aiomqtt/paho-mqtt pair offers no manual acknowledgement; ingest needs it to acknowledge "
            "only what it stored (aiomqtt 2.x over paho-mqtt >= 2.0 does)"
        )
    paho.manual_ack_set(True)

    def ack(message: aiomqtt.Message) -> None:
        if message.qos > 0:
            paho.ack(message.mid, message.qos)

    return ack
