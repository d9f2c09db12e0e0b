"""Device telemetry payloads: Fieldline objects and SenML packs, in JSON or CBOR, decoded into points.

``decode_telemetry`` is on the gateway's hot path and is also used by the cloud and the simulator. It accepts

- a Fieldline object, ``{"ts": <optional timestamp>, "metrics": {name: value}}``, as JSON or CBOR;
- a SenML pack (RFC 8428), as JSON or CBOR (integer labels).

Every bad input raises ``PayloadError`` with one of the ``REASONS`` (used as a metric label and quarantine
column) and never anything else. ``docs/payloads.md`` is the prose version of this module: formats, timestamp
rules, limits and the reasons table; change both together.
"""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import cbor2
import orjson

from fieldline.errors import PayloadError
from fieldline.wire import ID_PATTERN, MetricValue, Point

__all__ = [
    "CONTENT_FORMATS",
    "MAX_STRING_LENGTH",
    "MIN_TIMESTAMP",
    "NAME_PATTERN",
    "REASONS",
    "SENML_MAX_VERSION",
    "SENML_RELATIVE_LIMIT",
    "decode_telemetry",
]

#: CoAP Content-Format numbers (RFC 7252, RFC 8428) -> ``content_format`` names for ``decode_telemetry``.
CONTENT_FORMATS: dict[int, str] = {50: "json", 60: "cbor", 110: "senml+json", 112: "senml+cbor"}

#: Every ``PayloadError.reason`` this module raises.
REASONS = (
    "empty", "too_large", "bad_json", "bad_cbor", "bad_shape", "bad_type", "bad_name", "bad_timestamp",
    "bad_device_id", "bad_senml",
)  # fmt: skip

