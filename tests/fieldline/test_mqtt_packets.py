"""The MQTT packet encoders both lean clients share, checked against the specification's examples and paho."""

from __future__ import annotations

import paho.mqtt.packettypes as packettypes
import pytest

from fieldline.mqtt_packets import (
    DISCONNECT,
    PUBLISH,
    SUBSCRIBE,
    mqtt_string,
    packet,
    packet_bounds,
    publish_packet,
    read_varint,
    subscribe_packet,
    varint,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (268_435_455, b"\xff\xff\xff\x7f"),  # the largest remaining length MQTT allows
    ],
)
def test_variable_byte_integers_as_the_specification_lists_them(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded
    assert read_varint(b"\x99" + encoded + b"\x00", 1) == (value, len(encoded))


def test_packet_types_are_pahos() -> None:
    types = packettypes.PacketTypes
    assert (PUBLISH, SUBSCRIBE, DISCONNECT) == (types.PUBLISH, types.SUBSCRIBE, types.DISCONNECT)


def test_publish_and_subscribe_packets() -> None:
    assert mqtt_string("a/b") == b"\x00\x03a/b"
    assert packet(0xE0, b"") == b"\xe0\x00"
    assert publish_packet("t", b"hi", v5=False) == b"\x30\x05\x00\x01thi"
    assert publish_packet("t", b"hi", qos=1, mid=7, retain=True) == b"\x33\x08\x00\x01t\x00\x07\x00hi"
    assert subscribe_packet([("a/#", 1), ("b", 2)], 5, v5=False) == (
        b"\x82\x0c\x00\x05" + b"\x00\x03a/#\x01" + b"\x00\x01b\x01"
    )
    assert subscribe_packet([("a", 0)], 1) == b"\x82\x07\x00\x01\x00" + b"\x00\x01a\x00"


def test_packet_bounds_finds_whole_packets_and_waits_for_cut_ones() -> None:
    # a PUBLISH with a 2-byte remaining length, then a PINGRESP
    two = publish_packet("t", b"x" * 200, v5=False) + packet(0xD0, b"")
    assert packet_bounds(two, 0) == (3, 206)
    assert packet_bounds(two, 206) == (208, 208)
    assert packet_bounds(two[:2], 0) is None, "the remaining length is cut"
    assert packet_bounds(two[:100], 0) is None, "the body is cut"
