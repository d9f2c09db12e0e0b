"""What a decoded uplink batch must hold before ingest stores any of it.

``decode_batch`` checks the envelope and unpacks the records by position; it does not look inside them.
``batch_problem`` checks each record's structure: device ids, timestamps, names, the containers and the types a
store relies on. A batch failing it is quarantined whole, with the first problem named, instead of failing deep
inside a store. Metric values are not judged here: the time-series store keeps the numbers and booleans and
leaves out (and counts) what it cannot hold (text, null, non-finite), so one odd value never costs its batch.

It runs on every record ingest receives, so the common case is kept cheap: a device id is matched once per batch,
and a raw record with a float timestamp costs a few type checks.
"""

from __future__ import annotations

from typing import Any

import orjson

from fieldline.wire import (
    AggregateRecord,
    Batch,
    EventRecord,
    FlagRecord,
    RawRecord,
    Record,
    StateRecord,
    valid_id,
)

MAX_TS = 2.0**33
"""Epoch seconds beyond year 2242 are refused (and so is anything at or below 0)."""
MAX_NAME = 128
MAX_TEXT = 4096
MAX_JSON = 64 * 1024


def _ts(value: Any) -> bool:
    kind = type(value)
    return (kind is float or kind is int) and 0 < value < MAX_TS


def _name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_NAME


def _text(value: Any, limit: int) -> bool:
    return value is None or (type(value) is str and len(value) <= limit)


def _json(value: Any) -> bool:
    """A map the registry can store as JSON (text keys, no bytes, no CBOR tags), of bounded size."""
    if type(value) is not dict:
        return False
    try:
        return len(orjson.dumps(value)) <= MAX_JSON
    except TypeError:
        return False


def _raw(record: RawRecord) -> str | None:
    if not _ts(record.ts):
        return f"invalid ts {record.ts!r}"
    metrics = record.metrics
    if type(metrics) is not dict or not metrics:
        return "metrics must be a non-empty map"
    for name in metrics:
        if not _name(name):
            return f"invalid metric name {name!r}"
    return None


def _aggregate(record: AggregateRecord) -> str | None:
    width = record.width
    if not _name(record.metric) or not _ts(record.start) or type(width) not in (int, float) or not width > 0:
        return f"invalid aggregate window {record.metric!r} {record.start!r}+{width!r}"
    if type(record.values) is not dict or not record.values or not all(_name(k) for k in record.values):
        return f"{record.metric}: aggregates must be a non-empty map by name"
    if type(record.partial) is not bool:
        return f"{record.metric}: partial must be a boolean"
    return None


def _flag(record: FlagRecord) -> str | None:
    if not _name(record.metric) or not _ts(record.ts) or not _name(record.flag):
        return f"invalid data-quality flag {record.flag!r} on {record.metric!r}"
    if type(record.detail) is not str or len(record.detail) > MAX_TEXT:
        return f"{record.metric}: flag detail must be text"
    return None


def _state(record: StateRecord) -> str | None:
    if not _ts(record.ts) or not _name(record.state) or not _json(record.attributes):
        return "invalid state record"
    return None


def _event(record: EventRecord) -> str | None:
    if not _ts(record.ts) or not _name(record.type) or not _json(record.data):
        return f"invalid event record {record.type!r}"
    if not _text(record.source, 200) or not _text(record.device_type, 200):
        return "event source and device type must be short text"
    return None


_CHECKS: dict[type[Any], Any] = {
    RawRecord: _raw,
    AggregateRecord: _aggregate,
    FlagRecord: _flag,
    StateRecord: _state,
    EventRecord: _event,
}


def batch_problem(batch: Batch) -> str | None:
    """The first thing wrong with ``batch``, or None when every record can be stored."""
    if batch.seq < 1:
        return f"seq must be positive, not {batch.seq}"
    good_ids: set[str] = set()
    for index, record in enumerate(batch.records):
        problem = _record_problem(record, good_ids)
        if problem is not None:
            return f"record {index}: {problem}"
    return None


def _record_problem(record: Record, good_ids: set[str]) -> str | None:
    device = record.device_id
    if type(device) is str:
        if device not in good_ids:
            if not valid_id(device):
                return f"invalid device id {device!r}"
            good_ids.add(device)
    elif device is not None or type(record) is not EventRecord:
        return f"invalid device id {device!r}"
    problem = _CHECKS[type(record)](record)
    return None if problem is None else f"{device}: {problem}"
