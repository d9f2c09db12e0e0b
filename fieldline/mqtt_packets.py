"""MQTT 5 / 3.1.1 packet encoding shared by Fieldline's two lean asyncio MQTT clients: the agent's southbound
subscriber (``edge_agent/mqtt_subscriber.py``) and the simulator's device client (``device_sim/mqtt_client.py``).

Only what those clients send and parse is here: packet types, the variable byte integer, length-prefixed
strings, a fixed header around a body, PUBLISH and SUBSCRIBE. Standard library only, so that both the edge and
the simulator installs carry it.
"""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    1,
    2,
    3,
    4,
    8,
    9,
    12,
    13,
    14,
)
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


def varint(value: int) -> bytes:
    """``value`` as an MQTT variable byte integer (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, start: int) -> tuple[int, int]:
    """The variable byte integer at ``data[start:]``: (value, how many bytes it took)."""
    value, mult, i = 0, 1, start
    while True:
        byte = data[i]
        i += 1
        value += (byte & 0x7F) * mult
        if byte < 0x80:
            return value, i - start
        mult *= 128


def packet_bounds(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Where the body of the packet starting at ``data[pos]`` begins and ends; None when ``data`` does not hold
    it whole yet (its fixed header or its body is cut)."""
    n = len(data)
    i, mult, length = pos + 1, 1, 0
    while i < n:
        byte = data[i]
        i += 1
        length += (byte & 0x7F) * mult
        if byte < 0x80:
            return (i, i + length) if i + length <= n else None
        mult *= 128
    return None


def mqtt_string(value: str | bytes) -> bytes:
    """A UTF-8 string or binary data with its two-byte length first."""
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    """``body`` behind its fixed header: ``first`` (type and flags) and the remaining length."""
    return bytes([first]) + varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, mid: int = 0, v5: bool = True
) -> bytes:
    """One PUBLISH packet (no properties); ``mid`` is required (non-zero) at QoS 1."""
    body = mqtt_string(topic) + (struct.pack("!H", mid) if qos else b"") + (b"\x00" if v5 else b"") + payload
    return packet(0x30 | (qos << 1) | int(retain), body)


def subscribe_packet(filters: list[tuple[str, int]], mid: int, *, v5: bool = True) -> bytes:
    """One SUBSCRIBE packet for ``(filter, qos)`` pairs (QoS 2 is asked as 1: these clients never use it)."""
    body = struct.pack("!H", mid) + (b"\x00" if v5 else b"")
    for topic, qos in filters:
        body += mqtt_string(topic) + bytes([min(qos, 1)])
    return packet(0x82, body)
