"""The southbound subscriber's framing without a network: PUBLISHes per socket read, coalesced PUBACKs.

Its behaviour against a broker (sessions, QoS 1 redelivery, acknowledgement after commit) is tested over a real
Mosquitto in test_agent_e2e.py and test_agent_crash.py.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.mqtt_link import Endpoint
from edge_agent.mqtt_subscriber import InboundMessage, MqttSubscriber, _Protocol, puback_packets


def publish(topic: str, payload: bytes, qos: int, mid: int) -> bytes:
    """An MQTT 5 PUBLISH with no properties."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"") + b"\x00" + payload
    length, size = bytearray(), len(body)
    while True:  # the remaining length: seven bits a byte, least significant first
        size, low = divmod(size, 128)
        length.append(low | (0x80 if size else 0))
        if not size:
            return bytes([0x30 | qos << 1]) + length + body


@given(st.lists(st.integers(1, 65535), max_size=300))
def test_puback_packets_are_the_packets_one_by_one(mids: list[int]) -> None:
    assert puback_packets(mids) == b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)


@given(
    st.lists(
        st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=20_000)), min_size=1, max_size=30
    ),
    st.data(),
)
def test_each_socket_read_hands_over_its_complete_publishes_in_order(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(publish(f"devices/d{i}/telemetry", p, i % 2, i + 1) for i, p in enumerate(payloads))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    calls: list[list[InboundMessage]] = []
    subscriber = MqttSubscriber(Endpoint("127.0.0.1", 1883), client_id="t", on_messages=calls.append)
    protocol = _Protocol(subscriber)
    for read in reads:
        protocol.data_received(read)
    assert all(calls), "no empty hand-over"
    assert len(calls) <= len(reads)
    received = [m for call in calls for m in call]
    assert [(m.topic, m.payload, m.qos, m.mid) for m in received] == [
        (f"devices/d{i}/telemetry", p, i % 2, (i + 1) if i % 2 else 0) for i, p in enumerate(payloads)
    ]
    assert not protocol.buf
