"""Ingest's shortcut for telemetry topics agrees with the wire contract's topic parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.ingest import telemetry_device
from fieldline.wire import parse_device_topic

SEGMENTS = st.sampled_from(["devices", "telemetry", "state", "", "dev-1", "a/b", "devices/", "/telemetry"])


@given(st.one_of(st.lists(SEGMENTS, max_size=4).map("/".join), st.text(max_size=30)))
def test_telemetry_device_is_what_parse_device_topic_says(topic: str) -> None:
    parsed = parse_device_topic(topic)
    expected = parsed[0] if parsed is not None and parsed[1] == "telemetry" else None
    assert telemetry_device(topic) == expected
