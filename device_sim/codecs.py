"""Telemetry encodings of simulated devices, and the malformed payloads the faults send.

Good payloads follow docs/payloads.md exactly, so ``fieldline.payloads.decode_telemetry`` reads them back as the
values the model produced:

==============  =====================================================  =====================
codec           payload                                                CoAP Content-Format
==============  =====================================================  =====================
``json``        ``{"ts": …, "metrics": {…}}`` in JSON                  50 ``application/json``
``cbor``        the same map in CBOR                                   60 ``application/cbor``
``senml``       a SenML pack in JSON (``bn``, ``bt``, one record each)  110 ``senml+json``
``senml_cbor``  the same pack in CBOR with integer labels              112 ``senml+cbor``
==============  =====================================================  =====================

SenML has no null value: a null metric is left out of the pack. The malformed variants are really malformed
(each makes ``decode_telemetry`` raise): a JSON document cut short, a metric value of the wrong type (a map),
CBOR that is cut short or uses a reserved byte, and payloads over a size.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import cbor2
import orjson

Codec = Literal["json", "cbor", "senml", "senml_cbor"]

#: CoAP Content-Format number of each codec (``fieldline.payloads.CONTENT_FORMATS`` maps them back).
CONTENT_FORMATS: dict[str, int] = {"json": 50, "cbor": 60, "senml": 110, "senml_cbor": 112}
JSON_FORMAT, CBOR_FORMAT = 50, 60

_PAD = "x" * 256  # the longest string value docs/payloads.md allows


def dump_json(value: Any) -> bytes:
    """``value`` as compact JSON bytes. ``orjson.dumps`` returns a bytes object that keeps its 4 KiB working
    buffer (measured: about 4.1 KB of RSS per result): fine for a message sent at once, not for the payloads a
    runtime queues or keeps (a will per connection, buffered telemetry), so the result is copied to its size."""
    return bytes(bytearray(orjson.dumps(value)))


def encode(codec: str, device_id: str, ts: float, metrics: dict[str, Any], units: dict[str, str]) -> bytes:
    """One reading in the device's codec; ``units`` are used by SenML only."""
    if codec == "json":
        return dump_json({"ts": ts, "metrics": metrics})
    if codec == "cbor":
        return cbor2.dumps({"ts": ts, "metrics": metrics})
    if codec == "senml":
        return dump_json(_senml_pack(device_id, ts, metrics, units, _JSON_LABELS))
    return cbor2.dumps(_senml_pack(device_id, ts, metrics, units, _CBOR_LABELS))


_JSON_LABELS = {"bn": "bn", "bt": "bt", "n": "n", "u": "u", "v": "v", "vs": "vs", "vb": "vb"}
_CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4}


def _senml_pack(
    device_id: str, ts: float, metrics: dict[str, Any], units: dict[str, str], labels: dict[str, Any]
) -> list[dict[Any, Any]]:
    pack: list[dict[Any, Any]] = []
    for name, value in metrics.items():
        if value is None:
            continue
        record: dict[Any, Any] = {}
        if not pack:
            record[labels["bn"]] = f"{device_id}:"
            record[labels["bt"]] = ts
        record[labels["n"]] = name
        unit = units.get(name)
        if unit is not None:
            record[labels["u"]] = unit
        if isinstance(value, bool):
            record[labels["vb"]] = value
        elif isinstance(value, str):
            record[labels["vs"]] = value
        else:
            record[labels["v"]] = value
        pack.append(record)
    return pack


# --------------------------------------------------------------------------------------------- malformed


def truncated_json(ts: float, metrics: dict[str, Any], rng: random.Random) -> bytes:
    """A Fieldline JSON object cut short (between a fifth and all but its last byte): never valid JSON,
    because the closing brace is the last byte."""
    whole = orjson.dumps({"ts": ts, "metrics": metrics})
    return whole[: rng.randint(max(1, len(whole) // 5), len(whole) - 1)]


def invalid_cbor(ts: float, metrics: dict[str, Any], rng: random.Random) -> bytes:
    """CBOR that no decoder accepts: the reading's map cut short, or after it a byte with a reserved additional
    information value (0x1c-0x1e, RFC 8949 section 3)."""
    whole = cbor2.dumps({"ts": ts, "metrics": metrics})
    if rng.random() < 0.5:
        return whole[: rng.randint(1, len(whole) - 1)]
    head = whole[:1]  # the map header, then a reserved major-0 byte where its first key should start
    return head + bytes([rng.choice((0x1C, 0x1D, 0x1E))]) + whole[1:]


def wrong_type(
    codec: str, device_id: str, ts: float, metrics: dict[str, Any], name: str, units: dict[str, str]
) -> bytes:
    """The reading in the device's codec with metric ``name`` sent as a map ``{"value": …}``, which the
    contract refuses (``bad_type``; ``bad_senml`` in a SenML pack)."""
    broken = dict(metrics)
    broken[name] = {"value": metrics[name]}
    if codec in ("json", "cbor"):
        return encode(codec, device_id, ts, broken, units)
    labels = _JSON_LABELS if codec == "senml" else _CBOR_LABELS
    pack = _senml_pack(device_id, ts, {k: 0 if k == name else v for k, v in metrics.items()}, units, labels)
    for record in pack:
        if record.get(labels["n"]) == name:
            record[labels["v"]] = broken[name]
    data: Any = pack
    return dump_json(data) if codec == "senml" else cbor2.dumps(data)


def oversize(
    codec: str, device_id: str, ts: float, metrics: dict[str, Any], size: int, units: dict[str, str]
) -> bytes:
    """A reading that is well-formed but at least ``size`` bytes long: padded with diagnostic string metrics
    ``pad_0000``, ``pad_0001`` … of 256 characters each (a device dumping a debug blob)."""
    padded = dict(metrics)
    payload = encode(codec, device_id, ts, padded, units)
    while len(payload) < size:
        missing = size - len(payload)
        for _ in range(missing // 300 + 1):
            padded[f"pad_{len(padded):04d}"] = _PAD
        payload = encode(codec, device_id, ts, padded, units)
    return payload
