"""A minimal asyncio MQTT 5 / 3.1.1 client for simulated devices: cheap enough to hold 10,000 connections in one
process.

Why not aiomqtt or paho: measured by ``bench/sim_scale.py`` (figures in docs/simulator.md), an aiomqtt
connection (a paho client underneath) costs about 3.4 times the memory of this protocol's and connects about half
as fast, because every client carries its own buffers, locks, callback machinery and a housekeeping task. A
simulated device needs only CONNECT (last will, clean start, session expiry), PUBLISH at QoS 0 and 1 with PUBACK
tracking, SUBSCRIBE, PINGREQ and DISCONNECT, so that is all this module implements. Keepalive is not a task per
connection: the owner calls :meth:`MqttClient.keepalive` for all its clients from one task.

``edge_agent/mqtt_subscriber.py`` holds a similar receive path for the agent; both encode packets with
``fieldline.mqtt_packets``, so the simulator does not depend on the edge agent's package.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from device_sim.errors import ConnectRefused, TransportError
from fieldline.mqtt_packets import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PUBACK,
    PUBLISH,
    SUBACK,
    mqtt_string,
    packet,
    packet_bounds,
    publish_packet,
    read_varint,
    subscribe_packet,
    varint,
)


@dataclass(frozen=True, slots=True)
class Will:
    """The last will: what the broker publishes when the connection drops without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class InboundMessage:
    """One PUBLISH received."""

    __slots__ = ("payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain


class _Protocol(asyncio.Protocol):
    __slots__ = ("buf", "client", "is_lost", "lost_waiter", "transport")

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.is_lost = False
        self.lost_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        client = self.client
        while pos < n:
            bounds = packet_bounds(buf, pos)
            if bounds is None:
                break
            start, end = bounds
            client.received(buf[pos], bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        if self.lost_waiter is not None and not self.lost_waiter.done():
            self.lost_waiter.set_result(None)
        self.client.lost(exc)

    async def wait_lost(self) -> None:
        if not self.is_lost:
            self.lost_waiter = asyncio.get_running_loop().create_future()
            await self.lost_waiter

    def pause_writing(self) -> None:
        self.client.writable.clear()

    def resume_writing(self) -> None:
        self.client.writable.set()


class MqttClient:
    """One MQTT connection. Build a new one to reconnect (the broker keeps the session when asked to).

    ``on_message`` is called for every PUBLISH received (QoS 1 messages are acknowledged right away);
    ``on_close`` once when the connection ends, with the reason (None after :meth:`disconnect`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        will: Will | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
        keepalive: int = 60,
        protocol: int = 5,
        tls: ssl.SSLContext | None = None,
        on_message: Callable[[InboundMessage], None] | None = None,
        on_close: Callable[[MqttClient, TransportError | None], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.will = will
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive_interval = keepalive
        self.v5 = protocol == 5
        self.tls = tls
        self.on_message = on_message
        self.on_close = on_close
        self.receive_maximum = 65535
        """How many QoS 1 publishes may await their PUBACK at once (the broker's CONNACK says, in MQTT 5)."""
        self.inflight: dict[int, float] = {}
        """Packet id -> monotonic time of the QoS 1 publishes awaiting their PUBACK."""
        self.acked = 0
        self.on_ack: Callable[[float], None] | None = None
        """Called with the publish's send time when its PUBACK arrives."""
        self.writable = asyncio.Event()
        self.writable.set()
        self.connected = False
        self._protocol: _Protocol | None = None
        self._connack: asyncio.Future[bytes] | None = None
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self._window: asyncio.Future[None] | None = None
        self._next_id = 0
        self._last_out = 0.0
        self._last_in = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, within: float = 10.0, *, then: bytes = b"") -> None:
        """Open the connection and wait for CONNACK; ``then`` is written right after CONNECT (subscriptions and
        publishes pipelined without waiting for CONNACK, which MQTT allows). Raises ``TransportError``."""
        loop = self._loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(within):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
                self._protocol = protocol
                self.connected = True
                self.write(self._connect_packet() + then)
                body = await self._connack
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._close_transport()
            self.connected = False
            raise TransportError(
                f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
            ) from exc
        code = body[1] if len(body) > 1 else 0xFF
        if code != 0:
            self._close_transport()
            self.connected = False
            raise ConnectRefused(
                f"{self.host}:{self.port} refused {self.client_id} (reason 0x{code:02x})", code=code
            )
        if self.v5:
            self._read_connack_properties(body)
        self._last_in = self._last_out = loop.time()

    async def disconnect(self, within: float = 2.0) -> None:
        """A normal DISCONNECT (the broker discards the last will), once the QoS 1 publishes are acknowledged and
        what was written has been sent. Waiting for the PUBACKs first matters: Mosquitto before 2.0.22 treats a
        PUBACK it cannot deliver (the client already gone) as an abnormal end and publishes the will anyway
        (eclipse-mosquitto/mosquitto#2627)."""
        protocol = self._protocol
        with contextlib.suppress(TimeoutError, TransportError):
            async with asyncio.timeout(within):
                await self.wait_acked()
        if self.connected:
            self.write(DISCONNECT_PACKET)
        self._finish(None)
        if protocol is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await protocol.wait_lost()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a device losing power would: the broker publishes the will."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        self._finish(TransportError(f"{self.client_id}: connection aborted"))

    # ------------------------------------------------------------------ sending

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Write one PUBLISH now. False (nothing written) when not connected, or at QoS 1 when the broker's receive
        window is full."""
        if not self.connected:
            return False
        mid = 0
        if qos:
            if len(self.inflight) >= self.receive_maximum:
                return False
            mid = self._packet_id()
            assert self._loop is not None
            self.inflight[mid] = self._loop.time()
        self.write(publish_packet(topic, payload, qos=qos, retain=retain, mid=mid, v5=self.v5))
        return True

    async def wait_window(self) -> None:
        """Wait until a QoS 1 publish fits in the broker's receive window and the socket takes more data."""
        while self.connected and len(self.inflight) >= self.receive_maximum:
            assert self._loop is not None
            self._window = self._loop.create_future()
            await self._window
        await self.writable.wait()

    async def wait_acked(self) -> None:
        """Wait until every QoS 1 publish has its PUBACK (or the connection ends)."""
        while self.connected and self.inflight:
            assert self._loop is not None
            self._window = self._loop.create_future()
            await self._window

    def next_id(self) -> int:
        """Reserve a packet id for a QoS 1 packet the caller builds itself (see :func:`publish_packet`)."""
        mid = self._packet_id()
        assert self._loop is not None
        self.inflight[mid] = self._loop.time()
        return mid

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe and wait for SUBACK; returns the granted QoS per filter."""
        assert self._loop is not None
        mid = self._packet_id()
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._subacks[mid] = fut
        self.write(self.subscribe_packet(filters, mid))
        reply = await fut
        codes = reply[2:]
        if self.v5:
            plen, k = read_varint(codes, 0)
            codes = codes[k + plen :]
        refused = [topic for (topic, _), code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            raise TransportError(f"{self.client_id}: subscription refused for {', '.join(refused)}")
        return list(codes)

    def subscribe_packet(self, filters: list[tuple[str, int]], mid: int | None = None) -> bytes:
        """A SUBSCRIBE packet, for pipelining after CONNECT (the SUBACK is then not awaited)."""
        return subscribe_packet(filters, mid if mid is not None else self._packet_id(), v5=self.v5)

    def write(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.write(data)
            if self._loop is not None:
                self._last_out = self._loop.time()

    def set_write_buffer(self, high: int) -> None:
        """Let up to ``high`` bytes wait unsent before ``writable`` clears (asyncio's default is 64 KiB)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.set_write_buffer_limits(high=high)

    def keepalive(self, now: float) -> None:
        """Called by the owner every few seconds (``now`` is the loop's time): PINGREQ after half the keepalive
        without sending; no packet at all from the broker for 1.5 keepalives means the link is dead."""
        if not self.connected:
            return
        if now - self._last_in > self.keepalive_interval * 1.5:
            self.abort()
        elif now - self._last_out > self.keepalive_interval / 2:
            self.write(PINGREQ_PACKET)

    # ------------------------------------------------------------------ receiving

    def received(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if self._loop is not None:
            self._last_in = self._loop.time()
        if kind == PUBLISH:
            self._publish_received(first, body)
        elif kind == PUBACK:
            sent = self.inflight.pop((body[0] << 8) | body[1], None)
            if sent is not None:
                self.acked += 1
                if self.on_ack is not None:
                    self.on_ack(sent)
                if self._window is not None and not self._window.done():
                    self._window.set_result(None)
        elif kind == CONNACK and self._connack is not None and not self._connack.done():
            self._connack.set_result(body)
        elif kind == SUBACK:
            fut = self._subacks.pop((body[0] << 8) | body[1], None)
            if fut is not None and not fut.done():
                fut.set_result(body)
        elif kind == DISCONNECT:
            self.lost(ConnectionError(f"broker sent DISCONNECT (reason 0x{body[0] if body else 0:02x})"))

    def _publish_received(self, first: int, body: bytes) -> None:
        j = 2 + ((body[0] << 8) | body[1])
        topic = body[2:j].decode("utf-8", "replace")
        qos = (first >> 1) & 3
        if qos:
            self.write(b"\x40\x02" + body[j : j + 2])
            j += 2
        if self.v5:
            plen, k = read_varint(body, j)
            j += k + plen
        if self.on_message is not None:
            self.on_message(InboundMessage(topic, body[j:], qos, bool(first & 1)))

    def lost(self, exc: BaseException | None) -> None:
        self._finish(TransportError(f"{self.client_id}: connection lost: {exc or 'closed by the broker'}"))

    # ------------------------------------------------------------------ internals

    def _finish(self, reason: TransportError | None) -> None:
        was_connected = self.connected
        self.connected = False
        error = reason or TransportError(f"{self.client_id}: disconnected")
        for fut in [self._connack, self._window, *self._subacks.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(error)
                fut.exception()
        self._subacks.clear()
        self.writable.set()
        self._close_transport()
        if was_connected and self.on_close is not None:
            self.on_close(self, reason)

    def _connect_packet(self) -> bytes:
        flags = 0x02 if self.clean_start else 0x00
        will = self.will
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        header = (
            mqtt_string("MQTT")
            + bytes([5 if self.v5 else 4, flags])
            + struct.pack("!H", self.keepalive_interval)
        )
        if self.v5:
            props = b"\x11" + struct.pack("!I", self.session_expiry) if self.session_expiry else b""
            header += varint(len(props)) + props
        payload = mqtt_string(self.client_id)
        if will is not None:
            payload += (b"\x00" if self.v5 else b"") + mqtt_string(will.topic) + mqtt_string(will.payload)
        return packet(0x10, header + payload)

    def _read_connack_properties(self, body: bytes) -> None:
        if len(body) < 3:
            return
        plen, k = read_varint(body, 2)
        i, end = 2 + k, 2 + k + plen
        while i < end:
            prop = body[i]
            i += 1
            if prop == 0x21:  # receive maximum
                self.receive_maximum = (body[i] << 8) | body[i + 1]
                return
            i += _PROPERTY_SIZES.get(prop, 0) or _variable_size(prop, body, i)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id
        raise TransportError(f"{self.client_id}: all 65535 packet ids await a PUBACK")

    def _close_transport(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(RuntimeError):
                protocol.transport.close()


# CONNACK property id -> fixed size in bytes (byte 1, two-byte 2, four-byte 4); the others are strings/binary
_PROPERTY_SIZES = {0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x22: 2, 0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2}


def _variable_size(prop: int, body: bytes, i: int) -> int:
    """Size of a string or binary property (two-byte length first); a user property holds two strings."""
    size = 2 + ((body[i] << 8) | body[i + 1])
    if prop == 0x26:
        size += 2 + ((body[i + size] << 8) | body[i + size + 1])
    return size
