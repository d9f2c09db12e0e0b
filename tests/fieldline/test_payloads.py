"""Device payload decoding: every format and timestamp form, every refusal reason, hypothesis properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import cbor2
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldline.errors import PayloadError
from fieldline.payloads import (
    CONTENT_FORMATS,
    MAX_STRING_LENGTH,
    MIN_TIMESTAMP,
    NAME_PATTERN,
    REASONS,
    decode_telemetry,
)
from fieldline.wire import Point

NOW = 1_732_262_400.0 + 3600.0  # the time of reception in every test: 2024-11-22T09:00:00Z
TS = 1_732_262_400.123  # 2024-11-22T08:00:00.123Z
DEV = "dev-1"


def decode(payload: bytes, content_format: str | None = None, **kwargs: Any) -> list[Point]:
    return decode_telemetry(payload, DEV, NOW, content_format=content_format, **kwargs)


def refused(
    payload: bytes, content_format: str | None = None, device_id: str = DEV, **kwargs: Any
) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        decode_telemetry(payload, device_id, NOW, content_format=content_format, **kwargs)
    return info.value


def obj(metrics: Any, **fields: Any) -> dict[str, Any]:
    return {**fields, "metrics": metrics}


# ------------------------------------------------------------------------------- Fieldline objects


def test_json_object_decodes_to_one_point() -> None:
    payload = (
        b'{"ts":1732262400.123,"metrics":{"temperature":21.5,"humidity":40,"on":true,"mode":"eco","x":null}}'
    )
    assert decode(payload) == [
        Point(DEV, TS, {"temperature": 21.5, "humidity": 40, "on": True, "mode": "eco", "x": None})
    ]


def test_cbor_object_decodes_like_json() -> None:
    data = obj({"temperature": 21.5, "humidity": 40, "on": False, "mode": "eco", "x": None}, ts=TS)
    assert decode(cbor2.dumps(data)) == decode(orjson.dumps(data))


def test_self_described_cbor_is_accepted() -> None:
    payload = cbor2.dumps(cbor2.CBORTag(55799, obj({"t": 1}, ts=TS)))
    assert payload.startswith(b"\xd9\xd9\xf7")
    assert decode(payload) == [Point(DEV, TS, {"t": 1})]


def test_absent_or_null_ts_is_the_time_of_reception() -> None:
    assert decode(b'{"metrics":{"t":1}}') == [Point(DEV, NOW, {"t": 1})]
    assert decode(b'{"ts":null,"metrics":{"t":1}}') == [Point(DEV, NOW, {"t": 1})]


def test_leading_whitespace_is_sniffed_past() -> None:
    assert decode(b' \r\n\t{"metrics":{"t":1}}') == [Point(DEV, NOW, {"t": 1})]
    assert decode(b'\n [{"n":"t","v":1}]')[0].metrics == {"t": 1}


def test_limits_on_values_are_inclusive() -> None:
    longest = "x" * MAX_STRING_LENGTH
    name = "n" * 64
    points = decode(orjson.dumps(obj({name: longest, "big": 2**63 - 1, "small": -(2**63)})))
    assert points[0].metrics == {name: longest, "big": 2**63 - 1, "small": -(2**63)}


# -------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (TS, TS),
        (1732262400, 1732262400.0),  # seconds
        (1732262400123, TS),  # milliseconds
        (1732262400123000, TS),  # microseconds
        (1732262400123000000, TS),  # nanoseconds
        (1732262400123.0, TS),  # milliseconds as a float
        ("2024-11-22T08:00:00Z", 1732262400.0),
        ("2024-11-22T08:00:00.123Z", TS),
        ("2024-11-22T08:00:00.123456789Z", 1732262400.123456789),
        ("2024-11-22T10:00:00+02:00", 1732262400.0),
        ("2024-11-22T03:30:00-04:30", 1732262400.0),
        ("2024-11-22T08:00:00-00:00", 1732262400.0),
        ("2024-11-22t08:00:00z", 1732262400.0),
        ("2024-11-22 08:00:00Z", 1732262400.0),
        ("2016-12-31T23:59:60Z", 1483228800.0),  # a leap second is the next second in epoch time
        ("2000-01-01T00:00:00Z", MIN_TIMESTAMP),
    ],
)
def test_timestamp_forms(ts: Any, expected: float) -> None:
    [point] = decode(orjson.dumps(obj({"t": 1}, ts=ts)))
    assert point.ts == pytest.approx(expected, abs=1e-6)
    assert type(point.ts) is float


@given(
    st.one_of(
        st.integers(-(2**53), 2**53),
        st.integers(int(MIN_TIMESTAMP) - 2, int(NOW) + 302),
        st.integers(10**11 - 2, 10**11 + 2),
    )
)
def test_integer_timestamps_mean_what_the_same_float_means(ts: int) -> None:
    """Whole seconds as an integer take a shortcut; it must agree with the general rules for numbers."""
    as_int, as_float = orjson.dumps(obj({"t": 1}, ts=ts)), orjson.dumps(obj({"t": 1}, ts=float(ts)))

    def outcome(payload: bytes) -> float | str:
        try:
            [point] = decode(payload)
        except PayloadError as exc:
            return exc.reason
        assert type(point.ts) is float
        return point.ts

    assert outcome(as_int) == outcome(as_float)


def test_cbor_date_time_tags_are_timestamps() -> None:
    stamp = datetime(2024, 11, 22, 8, 0, tzinfo=UTC)
    assert decode(cbor2.dumps(obj({"t": 1}, ts=stamp)))[0].ts == 1732262400.0  # tag 0 (text)
    assert (
        decode(cbor2.dumps(obj({"t": 1}, ts=stamp), datetime_as_timestamp=True))[0].ts == 1732262400.0
    )  # tag 1


def test_future_skew_is_inclusive_and_configurable() -> None:
    assert decode(orjson.dumps(obj({"t": 1}, ts=NOW + 300.0)))[0].ts == NOW + 300.0
    assert decode(orjson.dumps(obj({"t": 1}, ts=NOW + 1000.0)), max_future_skew=1000.0)[0].ts == NOW + 1000.0
    error = refused(orjson.dumps(obj({"t": 1}, ts=NOW + 300.5)))
    assert error.reason == "bad_timestamp"
    assert (
        str(error) == f"ts: {NOW + 300.5!r} is 300.500 s after the time of reception (at most 300 s allowed)"
    )


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        (True, "ts: a boolean is not a timestamp"),
        ([1], "ts: unsupported timestamp type an array"),
        (1, "ts: 1 is before 2000-01-01T00:00:00Z; a device without a clock must omit the time"),
        (
            946684799999,
            "ts: 946684799999 (read as 946684799.999 epoch seconds) is before 2000-01-01T00:00:00Z; "
            "a device without a clock must omit the time",
        ),
        (-5, "ts: -5 is before 2000-01-01T00:00:00Z; a device without a clock must omit the time"),
        (2**70, "ts: integer outside the signed 64-bit range"),
        ("2024-11-22T10:00:00", "ts: '2024-11-22T10:00:00' has no UTC offset; add Z or +hh:mm"),
        ("yesterday", "ts: 'yesterday' is not an RFC 3339 time such as 2024-11-22T10:00:00Z"),
        ("2024-11-22", "ts: '2024-11-22' is not an RFC 3339 time such as 2024-11-22T10:00:00Z"),
        ("2024-02-30T10:00:00Z", "ts: '2024-02-30T10:00:00Z': day is out of range for month"),
        ("2024-11-22T10:00:00+24:00", "ts: '2024-11-22T10:00:00+24:00': UTC offset out of range"),
        (
            "٢٠٢٤-11-22T10:00:00Z",
            "ts: '٢٠٢٤-11-22T10:00:00Z' is not an RFC 3339 time such as 2024-11-22T10:00:00Z",
        ),
    ],
)
def test_bad_timestamps(ts: Any, message: str) -> None:
    error = refused(cbor2.dumps(obj({"t": 1}, ts=ts)))
    assert (error.reason, str(error), error.field, error.device_id) == ("bad_timestamp", message, "ts", DEV)


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_non_finite_timestamps_in_cbor(ts: float) -> None:
    error = refused(cbor2.dumps(obj({"t": 1}, ts=ts)))
    assert (error.reason, str(error)) == ("bad_timestamp", f"ts: {ts} is not a finite number")


def test_cbor_date_time_without_offset_is_refused() -> None:
    error = refused(cbor2.dumps(obj({"t": 1}, ts=cbor2.CBORTag(0, "2024-11-22T10:00:00"))))
    assert error.reason == "bad_cbor"
    assert "missing UTC offset" in str(error)


# ------------------------------------------------------------------------------------------- SenML


def test_senml_json_resolves_base_fields_and_groups_by_time() -> None:
    pack = [
        {
            "bn": "urn:dev:ow:10e2073a01080063:",
            "bt": 1732262400,
            "bu": "Cel",
            "bver": 10,
            "n": "temp",
            "v": 21.5,
        },
        {"n": "hum", "u": "%RH", "v": 40},
        {"n": "temp", "v": 22.0, "t": 60},
        {"n": "door", "vb": True, "t": 60},
        {"n": "state", "vs": "ok", "t": 30},
    ]
    assert decode(orjson.dumps(pack)) == [
        Point(DEV, 1732262400.0, {"temp": 21.5, "hum": 40}),
        Point(DEV, 1732262430.0, {"state": "ok"}),
        Point(DEV, 1732262460.0, {"temp": 22.0, "door": True}),
    ]


def test_senml_base_value_and_sum_are_added_and_carry_forward() -> None:
    pack = [
        {"bn": "meter/", "bv": 100, "bs": 5000.5, "n": "power", "v": 3},
        {"n": "energy", "s": 0.5, "t": -10},
        {"bv": 200, "n": "power", "v": 4, "t": -10},
        {"n": "reactive", "v": 1.5, "t": -20},
    ]
    assert decode(orjson.dumps(pack)) == [
        Point(DEV, NOW - 20, {"reactive": 201.5}),
        Point(DEV, NOW - 10, {"energy": 5001.0, "power": 204}),
        Point(DEV, NOW, {"power": 103}),
    ]


def test_senml_base_name_alone_names_the_metric_by_its_last_segment() -> None:
    pack = [{"bn": "urn:dev:mac:0024befffe804ff1/temperature", "v": 21.5}, {"bn": "dev:hum", "v": 40, "t": 1}]
    assert decode(orjson.dumps(pack)) == [
        Point(DEV, NOW, {"temperature": 21.5}),
        Point(DEV, NOW + 1, {"hum": 40}),
    ]


def test_senml_times_absolute_relative_and_absent() -> None:
    pack = [
        {"n": "a", "v": 1},  # absent: now
        {"n": "b", "v": 2, "t": 0},  # zero: now
        {"n": "c", "v": 3, "t": -5.5},  # relative
        {"n": "d", "v": 4, "t": TS},  # absolute
        {"bt": TS - 1, "n": "e", "v": 5, "t": 1},  # base time plus time
    ]
    assert decode(orjson.dumps(pack)) == [
        Point(DEV, TS, {"d": 4, "e": 5}),
        Point(DEV, NOW - 5.5, {"c": 3}),
        Point(DEV, NOW, {"a": 1, "b": 2}),
    ]


def test_senml_cbor_uses_integer_labels() -> None:
    pack = [
        {
            -2: "urn:dev:ow:10e2073a01080063:",
            -3: 1732262400,
            -4: "Cel",
            -5: 0,
            -6: 0,
            -1: 10,
            0: "temp",
            2: 21.5,
        },
        {0: "hum", 1: "%RH", 2: 40, 6: 0, 7: 60},
        {0: "door", 4: False, 6: 1},
        {0: "state", 3: "ok", 6: 1},
        {0: "energy", 5: 12.5, 6: 1},
    ]
    assert decode(cbor2.dumps(pack)) == [
        Point(DEV, 1732262400.0, {"temp": 21.5, "hum": 40}),
        Point(DEV, 1732262401.0, {"door": False, "state": "ok", "energy": 12.5}),
    ]
    assert decode(cbor2.dumps(pack), "senml+cbor") == decode(cbor2.dumps(pack))


def test_content_formats_map_coap_numbers() -> None:
    assert CONTENT_FORMATS == {50: "json", 60: "cbor", 110: "senml+json", 112: "senml+cbor"}
    pack = orjson.dumps([{"n": "t", "v": 1}])
    assert decode(pack, "senml+json") == decode(pack, "json") == decode(pack) == [Point(DEV, NOW, {"t": 1})]
    assert decode(b'{"metrics":{"t":1}}', "json") == [Point(DEV, NOW, {"t": 1})]
    assert decode(cbor2.dumps(obj({"t": 1})), "cbor") == [Point(DEV, NOW, {"t": 1})]


def test_unknown_content_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown content format 'xml'"):
        decode(b"<t/>", "xml")


# ---------------------------------------------------------------------------------------- refusals


def test_empty_and_too_large() -> None:
    assert (refused(b"").reason, str(refused(b""))) == ("empty", "empty payload")
    assert (refused(b" \n").reason, str(refused(b" \n"))) == ("empty", "payload is only whitespace")
    payload = orjson.dumps(obj({"t": "x" * 100}))
    assert decode(payload, max_bytes=len(payload))
    error = refused(payload, max_bytes=len(payload) - 1)
    assert (error.reason, str(error)) == (
        "too_large",
        f"payload is {len(payload)} bytes, over the {len(payload) - 1}-byte limit",
    )
    assert refused(b"\xff" * 70000).reason == "too_large"  # checked before any parsing


@pytest.mark.parametrize(
    ("payload", "content_format", "where"),
    [
        (b'{"metrics": {"t": 1}', None, "line 1 column 21 (char 20)"),
        (b'{"metrics": {"t": NaN}}', None, "line 1 column 19 (char 18)"),
        (b'{"metrics": {"t": "\\ud800"}}', None, "line 1 column 20 (char 19)"),  # a lone surrogate
        (cbor2.dumps(obj({"t": 1})), "json", "line 1 column 1 (char 0)"),  # CBOR declared as JSON
        (b"[1,", "senml+json", "line 1 column 4 (char 3)"),
    ],
)
def test_bad_json(payload: bytes, content_format: str | None, where: str) -> None:
    error = refused(payload, content_format)
    assert (error.reason, error.device_id) == ("bad_json", DEV)
    assert str(error).startswith("invalid JSON: ")
    assert str(error).endswith(where)  # orjson's diagnostic between


@pytest.mark.parametrize(
    ("payload", "content_format", "message"),
    [
        (b"hello", None, "neither JSON (it does not start with '{' or '[') nor valid CBOR: premature end of"),
        (b'{"metrics":{"t":1}}', "cbor", "invalid CBOR: premature end of stream"),  # JSON declared as CBOR
        (
            cbor2.dumps(obj({"t": 1})) + b"\x00\x00",
            None,
            "invalid CBOR: 2 bytes of trailing data after the first data item",
        ),
        (cbor2.dumps({1: 2}), "cbor", "invalid CBOR: error decoding map: map key must be a text string"),
        (b"\xa2\x61a\x01\x61a\x02", "cbor", "invalid CBOR: error decoding map: Duplicate map key: 'a'"),
    ],
)
def test_bad_cbor(payload: bytes, content_format: str | None, message: str) -> None:
    error = refused(payload, content_format)
    assert (error.reason, error.device_id) == ("bad_cbor", DEV)
    assert str(error).startswith(message)  # cbor2's own diagnostic may follow


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metrics": {"t": 1}, "device": "x"}, "unknown field(s) 'device' (allowed: ts, metrics)"),
        ({"ts": TS, "temperature": 1}, "unknown field(s) 'temperature' (allowed: ts, metrics)"),
        ({"ts": TS}, "missing 'metrics'"),
        ({}, "missing 'metrics'"),
        ({"metrics": {}}, "metrics must be a non-empty map, got an empty map"),
        ({"metrics": None}, "metrics must be a non-empty map, got null"),
        ({"metrics": [1, 2]}, "metrics must be a non-empty map, got an array"),
        ({"metrics": 21.5}, "metrics must be a non-empty map, got a number"),
    ],
)
def test_bad_shape(data: dict[str, Any], message: str) -> None:
    for payload in (orjson.dumps(data), cbor2.dumps(data)):
        error = refused(payload)
        assert (error.reason, str(error), error.device_id) == ("bad_shape", message, DEV)


def test_scalar_documents_are_bad_shape() -> None:
    expected = 'expected a map {"ts": ..., "metrics": {...}} or a SenML array, got a number'
    assert str(refused(b"21.5", "json")) == expected
    assert str(refused(cbor2.dumps(21.5))) == expected
    assert refused(cbor2.dumps("text"), "cbor").reason == "bad_shape"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "metrics.t: unsupported value type a map (allowed: number, bool, string, null)"),
        ([1, 2], "metrics.t: unsupported value type an array (allowed: number, bool, string, null)"),
        (b"\x00", "metrics.t: unsupported value type a byte string (allowed: number, bool, string, null)"),
        (math.nan, "metrics.t: nan is not a finite number"),
        (math.inf, "metrics.t: inf is not a finite number"),
        (2**63, "metrics.t: integer outside the signed 64-bit range"),
        (-(2**63) - 1, "metrics.t: integer outside the signed 64-bit range"),
        ("x" * 257, "metrics.t: string of 257 characters is over the 256-character limit"),
        (
            cbor2.undefined,
            "metrics.t: unsupported value type UndefinedType (allowed: number, bool, string, null)",
        ),
    ],
)
def test_bad_type(value: Any, message: str) -> None:
    error = refused(cbor2.dumps(obj({"ok": 1, "t": value})))
    assert (error.reason, str(error), error.field, error.device_id) == ("bad_type", message, "metrics.t", DEV)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("1st", "metrics: invalid metric name '1st': expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}"),
        (
            "temp erature",
            "metrics: invalid metric name 'temp erature': expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}",
        ),
        ("", "metrics: invalid metric name '': expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}"),
        ("t/x", "metrics: invalid metric name 't/x': expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}"),
        (
            "température",
            "metrics: invalid metric name 'température': expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}",
        ),
        (
            "n" * 65,
            "metrics: invalid metric name '" + "n" * 60 + "...: expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}",
        ),
    ],
)
def test_bad_name(name: str, message: str) -> None:
    error = refused(orjson.dumps(obj({name: 1})))
    assert (error.reason, str(error), error.field, error.device_id) == ("bad_name", message, "metrics", DEV)


def test_non_text_metric_name_is_bad_name() -> None:
    error = refused(cbor2.dumps(obj({b"t": 1})))
    assert (error.reason, str(error)) == (
        "bad_name",
        "metrics: metric name must be a string, got a byte string",
    )


def test_name_cache_overflow_keeps_validating() -> None:
    names = {f"m{i}": i for i in range(5000)}
    assert decode(orjson.dumps(obj(names)))[0].metrics == names
    assert refused(orjson.dumps(obj({"bad name": 1}))).reason == "bad_name"
    assert decode(orjson.dumps(obj({"m1": 1})))[0].metrics == {"m1": 1}


@pytest.mark.parametrize("device_id", ["", "dev/1", "+", "#", "dev 1", "-dev", "d" * 129, "dév"])
def test_bad_device_id(device_id: str) -> None:
    error = refused(b'{"metrics":{"t":1}}', device_id=device_id)
    shown = repr(device_id) if len(device_id) < 60 else repr(device_id)[:61] + "..."
    assert (error.reason, str(error), error.device_id) == (
        "bad_device_id",
        f"invalid device id {shown}: expected [A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}",
        device_id,
    )


def test_device_id_is_checked_before_the_payload() -> None:
    assert refused(b"", device_id="a/b").reason == "bad_device_id"


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ({"n": "t", "v": 1}, "a SenML pack is an array, got a map"),
        ([], "empty SenML pack"),
        ([1], "[0]: record is a number, not a map"),
        ([{"n": "t", "v": 1}, {"n": "u", "x": 1}], "[1]: unknown label 'x'"),
        ([{"n": "t", "vd": "aGk"}], "[0].vd: data values (vd) are not supported; send v, vs, vb or s"),
        (
            [{"bver": 11, "n": "t", "v": 1}],
            "[0].bver: SenML version 11 is newer than the supported version 10",
        ),
        ([{"bver": 0, "n": "t", "v": 1}], "[0].bver: must be a positive integer, got 0"),
        ([{"n": "t"}], "[0]: record has no value: one of v, vs, vb or s is required"),
        ([{"n": "t", "bv": 1}], "[0]: record has no value: one of v, vs, vb or s is required"),
        (
            [{"n": "t", "v": 1, "s": 2}],
            "[0]: record has more than one value (v, s); send them as separate records",
        ),
        (
            [{"n": "t", "vs": "a", "vb": True}],
            "[0]: record has more than one value (vs, vb); send them as separate records",
        ),
        ([{"v": 1}], "[0]: record has no name (n) and no base name (bn)"),
        (
            [{"bn": "urn:dev:x:", "v": 1}],
            "[0]: record has no name (n) and base name 'urn:dev:x:' ends with a separator",
        ),
        ([{"n": 5, "v": 1}], "[0].n: must be a string, got a number"),
        ([{"n": "t", "v": "1"}], "[0].v: must be a number, got a string"),
        ([{"n": "t", "v": True}], "[0].v: must be a number, got a boolean"),
        ([{"n": "t", "vb": 1}], "[0].vb: must be a boolean, got a number"),
        ([{"n": "t", "vs": 1}], "[0].vs: must be a string, got a number"),
        ([{"n": "t", "u": 1, "v": 1}], "[0].u: must be a string, got a number"),
        ([{"n": "t", "t": "now", "v": 1}], "[0].t: must be a number, got a string"),
        ([{"n": "t", "v": 1}, {"n": "t", "v": 2}], "[1]: a second record for 't' at the same time"),
    ],
)
def test_bad_senml(pack: Any, message: str) -> None:
    error = refused(orjson.dumps(pack), "senml+json")
    assert (error.reason, str(error), error.device_id) == ("bad_senml", message, DEV)


def test_bad_senml_cbor_labels() -> None:
    assert str(refused(cbor2.dumps([{0: "t", 2: 1, 9: "x"}]))) == "[0]: unknown label 9"
    # CBOR SenML uses the integer labels only
    assert str(refused(cbor2.dumps([{"n": "t", "v": 1}]))) == "[0]: unknown label 'n'"
    assert str(refused(cbor2.dumps([{0: "t", True: "x", 2: 1}]))) == "[0]: unknown label True"
    assert str(refused(b'[{"0": "t", "2": 1}]')) == "[0]: unknown label '0'"


CBOR_INF = cbor2.dumps([{0: "t", 2: math.inf}])
CBOR_NAN_TIME = cbor2.dumps([{0: "t", 2: 1, 6: math.nan}])
NAME_RULE = "expected [A-Za-z_][A-Za-z0-9_.:-]{0,63}"
AFTER = "after the time of reception (at most 300 s allowed)"
BEFORE_2000 = "is before 2000-01-01T00:00:00Z; a device without a clock must omit the time"


@pytest.mark.parametrize(
    ("pack", "reason", "message"),
    [
        ([{"n": "1t", "v": 1}], "bad_name", f"[0].n: invalid metric name '1t': {NAME_RULE}"),
        ([{"bn": "dev/1t", "v": 1}], "bad_name", f"[0].n: invalid metric name '1t': {NAME_RULE}"),
        (
            [{"n": "t", "vs": "x" * 300}],
            "bad_type",
            "[0].vs: string of 300 characters is over the 256-character limit",
        ),
        (CBOR_INF, "bad_type", "[0].v: inf is not a finite number"),
        (
            [{"n": "t", "v": 2**64 - 1}],
            "bad_type",
            "[0].v: 18446744073709551615 is outside the signed 64-bit range",
        ),
        (
            [{"bv": 2**63 - 1, "n": "t", "v": 1}],
            "bad_type",
            "[0].v: 9223372036854775808 (with the base added) is out of range",
        ),
        (
            [{"bv": 1e308, "n": "t", "v": 1e308}],
            "bad_type",
            "[0].v: inf (with the base added) is out of range",
        ),
        (CBOR_NAN_TIME, "bad_timestamp", "[0].t: nan is not a finite number"),
        (
            [{"n": "t", "v": 1, "t": 400}],
            "bad_timestamp",
            f"[0].t: 400 (read as 1732266400.000 epoch seconds) is 400.000 s {AFTER}",
        ),
        ([{"n": "t", "v": 1, "t": 2**28}], "bad_timestamp", f"[0].t: 268435456 {BEFORE_2000}"),
        # a base time and a time that add up under 2**28 are relative, whatever each is alone
        (
            [{"bt": 2**28, "n": "t", "v": 1, "t": -1}],
            "bad_timestamp",
            f"[0].t: 268435455 (read as {NOW + 268435455:.3f} epoch seconds) is 268435455.000 s {AFTER}",
        ),
    ],
)
def test_senml_values_names_and_times_use_the_common_reasons(pack: Any, reason: str, message: str) -> None:
    error = refused(pack if isinstance(pack, bytes) else orjson.dumps(pack))
    assert (error.reason, str(error), error.device_id) == (reason, message, DEV)


def test_every_reason_is_documented() -> None:
    assert set(REASONS) == {
        "empty", "too_large", "bad_json", "bad_cbor", "bad_shape", "bad_type", "bad_name", "bad_timestamp",
        "bad_device_id", "bad_senml",
    }  # fmt: skip


# -------------------------------------------------------------------------------------- properties


def assert_valid(points: list[Point], skew: float = 300.0) -> None:
    """What every decoded message guarantees to the pipeline."""
    assert points
    assert [p.ts for p in points] == sorted(p.ts for p in points)
    for point in points:
        assert point.device_id == DEV
        assert type(point.ts) is float
        assert MIN_TIMESTAMP <= point.ts <= NOW + skew
        assert type(point.metrics) is dict
        assert point.metrics
        for name, value in point.metrics.items():
            assert type(name) is str
            assert NAME_PATTERN.fullmatch(name)
            if type(value) is float:
                assert math.isfinite(value)
            elif type(value) is int:
                assert -(2**63) <= value < 2**63
            elif type(value) is str:
                assert len(value) <= MAX_STRING_LENGTH
            else:
                assert value is None or type(value) is bool


def decodes_or_refuses(payload: bytes, content_format: str | None = None) -> None:
    """Either valid points or a ``PayloadError`` with a known reason: nothing else, whatever the bytes."""
    try:
        points = decode(payload, content_format)
    except PayloadError as exc:
        error = exc
    else:
        assert_valid(points)
        return
    assert error.reason in REASONS
    assert error.device_id == DEV
    assert str(error)


def encodable_as_json(value: Any) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        return -(2**63) <= value < 2**64
    if isinstance(value, list):
        return all(encodable_as_json(item) for item in value)
    if isinstance(value, dict):
        return all(type(key) is str and encodable_as_json(item) for key, item in value.items())
    return value is None or type(value) in (bool, str)


def encodings(document: Any) -> list[bytes]:
    """The document as CBOR, and as JSON when JSON can carry it."""
    return [cbor2.dumps(document), *([orjson.dumps(document)] if encodable_as_json(document) else [])]


FORMATS = st.sampled_from([None, "json", "cbor", "senml+json", "senml+cbor"])
NAMES = st.from_regex(NAME_PATTERN, fullmatch=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.just(cbor2.undefined)
)
NUMBERS = st.integers() | st.floats() | st.sampled_from([0, 2**63 - 1, 2**63, 1e308])
TIMES = (
    NUMBERS
    | st.floats(-1000, 1000)
    | st.floats(TS - 1e6, NOW + 1000)
    | st.sampled_from(
        [
            TS,
            NOW,
            1732262400123,
            1732262400123456,
            "2024-11-22T08:00:00Z",
            "2024-11-22T08:00:00",
            2**28,
            -(2**28),
        ]
    )
)
LABELS = ["bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "s", "t", "ut", "vd"]
CBOR_LABELS = dict(zip(LABELS, [-1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4, 5, 6, 7, 8], strict=True))
KEYS = st.sampled_from(["ts", "metrics", *LABELS]) | st.text(max_size=8) | st.integers(-8, 10) | st.booleans()


def documents(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
        max_leaves=12,
    )


# Near-valid shapes, so that the checks past parsing (names, types, times, SenML resolution) are reached too.
OBJECTS = st.fixed_dictionaries(
    {"metrics": st.dictionaries(NAMES | st.text(max_size=10), SCALARS | documents(SCALARS), max_size=5)},
    optional={"ts": TIMES, "extra": SCALARS},
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "bver": st.integers(0, 12),
        "bn": st.sampled_from(["urn:dev:ow:10e2073a01080063:", "dev/temperature", "x:1t"])
        | st.text(max_size=12),
        "bt": TIMES,
        "bu": st.text(max_size=3),
        "bv": NUMBERS,
        "bs": NUMBERS,
        "n": NAMES | st.text(max_size=10),
        "u": st.text(max_size=3),
        "t": TIMES,
        "ut": NUMBERS,
    },
).flatmap(
    lambda record: st.sampled_from(["v", "vs", "vb", "s", "vd", None]).flatmap(
        lambda label: st.builds(
            lambda value: record if label is None else {**record, label: value},
            {"v": NUMBERS, "s": NUMBERS, "vb": st.booleans(), "vs": st.text(max_size=300)}.get(
                label, SCALARS
            ),
        )
    )
)


@settings(max_examples=500)
@given(payload=st.binary(max_size=200), content_format=FORMATS)
def test_arbitrary_bytes_decode_or_raise_payload_error(payload: bytes, content_format: str | None) -> None:
    decodes_or_refuses(payload, content_format)


@settings(max_examples=300)
@given(document=documents(SCALARS), content_format=FORMATS)
def test_arbitrary_documents_decode_or_raise_payload_error(document: Any, content_format: str | None) -> None:
    for payload in encodings(document):
        decodes_or_refuses(payload, content_format)


@settings(max_examples=300)
@given(document=OBJECTS, content_format=st.sampled_from([None, "json", "cbor"]))
def test_object_like_documents_decode_or_raise_payload_error(
    document: Any, content_format: str | None
) -> None:
    for payload in encodings(document):
        decodes_or_refuses(payload, content_format)


@settings(max_examples=300)
@given(pack=st.lists(RECORDS, min_size=1, max_size=4))
def test_senml_like_packs_decode_or_raise_payload_error(pack: list[dict[str, Any]]) -> None:
    if encodable_as_json(pack):
        decodes_or_refuses(orjson.dumps(pack))
    decodes_or_refuses(cbor2.dumps([{CBOR_LABELS[label]: value for label, value in r.items()} for r in pack]))


VALUES = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=MAX_STRING_LENGTH)
)


@given(
    metrics=st.dictionaries(NAMES, VALUES, min_size=1, max_size=10),
    ts=st.none() | st.floats(MIN_TIMESTAMP, NOW + 300.0),
    encode=st.sampled_from([orjson.dumps, cbor2.dumps]),
)
def test_valid_objects_round_trip(metrics: dict[str, Any], ts: float | None, encode: Any) -> None:
    data = obj(metrics) if ts is None else obj(metrics, ts=ts)
    [point] = decode(encode(data))
    assert point == Point(DEV, NOW if ts is None else ts, metrics)
    assert [type(v) for v in point.metrics.values()] == [type(v) for v in metrics.values()]
