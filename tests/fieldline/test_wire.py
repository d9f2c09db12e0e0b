"""The uplink contract for records: each kind survives a batch round trip and goes to its topic."""

from __future__ import annotations

from fieldline.wire import (
    EventRecord,
    RawRecord,
    RecordKind,
    StateRecord,
    Topics,
    decode_batch,
    encode_batch,
    encode_body,
    uplink_topic,
)


def test_event_records_round_trip_through_a_batch() -> None:
    records = [
        EventRecord(
            "boiler-1", 1_700_000_000.5, "alert", {"rule": "hot", "value": 91.5}, "rule:hot", "boiler"
        ),
        EventRecord(None, 1_700_000_001.0, "workflow.succeeded", {"output": None}, "a1b2"),
    ]
    payload = encode_batch(
        "gw-1", 7, RecordKind.EVENT, len(records), encode_body(records), backfill=False, sent_at=1.0
    )
    batch = decode_batch(payload)
    assert batch.kind is RecordKind.EVENT
    assert batch.records == records


def test_states_and_events_go_to_the_events_topic() -> None:
    assert uplink_topic("gw-1", EventRecord.kind) == Topics.up_events("gw-1") == "fl/gw-1/up/events"
    assert uplink_topic("gw-1", StateRecord.kind) == "fl/gw-1/up/events"
    assert uplink_topic("gw-1", RawRecord.kind) == "fl/gw-1/up/telemetry"
