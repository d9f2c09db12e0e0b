"""Fieldline: the wire contract and the tools every part shares (errors, YAML loading, durations).

Importing ``fieldline`` is cheap: the CLI, demo and brokers are imported only by the commands that use them.
"""

from fieldline.errors import (
    BatchDecodeError,
    ConfigError,
    ConfigIssue,
    FieldlineError,
    PayloadError,
    WireError,
)
from fieldline.payloads import decode_telemetry
from fieldline.wire import (
    PROTOCOL_VERSION,
    AggregateRecord,
    Batch,
    EventRecord,
    FlagRecord,
    Point,
    RawRecord,
    RecordKind,
    StateRecord,
    Topics,
    decode_batch,
    encode_batch,
)
from fieldline.yamlconf import load_model

__all__ = [
    "PROTOCOL_VERSION",
    "AggregateRecord",
    "Batch",
    "BatchDecodeError",
    "ConfigError",
    "ConfigIssue",
    "EventRecord",
    "FieldlineError",
    "FlagRecord",
    "PayloadError",
    "Point",
    "RawRecord",
    "RecordKind",
    "StateRecord",
    "Topics",
    "WireError",
    "decode_batch",
    "decode_telemetry",
    "encode_batch",
    "load_model",
]