#: Metric names: a letter or ``_`` first, then up to 63 letters, digits or ``_ . : -``.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
#: Longest string metric value, in characters.
MAX_STRING_LENGTH = 256
#: 2000-01-01T00:00:00Z: anything earlier is a device clock that was never set.
MIN_TIMESTAMP = 946684800.0
#: SenML times below 2**28 are relative to the time of reception (RFC 8428, section 4.5.3).
SENML_RELATIVE_LIMIT = 2**28
#: The SenML version this decoder understands (RFC 8428); packs declaring a higher ``bver`` are refused.
SENML_MAX_VERSION = 10

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Validated device ids and metric names are remembered (they repeat; the regex is the slow part) up to this
#: many each; a full cache is cleared. A remembered device id is also the one string object the points of that
#: device carry, whatever string the caller passed: the agent's per-device tables then find it by identity.
_CACHE_LIMIT = 4096
_SELF_DESCRIBED = b"\xd9\xd9\xf7"  # CBOR tag 55799, a magic prefix with no meaning of its own
_JSON_WHITESPACE = frozenset(b" \t\r\n")
_OPEN_BRACE, _OPEN_BRACKET = 0x7B, 0x5B
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))?", re.ASCII
)
_OBJECT_FIELDS = ("ts", "metrics")
_SENML_LABELS = ("bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "s", "t", "ut", "vd")
_SENML_JSON_LABELS: dict[Any, str] = {label: label for label in _SENML_LABELS}
_SENML_CBOR_LABELS: dict[Any, str] = {
    -1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
    0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd",
}  # fmt: skip

_valid_ids: dict[str, str] = {}
_valid_names: set[str] = set()


def decode_telemetry(
    payload: bytes,
    device_id: str,
    received_at: float,
    *,
    content_format: str | None = None,
    max_bytes: int = 65536,
    max_future_skew: float = 300.0,
) -> list[Point]:
    """Decode one device message into points, sorted by time; raises ``PayloadError`` for any bad input.

    ``content_format`` is one of the ``CONTENT_FORMATS`` names; None sniffs the payload: a first
    non-whitespace byte ``{`` is a Fieldline JSON object, ``[`` a SenML JSON pack, anything else is CBOR (a
    map is a Fieldline object, an array a SenML pack). ``json`` and ``cbor`` name the encoding and the shape
    picks the format; ``senml+json`` and ``senml+cbor`` require a SenML pack. An unknown name is a programming
    error (``ValueError``). ``received_at`` (epoch seconds) stands in for absent and relative times. The
    metrics dicts of the returned points are owned by the caller.
    """
    known = _valid_ids.get(device_id)
    device_id = _check_device_id(device_id) if known is None else known
    size = len(payload)
    if not size:
        raise PayloadError("empty", "empty payload", device_id=device_id)
    if size > max_bytes:
        raise PayloadError(
            "too_large", f"payload is {size} bytes, over the {max_bytes}-byte limit", device_id=device_id
        )
    if content_format is None:
        first = payload[0]
        if first != _OPEN_BRACE and first in _JSON_WHITESPACE:  # ``{`` (the common case) is tested once
            rest = bytes(payload).lstrip(b" \t\r\n")
            if not rest:
                raise PayloadError("empty", "payload is only whitespace", device_id=device_id)
            first = rest[0]
        if first == _OPEN_BRACE:
            return _object(_load_json(payload, device_id), device_id, received_at, max_future_skew)
        if first == _OPEN_BRACKET:
            return _senml(_load_json(payload, device_id), device_id, received_at, max_future_skew, False)
        return _by_shape(
            _load_cbor(payload, device_id, sniffed=True), True, device_id, received_at, max_future_skew
        )
    if content_format == "json":
        return _by_shape(_load_json(payload, device_id), False, device_id, received_at, max_future_skew)
    if content_format == "cbor":
        return _by_shape(_load_cbor(payload, device_id), True, device_id, received_at, max_future_skew)
    if content_format == "senml+json":
        return _senml(_load_json(payload, device_id), device_id, received_at, max_future_skew, False)
    if content_format == "senml+cbor":
        return _senml(_load_cbor(payload, device_id), device_id, received_at, max_future_skew, True)
    raise ValueError(
        f"unknown content format {content_format!r}; expected one of {sorted(CONTENT_FORMATS.values())}"
    )


# ---------------------------------------------------------------------------------------- decoding


def _load_json(payload: bytes, device_id: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_json", f"invalid JSON: {exc}", device_id=device_id) from None


def _load_cbor(payload: bytes, device_id: str, *, sniffed: bool = False) -> Any:
    """One CBOR data item and nothing after it.

    Maps at the top level are decoded with text/byte keys only: integer keys can be made to collide in
    Python's hash and turn one 64 KiB map into seconds of CPU. SenML packs (arrays) need integer labels.
    """
    data = payload[3:] if payload[:3] == _SELF_DESCRIBED else payload
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            allow_duplicate_keys=False,
            strict_hashable_types=bool(data) and 0xA0 <= data[0] <= 0xBF,
        )
        value = decoder.decode()
    # cbor2's semantic tag decoders (dates, decimals, regexes, MIME...) raise more than its own errors
    except Exception as exc:
        what = (
            "neither JSON (it does not start with '{' or '[') nor valid CBOR" if sniffed else "invalid CBOR"
        )
        raise PayloadError("bad_cbor", f"{what}: {exc}", device_id=device_id) from exc
    trailing = len(data) - stream.tell()
    if trailing:
        raise PayloadError(
            "bad_cbor",
            f"invalid CBOR: {trailing} bytes of trailing data after the first data item",
            device_id=device_id,
        )
    return value


def _by_shape(data: Any, cbor: bool, device_id: str, received_at: float, skew: float) -> list[Point]:
    if type(data) is dict:
        return _object(data, device_id, received_at, skew)
    if type(data) is list:
        return _senml(data, device_id, received_at, skew, cbor)
    raise PayloadError(
        "bad_shape",
        f'expected a map {{"ts": ..., "metrics": {{...}}}} or a SenML array, got {_kind(data)}',
        device_id=device_id,
    )


# --------------------------------------------------------------------------------------- Fieldline


def _object(data: dict[Any, Any], device_id: str, received_at: float, skew: float) -> list[Point]:
    """``{"ts": ..., "metrics": {...}}``; the decoded metrics dict becomes the point's, unchanged."""
    metrics = data.get("metrics")
    if metrics is None or len(data) != 1 + ("ts" in data):
        _object_fields(data, device_id)
    if type(metrics) is not dict or not metrics:
        what = "an empty map" if type(metrics) is dict else _kind(metrics)
        raise PayloadError("bad_shape", f"metrics must be a non-empty map, got {what}", device_id=device_id)
    names = _valid_names
    for name, value in metrics.items():
        if name not in names:
            _check_name(name, "metrics", device_id)
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # NaN or infinity
                _refuse_value(value, name, device_id)
        elif kind is int:
            if not _INT_MIN <= value <= _INT_MAX:
                _refuse_value(value, name, device_id)
        elif kind is str:
            if len(value) > MAX_STRING_LENGTH:
                _refuse_value(value, name, device_id)
        elif kind is not bool and value is not None:
            _refuse_value(value, name, device_id)
    ts = data.get("ts")
    if ts is None:
        when = received_at
    elif type(ts) is float and MIN_TIMESTAMP <= ts <= received_at + skew:
        when = ts
    elif type(ts) is int and MIN_TIMESTAMP <= ts <= received_at + skew and ts < 100_000_000_000:
        when = float(ts)  # whole epoch seconds: what ``_timestamp`` makes of them
    else:
        when = _timestamp(ts, "ts", device_id, received_at, skew)
    return [Point(device_id, when, metrics)]


def _object_fields(data: dict[Any, Any], device_id: str) -> None:
    """Raise ``bad_shape`` naming unknown fields or a missing ``metrics``."""
    unknown = [key for key in data if key not in _OBJECT_FIELDS]
    if unknown:
        shown = ", ".join(_show(key) for key in unknown[:5])
        raise PayloadError(
            "bad_shape", f"unknown field(s) {shown} (allowed: ts, metrics)", device_id=device_id
        )
    if "metrics" not in data:
        raise PayloadError("bad_shape", "missing 'metrics'", device_id=device_id)


def _refuse_value(value: Any, name: str, device_id: str) -> NoReturn:
    """Raise ``bad_type`` for a metric value that is not a finite number, bool, short string or null."""
    field = f"metrics.{name}"
    kind = type(value)
    if kind is float:
        raise PayloadError("bad_type", f"{value} is not a finite number", device_id=device_id, field=field)
    if kind is int:
        raise PayloadError(
            "bad_type", "integer outside the signed 64-bit range", device_id=device_id, field=field
        )
    if kind is str:
        raise PayloadError(
            "bad_type",
            f"string of {len(value)} characters is over the {MAX_STRING_LENGTH}-character limit",
            device_id=device_id,
            field=field,
        )
    raise PayloadError(
        "bad_type",
        f"unsupported value type {_kind(value)} (allowed: number, bool, string, null)",
        device_id=device_id,
        field=field,
    )


# ------------------------------------------------------------------------------------------- SenML


def _senml(pack: Any, device_id: str, received_at: float, skew: float, cbor: bool) -> list[Point]:
    """Resolve a SenML pack (RFC 8428 section 4.6) and group its records by time into points."""
    if type(pack) is not list:
        raise PayloadError("bad_senml", f"a SenML pack is an array, got {_kind(pack)}", device_id=device_id)
    if not pack:
        raise PayloadError("bad_senml", "empty SenML pack", device_id=device_id)
    labels, key_type = (_SENML_CBOR_LABELS, int) if cbor else (_SENML_JSON_LABELS, str)
    names = _valid_names
    base_name: str | None = None
    base_time: float | None = None
    base_value: float | None = None
    base_sum: float | None = None
    groups: dict[float, dict[str, MetricValue]] = {}
    for index, record in enumerate(pack):
        if type(record) is not dict:
            raise _senml_error("bad_senml", f"record is {_kind(record)}, not a map", device_id, index)
        name = time = number = total = value = None
        values = 0
        for key, item in record.items():
            label = labels.get(key)
            if label is None or type(key) is not key_type:
                raise _senml_error("bad_senml", f"unknown label {_show(key)}", device_id, index)
            if label == "n":
                name = item if type(item) is str else _senml_text(item, device_id, index, label)
            elif label == "v":
                number = (
                    item
                    if type(item) is float and item - item == 0.0
                    else _senml_number(item, device_id, index, label)
                )
                values += 1
            elif label == "u" or label == "bu":  # units are accepted and not kept
                if type(item) is not str:
                    _senml_text(item, device_id, index, label)
            elif label == "t":
                time = (
                    item
                    if type(item) is float and item - item == 0.0
                    else _senml_number(item, device_id, index, label)
                )
            elif label == "vs":
                value = (
                    item
                    if type(item) is str and len(item) <= MAX_STRING_LENGTH
                    else _senml_string(item, device_id, index)
                )
                values += 1
            elif label == "vb":
                value = item if type(item) is bool else _senml_boolean(item, device_id, index)
                values += 1
            elif label == "s":
                total = (
                    item
                    if type(item) is float and item - item == 0.0
                    else _senml_number(item, device_id, index, label)
                )
                values += 1
            elif label == "bn":
                base_name = item if type(item) is str else _senml_text(item, device_id, index, label)
            elif label == "bt":
                base_time = _senml_number(item, device_id, index, label)
            elif label == "bv":
                base_value = _senml_number(item, device_id, index, label)
            elif label == "bs":
                base_sum = _senml_number(item, device_id, index, label)
            else:
                _senml_other(label, item, device_id, index)
        if values != 1:
            _senml_values(record, labels, device_id, index)
        if number is not None:
            value = number if base_value is None else _senml_add(base_value, number, device_id, index, "v")
        elif total is not None:
            value = total if base_sum is None else _senml_add(base_sum, total, device_id, index, "s")
        if name is None:
            name = _senml_base_name(base_name, device_id, index)
        if name not in names:
            _check_name(name, f"[{index}].n", device_id)
        if time is None and base_time is None:
            when = received_at
        else:
            resolved = (base_time or 0) + (time or 0)
            when = received_at + resolved if resolved < SENML_RELATIVE_LIMIT else float(resolved)
            if not MIN_TIMESTAMP <= when <= received_at + skew:
                _out_of_range(resolved, when, f"[{index}].t", device_id, received_at, skew)
        metrics = groups.get(when)
        if metrics is None:
            groups[when] = {name: value}
        elif name in metrics:
            raise _senml_error(
                "bad_senml", f"a second record for {name!r} at the same time", device_id, index
            )
        else:
            metrics[name] = value
    if len(groups) == 1:
        return [Point(device_id, when, groups[when])]
    return [Point(device_id, when, groups[when]) for when in sorted(groups)]


def _senml_error(
    reason: str, message: str, device_id: str, index: int, label: str | None = None
) -> PayloadError:
    return PayloadError(
        reason, message, device_id=device_id, field=f"[{index}]" if label is None else f"[{index}].{label}"
    )


def _senml_text(item: Any, device_id: str, index: int, label: str) -> str:
    if type(item) is not str:
        raise _senml_error("bad_senml", f"must be a string, got {_kind(item)}", device_id, index, label)
    return item


def _senml_string(item: Any, device_id: str, index: int) -> NoReturn:
    """A ``vs`` value that is not a short string."""
    text = _senml_text(item, device_id, index, "vs")
    message = f"string of {len(text)} characters is over the {MAX_STRING_LENGTH}-character limit"
    raise _senml_error("bad_type", message, device_id, index, "vs")


def _senml_boolean(item: Any, device_id: str, index: int) -> NoReturn:
    raise _senml_error("bad_senml", f"must be a boolean, got {_kind(item)}", device_id, index, "vb")


def _senml_number(item: Any, device_id: str, index: int, label: str) -> float:
    """A finite float or 64-bit integer; out of range, a time is ``bad_timestamp``, a value ``bad_type``."""
    kind = type(item)
    if (kind is int and _INT_MIN <= item <= _INT_MAX) or (kind is float and math.isfinite(item)):
        return item
    if kind is not int and kind is not float:
        raise _senml_error("bad_senml", f"must be a number, got {_kind(item)}", device_id, index, label)
    reason = (
        "bad_timestamp"
        if label in ("t", "bt")
        else "bad_type"
        if label in ("v", "bv", "s", "bs")
        else "bad_senml"
    )
    problem = "is not a finite number" if kind is float else "is outside the signed 64-bit range"
    raise _senml_error(reason, f"{item} {problem}", device_id, index, label)


def _senml_other(label: str, item: Any, device_id: str, index: int) -> None:
    """The labels that carry nothing kept, update time and version; and ``vd``, refused."""
    if label == "ut":
        _senml_number(item, device_id, index, label)
    elif label == "bver":
        if type(item) is not int or item < 1:
            raise _senml_error(
                "bad_senml", f"must be a positive integer, got {_show(item)}", device_id, index, label
            )
        if item > SENML_MAX_VERSION:
            message = f"SenML version {item} is newer than the supported version {SENML_MAX_VERSION}"
            raise _senml_error("bad_senml", message, device_id, index, label)
    else:
        raise _senml_error(
            "bad_senml", "data values (vd) are not supported; send v, vs, vb or s", device_id, index, label
        )


def _senml_values(record: dict[Any, Any], labels: dict[Any, str], device_id: str, index: int) -> NoReturn:
    """Raise for a record with no value or several: exactly one of v, vs, vb or s is wanted."""
    present = [label for key in record if (label := labels[key]) in ("v", "vs", "vb", "s")]
    if not present:
        raise _senml_error(
            "bad_senml", "record has no value: one of v, vs, vb or s is required", device_id, index
        )
    message = f"record has more than one value ({', '.join(present)}); send them as separate records"
    raise _senml_error("bad_senml", message, device_id, index)


def _senml_add(base: float, item: float, device_id: str, index: int, label: str) -> float:
    """``bv + v`` or ``bs + s``, still a finite float or a 64-bit integer."""
    value = base + item
    if math.isfinite(value) if type(value) is float else _INT_MIN <= value <= _INT_MAX:
        return value
    raise _senml_error("bad_type", f"{value} (with the base added) is out of range", device_id, index, label)


def _senml_base_name(base_name: str | None, device_id: str, index: int) -> str:
    """Without ``n``, the metric is the last ``/`` or ``:`` segment of ``bn`` (the rest names the device)."""
    if base_name is None:
        raise _senml_error("bad_senml", "record has no name (n) and no base name (bn)", device_id, index)
    name = base_name[max(base_name.rfind("/"), base_name.rfind(":")) + 1 :]
    if not name:
        message = f"record has no name (n) and base name {_show(base_name)} ends with a separator"
        raise _senml_error("bad_senml", message, device_id, index)
    return name


# -------------------------------------------------------------------------------------- timestamps


def _timestamp(value: Any, field: str, device_id: str, received_at: float, skew: float) -> float:
    """A Fieldline ``ts`` as epoch seconds: a number (unit by magnitude), RFC 3339 text, a CBOR date/time."""
    kind = type(value)
    if kind is float or kind is int:
        if kind is float and not math.isfinite(value):
            raise PayloadError(
                "bad_timestamp", f"{value} is not a finite number", device_id=device_id, field=field
            )
        if kind is int and not _INT_MIN <= value <= _INT_MAX:
            raise PayloadError(
                "bad_timestamp", "integer outside the signed 64-bit range", device_id=device_id, field=field
            )
        magnitude = abs(value)
        if magnitude < 1e11:
            seconds = float(value)
        elif magnitude < 1e14:
            seconds = value / 1e3
        elif magnitude < 1e17:
            seconds = value / 1e6
        else:
            seconds = value / 1e9
    elif kind is str:
        seconds = _rfc3339(value, field, device_id)
    elif isinstance(value, datetime) and value.tzinfo is not None:  # CBOR tags 0 and 1
        seconds = value.timestamp()
    else:
        what = (
            "a boolean is not a timestamp" if kind is bool else f"unsupported timestamp type {_kind(value)}"
        )
        raise PayloadError("bad_timestamp", what, device_id=device_id, field=field)
    if not MIN_TIMESTAMP <= seconds <= received_at + skew:
        _out_of_range(value, seconds, field, device_id, received_at, skew)
    return seconds


def _rfc3339(text: str, field: str, device_id: str) -> float:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise PayloadError(
            "bad_timestamp",
            f"{_show(text)} is not an RFC 3339 time such as 2024-11-22T10:00:00Z",
            device_id=device_id,
            field=field,
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_hours, off_minutes = match.groups()
    if zulu is None and sign is None:
        raise PayloadError(
            "bad_timestamp",
            f"{_show(text)} has no UTC offset; add Z or +hh:mm",
            device_id=device_id,
            field=field,
        )
    leap = second == "60"  # a leap second is the same instant as the next second in epoch time
    offset = timedelta(hours=int(off_hours), minutes=int(off_minutes)) if sign else timedelta()
    if sign and (int(off_hours) > 23 or int(off_minutes) > 59):
        raise PayloadError(
            "bad_timestamp", f"{_show(text)}: UTC offset out of range", device_id=device_id, field=field
        )
    try:
        stamp = datetime(
            int(year), int(month), int(day), int(hour), int(minute), 59 if leap else int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise PayloadError(
            "bad_timestamp", f"{_show(text)}: {exc}", device_id=device_id, field=field
        ) from None
    seconds = stamp.timestamp() + leap + (float(fraction) if fraction else 0.0)
    return seconds - offset.total_seconds() if sign == "+" else seconds + offset.total_seconds()


def _out_of_range(
    given: Any, seconds: float, field: str, device_id: str, received_at: float, skew: float
) -> NoReturn:
    """Raise ``bad_timestamp`` for a time before 2000 or more than ``skew`` seconds after reception."""
    shown = _show(given) if seconds == given else f"{_show(given)} (read as {seconds:.3f} epoch seconds)"
    if seconds < MIN_TIMESTAMP:
        raise PayloadError(
            "bad_timestamp",
            f"{shown} is before 2000-01-01T00:00:00Z; a device without a clock must omit the time",
            device_id=device_id,
            field=field,
        )
    raise PayloadError(
        "bad_timestamp",
        f"{shown} is {seconds - received_at:.3f} s after the time of reception (at most {skew:g} s allowed)",
        device_id=device_id,
        field=field,
    )


# ----------------------------------------------------------------------------------- ids and names


def _check_device_id(device_id: Any) -> str:
    """``device_id`` once validated, remembered as the device's canonical string."""
    if type(device_id) is not str or ID_PATTERN.fullmatch(device_id) is None:
        raise PayloadError(
            "bad_device_id",
            f"invalid device id {_show(device_id)}: expected {ID_PATTERN.pattern}",
            device_id=device_id if type(device_id) is str else None,
        )
    if len(_valid_ids) >= _CACHE_LIMIT:
        _valid_ids.clear()
    _valid_ids[device_id] = device_id
    return device_id


def _check_name(name: Any, field: str, device_id: str) -> None:
    if type(name) is not str:
        raise PayloadError(
            "bad_name", f"metric name must be a string, got {_kind(name)}", device_id=device_id, field=field
        )
    if NAME_PATTERN.fullmatch(name) is None:
        raise PayloadError(
            "bad_name",
            f"invalid metric name {_show(name)}: expected {NAME_PATTERN.pattern}",
            device_id=device_id,
            field=field,
        )
    if len(_valid_names) >= _CACHE_LIMIT:
        _valid_names.clear()
    _valid_names.add(name)


# ---------------------------------------------------------------------------------------- messages


def _kind(value: Any) -> str:
    """A value's type in the payload's terms, for messages."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, bytes):
        return "a byte string"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _show(value: Any, limit: int = 64) -> str:
    """``repr`` cut to ``limit`` characters: device input can be long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
