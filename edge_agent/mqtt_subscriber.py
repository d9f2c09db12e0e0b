"""A lean MQTT 5 / 3.1.1 subscriber for the southbound hot path, with manual acknowledgement.

Why not paho here: profiling the agent draining a backlog (``bench/edge_throughput.py`` with ``BENCH_PROFILE``)
showed paho's receive path costing more than the whole pipeline: up to four ``recv`` calls per packet, a
``Properties`` object per MQTT 5 packet received and per PUBACK sent, a ``threading.Condition`` per message.
This protocol parses every packet in one buffer per read, hands the PUBLISHes of each read to the handler together
(a list of small slotted objects: the receiver runs its per-message work in one loop, with one call per read),
and writes acknowledgements coalesced once per loop turn, all PUBACKs of a turn packed in one buffer. It implements only what a subscriber needs:
CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at QoS 0 and 1 (QoS 2 subscriptions are not requested), PUBACK,
PINGREQ/PINGRESP and DISCONNECT. Publishing (the uplink) stays on paho through ``MqttLink``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import sys
from array import array
from collections.abc import Callable, Sequence

from edge_agent.errors import LinkError, LinkRefused
from edge_agent.mqtt_link import Endpoint
from fieldline.mqtt_packets import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PUBLISH,
    SUBACK,
    mqtt_string,
    packet,
    read_varint,
    subscribe_packet,
    varint,
)

_LITTLE_ENDIAN = sys.byteorder == "little"


class InboundMessage:
    """One PUBLISH received: ``mid`` is its packet identifier (0 at QoS 0)."""

    __slots__ = ("dup", "mid", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.dup = dup
        self.retain = retain


def puback_packets(mids: list[int]) -> bytes:
    """PUBACK packets (MQTT 3.1.1 form, also valid in MQTT 5: reason Success) for ``mids``, back to back."""
    ids = array("H", mids)
    if _LITTLE_ENDIAN:
        ids.byteswap()  # packet identifiers go big-endian on the wire
    id_bytes = ids.tobytes()
    out = bytearray(b"\x40\x02\x00\x00" * len(mids))
    out[2::4] = id_bytes[0::2]
    out[3::4] = id_bytes[1::2]
    return bytes(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: MqttSubscriber) -> None:
        self.owner = owner
        self.buf = bytearray()  # the start of a packet that the last read cut
        self.need = 0  # bytes ``buf`` must hold before parsing again (0: unknown, the header is cut too)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if buf:  # the rest of a packet that an earlier read cut
            buf += data
            if len(buf) < self.need:
                return
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = 0
        need = 0
        owner = self.owner
        v5 = owner.v5
        batch: list[InboundMessage] = []
        while pos < n:
            first = data[pos]
            # remaining length: up to four bytes, seven bits each (``fieldline.mqtt_packets.packet_bounds``,
            # inlined here with the property length below: this loop runs once per device message)
            i, mult, length, complete = pos + 1, 1, 0, False
            while i < n:
                byte = data[i]
                i += 1
                length += (byte & 0x7F) * mult
                if byte < 0x80:
                    complete = True
                    break
                mult *= 128
            if not complete:
                break
            end = i + length
            if end > n:
                need = end - pos
                break
            kind = first >> 4
            if kind == PUBLISH:
                j = i + 2 + ((data[i] << 8) | data[i + 1])
                topic = data[i + 2 : j].decode("utf-8", "replace")
                qos = (first >> 1) & 3
                mid = 0
                if qos:
                    mid = (data[j] << 8) | data[j + 1]
                    j += 2
                if v5:  # skip the properties: a variable byte integer length, then that many bytes
                    plen, mult2 = 0, 1
                    while True:
                        byte = data[j]
                        j += 1
                        plen += (byte & 0x7F) * mult2
                        if byte < 0x80:
                            break
                        mult2 *= 128
                    j += plen
                batch.append(InboundMessage(topic, data[j:end], qos, mid, first & 8 != 0, first & 1 != 0))
            else:
                if batch:  # keep the order of data and control packets
                    owner.on_messages(batch)
                    batch = []
                owner.control_packet(kind, data[i:end])
            pos = end
        if pos < n:
            buf += memoryview(data)[pos:]
            self.need = need
        if batch:
            owner.on_messages(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(exc)


class MqttSubscriber:
    """One subscriber connection; the owner reconnects by building a new one (same client id, same session).

    ``on_messages`` receives the PUBLISHes of one socket read, in order, as a list it may keep.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client_id: str,
        on_messages: Callable[[list[InboundMessage]], None],
        clean_start: bool = False,
        session_expiry: int = 0,
        keepalive: int = 30,
        receive_maximum: int = 1024,
        protocol: str = "5",
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.on_messages = on_messages
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.receive_maximum = receive_maximum
        self.v5 = protocol == "5"
        self.session_present = False
        self.closed: asyncio.Future[LinkError | None] | None = None
        self._protocol: _Protocol | None = None
        self._paused = False
        self._connack: asyncio.Future[bytes] | None = None
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._acks: list[int] = []
        self._flush_scheduled = False
        self._last_inbound = 0.0
        self._ping_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, within: float = 10.0) -> None:
        """Open the connection and wait for CONNACK; raises ``LinkRefused`` or ``LinkError``."""
        loop = self._loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._connack = loop.create_future()
        ep = self.endpoint
        try:
            async with asyncio.timeout(within):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self),
                    ep.host,
                    ep.port,
                    ssl=ep.tls,
                    server_hostname=ep.host if ep.tls else None,
                )
                self._protocol = protocol
                self._write(self._connect_packet())
                body = await self._connack
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._close_transport()
            raise LinkError(f"cannot connect: {exc or type(exc).__name__}", endpoint=str(ep)) from exc
        code = body[1] if len(body) > 1 else 0xFF
        if code != 0:
            self._close_transport()
            raise LinkRefused(f"connection refused with reason code 0x{code:02x}", endpoint=str(ep))
        self.session_present = bool(body[0] & 1)
        self._last_inbound = loop.time()
        self._ping_task = loop.create_task(self._keepalive())

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe; returns the granted QoS per filter, raises ``LinkError`` when one is refused."""
        assert self._loop is not None
        mid = self._packet_id()
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._subacks[mid] = fut
        self._write(subscribe_packet(filters, mid, v5=self.v5))
        reply = await fut
        codes = reply[2:]
        if self.v5:  # skip the SUBACK properties
            plen, k = read_varint(codes, 0)
            codes = codes[k + plen :]
        for (topic, _), code in zip(filters, codes, strict=False):
            if code >= 0x80:
                raise LinkError(
                    f"subscription to {topic} refused (0x{code:02x})", endpoint=str(self.endpoint)
                )
        return list(codes)

    def ack_ids(self, mids: Sequence[int]) -> None:
        """Acknowledge the QoS 1 messages with these packet identifiers (written together once per loop turn)."""
        if mids and self.is_connected:
            self._acks.extend(mids)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush_acks)

    async def close(self) -> None:
        """Send DISCONNECT (normal) and close. Unacknowledged messages stay in the broker's session."""
        if self.is_connected:
            self._flush_acks()
            self._write(DISCONNECT_PACKET)
        self._close_transport()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    @property
    def is_connected(self) -> bool:
        return self._protocol is not None and self.closed is not None and not self.closed.done()

    # ------------------------------------------------------------------ protocol callbacks

    def control_packet(self, kind: int, body: bytes) -> None:
        assert self._loop is not None
        self._last_inbound = self._loop.time()
        if kind == CONNACK and self._connack is not None and not self._connack.done():
            self._connack.set_result(body)
        elif kind == SUBACK:
            fut = self._subacks.pop((body[0] << 8) | body[1], None)
            if fut is not None and not fut.done():
                fut.set_result(body)
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            self.lost(ConnectionError(f"broker sent DISCONNECT (reason 0x{reason:02x})"))
        # PINGRESP only refreshes _last_inbound; nothing else is expected by a subscriber

    def lost(self, exc: BaseException | None) -> None:
        err = LinkError(f"connection lost: {exc or 'closed by the broker'}", endpoint=str(self.endpoint))
        for fut in [self._connack, *self._subacks.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.exception()
        self._subacks.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(err)
        self._close_transport()

    # ------------------------------------------------------------------ internals

    def _connect_packet(self) -> bytes:
        flags = 0x02 if self.clean_start else 0x00
        ep = self.endpoint
        if ep.username is not None:
            flags |= 0x80
            if ep.password is not None:
                flags |= 0x40
        header = mqtt_string("MQTT") + bytes([5 if self.v5 else 4, flags]) + struct.pack("!H", self.keepalive)
        if self.v5:
            props = b"\x21" + struct.pack("!H", self.receive_maximum)
            if self.session_expiry:
                props += b"\x11" + struct.pack("!I", self.session_expiry)
            header += varint(len(props)) + props
        payload = mqtt_string(self.client_id)
        if ep.username is not None:
            payload += mqtt_string(ep.username)
            if ep.password is not None:
                payload += mqtt_string(ep.password)
        return packet(0x10, header + payload)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        acks, self._acks = self._acks, []
        if acks and self.is_connected:
            self._write(puback_packets(acks))

    def _write(self, data: bytes) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.write(data)

    def pause_reading(self) -> bool:
        """Stop reading the socket (the broker and the kernel keep what arrives); False when not connected."""
        if self._protocol is None or self._protocol.transport is None or self._paused:
            return False
        self._protocol.transport.pause_reading()
        self._paused = True
        return True

    def resume_reading(self) -> None:
        if self._paused and self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.resume_reading()
        self._paused = False

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _keepalive(self) -> None:
        """PINGREQ every half keepalive; no traffic at all for 1.5 keepalives means the link is dead."""
        assert self._loop is not None
        interval = max(1.0, self.keepalive / 2)
        while self.is_connected:
            await asyncio.sleep(interval)
            if self._loop.time() - self._last_inbound > self.keepalive * 1.5:
                self.lost(TimeoutError("no PINGRESP within the keepalive"))
                return
            self._write(PINGREQ_PACKET)

    def _close_transport(self) -> None:
        if self._ping_task is not None and self._ping_task is not asyncio.current_task():
            self._ping_task.cancel()
        self._ping_task = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(RuntimeError):
                protocol.transport.close()
