"""The wire contract between devices, gateways and the cloud (protocol version 1).

Everything that crosses a network in Fieldline is named here: topic names, the point and record models, and the
uplink batch envelope. Device payload decoding (JSON, CBOR, SenML) lives beside it in ``fieldline.payloads``.
``docs/protocol.md`` is the prose version of this module; change both together and bump ``PROTOCOL_VERSION`` on
any incompatible change.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import cbor2

from fieldline.errors import BatchDecodeError

PROTOCOL_VERSION = 1

#: Device and gateway ids: 1-128 characters, letters, digits and ``. _ : -``, starting with a letter or digit.
#: They appear inside MQTT topics and CoAP paths, so ``/ + #`` and whitespace are excluded.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

MetricValue = float | int | bool | str | None


def valid_id(value: str) -> bool:
    """True when ``value`` is a valid device or gateway id."""
    return ID_PATTERN.fullmatch(value) is not None


# --------------------------------------------------------------------------------------------------- topics


class Topics:
    """Topic names; every publish and subscribe in Fieldline goes through these."""

    DEVICE_TELEMETRY_FILTER = "devices/+/telemetry"
    DEVICE_STATE_FILTER = "devices/+/state"
    DEVICE_COMMAND_ACK_FILTER = "devices/+/commands/ack"

    @staticmethod
    def device_telemetry(device_id: str) -> str:
        return f"devices/{device_id}/telemetry"

    @staticmethod
    def device_state(device_id: str) -> str:
        return f"devices/{device_id}/state"

    @staticmethod
    def device_commands(device_id: str) -> str:
        return f"devices/{device_id}/commands"

    @staticmethod
    def device_command_ack(device_id: str) -> str:
        return f"devices/{device_id}/commands/ack"

    @staticmethod
    def up_telemetry(gateway_id: str) -> str:
        return f"fl/{gateway_id}/up/telemetry"

    @staticmethod
    def up_events(gateway_id: str) -> str:
        return f"fl/{gateway_id}/up/events"

    @staticmethod
    def up_status(gateway_id: str) -> str:
        return f"fl/{gateway_id}/up/status"

    @staticmethod
    def down_config(gateway_id: str) -> str:
        return f"fl/{gateway_id}/down/config"

    @staticmethod
    def down_commands(gateway_id: str) -> str:
        return f"fl/{gateway_id}/down/commands"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """Split ``devices/{id}/{kind}`` into ``(id, kind)``; None when the topic is not a device topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "devices" or not parts[1]:
        return None
    return parts[1], parts[2]


# --------------------------------------------------------------------------------------------------- points


@dataclass(slots=True)
class Point:
    """One decoded reading: a device, a timestamp (epoch seconds, float) and named metric values."""

    device_id: str
    ts: float
    metrics: dict[str, MetricValue]


# --------------------------------------------------------------------------------------------------- records


class RecordKind(StrEnum):
    """What an uplink record carries. The outbox drops ``raw`` before anything else when it overflows."""

    RAW = "raw"  # cleaned points passed through unaggregated
    AGG = "agg"  # one window aggregate of one metric
    FLAG = "dq"  # a data-quality flag (stuck sensor, outlier burst, late data)
    STATE = "state"  # a device's online/offline state and attributes
    EVENT = "event"  # an event raised on the gateway: a rule's alert, an `emit` action, a workflow's end


@dataclass(slots=True)
class RawRecord:
    device_id: str
    ts: float
    metrics: dict[str, MetricValue]

    kind = RecordKind.RAW

    def to_wire(self) -> list[Any]:
        return [self.device_id, self.ts, self.metrics]

    @classmethod
    def from_wire(cls, item: list[Any]) -> RawRecord:
        return cls(item[0], item[1], item[2])


@dataclass(slots=True)
class AggregateRecord:
    """Aggregates of one metric over the window ``[start, start + width)``.

    ``partial`` marks a window flushed before it closed (agent shutdown); a later record for the same window
    continues it and the receiver merges the two (count, sum, min, max, first, last, mean and stddev merge
    exactly; percentiles of merged partials are approximate).
    """

    device_id: str
    metric: str
    start: float
    width: float
    values: dict[str, float]
    partial: bool = False

    kind = RecordKind.AGG

    def to_wire(self) -> list[Any]:
        return [self.device_id, self.metric, self.start, self.width, self.values, self.partial]

    @classmethod
    def from_wire(cls, item: list[Any]) -> AggregateRecord:
        return cls(item[0], item[1], item[2], item[3], item[4], item[5])


@dataclass(slots=True)
class FlagRecord:
    """A data-quality observation about one metric of one device at ``ts`` (``flag`` such as ``stuck``)."""

    device_id: str
    metric: str
    ts: float
    flag: str
    detail: str = ""

    kind = RecordKind.FLAG

    def to_wire(self) -> list[Any]:
        return [self.device_id, self.metric, self.ts, self.flag, self.detail]

    @classmethod
    def from_wire(cls, item: list[Any]) -> FlagRecord:
        return cls(item[0], item[1], item[2], item[3], item[4])


@dataclass(slots=True)
class StateRecord:
    """A device's reported state (``online``/``offline``/other) with its attributes."""

    device_id: str
    ts: float
    state: str
    attributes: dict[str, Any] = field(default_factory=dict)

    kind = RecordKind.STATE

    def to_wire(self) -> list[Any]:
        return [self.device_id, self.ts, self.state, self.attributes]

    @classmethod
    def from_wire(cls, item: list[Any]) -> StateRecord:
        return cls(item[0], item[1], item[2], item[3])


@dataclass(slots=True)
class EventRecord:
    """An event raised on the gateway (``type`` such as ``alert``), with its data; ``device_id`` and
    ``device_type`` when it concerns a device, ``source`` what raised it (``rule:<id>``, an instance id)."""

    device_id: str | None
    ts: float
    type: str
    data: dict[str, Any]
    source: str | None = None
    device_type: str | None = None

    kind = RecordKind.EVENT

    def to_wire(self) -> list[Any]:
        return [self.device_id, self.ts, self.type, self.data, self.source, self.device_type]

    @classmethod
    def from_wire(cls, item: list[Any]) -> EventRecord:
        return cls(item[0], item[1], item[2], item[3], item[4], item[5])


Record = RawRecord | AggregateRecord | FlagRecord | StateRecord | EventRecord

RECORD_TYPES: dict[RecordKind, type[Record]] = {
    RecordKind.RAW: RawRecord,
    RecordKind.AGG: AggregateRecord,
    RecordKind.FLAG: FlagRecord,
    RecordKind.STATE: StateRecord,
    RecordKind.EVENT: EventRecord,
}


def uplink_topic(gateway_id: str, kind: RecordKind) -> str:
    """Device states and events go to the events topic; everything else is telemetry."""
    if kind is RecordKind.STATE or kind is RecordKind.EVENT:
        return Topics.up_events(gateway_id)
    return Topics.up_telemetry(gateway_id)


# --------------------------------------------------------------------------------------------------- batches

BODY_CODEC = "cbor+zlib"


def encode_body(records: list[Record]) -> bytes:
    """The sealed part of a batch: zlib-compressed CBOR array of records in their compact array form."""
    return zlib.compress(cbor2.dumps([r.to_wire() for r in records]), 6)


def encode_body_items(items: list[bytes]) -> bytes:
    """Seal records that were already CBOR-encoded one by one (as the outbox stores them)."""
    n = len(items)
    if n < 24:
        head = bytes([0x80 + n])
    elif n < 256:
        head = bytes([0x98, n])
    elif n < 65536:
        head = bytes([0x99]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x9A]) + n.to_bytes(4, "big")
    return zlib.compress(head + b"".join(items), 6)


def encode_record(record: Record) -> bytes:
    """One record as a CBOR array (what the outbox stores per record)."""
    return cbor2.dumps(record.to_wire())


@dataclass(slots=True)
class Batch:
    """An uplink batch: records of one kind from one gateway, numbered by ``seq``.

    ``seq`` is strictly increasing per gateway and survives restarts; a batch retransmitted after an outage keeps
    its ``seq``, so the cloud drops it as a duplicate by ``(gateway, seq)``. ``backfill`` marks batches that waited
    in the outbox (an outage or a restart) rather than leaving at once.
    """

    gateway: str
    seq: int
    kind: RecordKind
    records: list[Record]
    backfill: bool = False
    sent_at: float = 0.0


def encode_batch(
    gateway: str, seq: int, kind: RecordKind, count: int, body: bytes, *, backfill: bool, sent_at: float
) -> bytes:
    """The envelope around a sealed body; built at send time so ``backfill``/``sent_at`` are current."""
    return cbor2.dumps(
        {
            "v": PROTOCOL_VERSION,
            "gateway": gateway,
            "seq": seq,
            "kind": str(kind),
            "count": count,
            "backfill": backfill,
            "sent_at": sent_at,
            "codec": BODY_CODEC,
            "body": body,
        }
    )


def decode_batch(payload: bytes) -> Batch:
    """Decode an uplink envelope and its body; raises ``BatchDecodeError`` naming what is wrong."""
    try:
        env = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several unrelated types for bad input
        raise BatchDecodeError(f"envelope is not CBOR: {exc}") from exc
    if not isinstance(env, dict):
        raise BatchDecodeError("envelope is not a map")
    if env.get("v") != PROTOCOL_VERSION:
        raise BatchDecodeError(f"unsupported protocol version {env.get('v')!r}")
    try:
        kind = RecordKind(env["kind"])
        gateway, seq = env["gateway"], env["seq"]
        if env.get("codec") != BODY_CODEC:
            raise BatchDecodeError(f"unsupported body codec {env.get('codec')!r}")
        items = cbor2.loads(zlib.decompress(env["body"]))
        cls = RECORD_TYPES[kind]
        records: list[Record] = [cls.from_wire(item) for item in items]
    except BatchDecodeError:
        raise
    except Exception as exc:
        raise BatchDecodeError(f"malformed batch: {exc!r}") from exc
    if not isinstance(gateway, str) or not isinstance(seq, int):
        raise BatchDecodeError("gateway must be a string and seq an integer")
    return Batch(gateway, seq, kind, records, bool(env.get("backfill")), float(env.get("sent_at", 0.0)))
