"""Faults: counts as configured (binomial tolerance), scheduled ones at their times, malformed payloads really
malformed for the decoder the agent runs, connection faults as the runtime needs them."""

from __future__ import annotations

import itertools

import orjson
import pytest

from device_sim.device import Connection, DeviceModel, Message
from device_sim.fleet import load_fleet
from device_sim.population import build_devices
from fieldline.errors import PayloadError
from fieldline.payloads import CONTENT_FORMATS, decode_telemetry

START = 1_800_000_000.0


def _devices(faults: str, *, codec: str = "json", count: int = 1, interval: str = "10s") -> list[DeviceModel]:
    text = f"""\
seed: 5
devices:
  - type: probe
    id: probe-{{n}}
    count: {count}
    codec: {codec}
    interval: {interval}
    metrics:
      temperature: {{type: random_walk, start: 20, step: 0.2, round: 2}}
      humidity: {{type: constant, value: 50}}
      label: {{type: constant, value: ok}}
    faults:
{faults}
"""
    return build_devices(load_fleet("faults.yaml", text=text))


def _run(device: DeviceModel, ticks: int) -> list[tuple[float, Message | None, Connection]]:
    """(time, message or None, connection) per message (or per empty tick)."""
    out: list[tuple[float, Message | None, Connection]] = []
    at = device.first_tick_at(START)
    for _ in range(ticks):
        tick = device.tick(at)
        out.extend((at, m, tick.connection) for m in tick.messages)
        if not tick.messages:
            out.append((at, None, tick.connection))
        at = tick.next_at
    return out


def _decode(message: Message, device_id: str = "probe-1", at: float = START + 10**6) -> list:
    return decode_telemetry(
        message.payload, device_id, at, content_format=CONTENT_FORMATS[message.content_format]
    )


@pytest.mark.parametrize(
    "kind", ["outlier", "null", "duplicate", "out_of_order", "truncated_json", "wrong_type"]
)
def test_probability_counts_within_binomial_tolerance(kind: str) -> None:
    extra = {"outlier": ", magnitude: 40, metrics: [temperature]", "out_of_order": ", lag: 5m"}.get(kind, "")
    (device,) = _devices(f"      - {{type: {kind}, probability: 0.1{extra}}}")
    _run(device, 10_000)
    # binomial(10000, 0.1): mean 1000, standard deviation 30
    assert abs(device.counters.faults[kind] - 1000) < 4 * 30
    assert device.counters.readings == 10_000
    assert device.counters.sent == 10_000 + (device.counters.faults[kind] if kind == "duplicate" else 0)


def test_every_fault_is_labelled_and_counted_per_kind() -> None:
    faults = """\
      - {type: outlier, magnitude: 40, probability: 0.05}
      - {type: null, probability: 0.05}
      - {type: invalid_cbor, probability: 0.05}
      - {type: oversize, size: 2KiB, probability: 0.05}
      - {type: duplicate, probability: 0.05}"""
    (device,) = _devices(faults)
    labels: dict[str, int] = {}
    for _, message, _ in _run(device, 4000):
        assert message is not None
        for label in (message.fault or "").split("+"):
            if label:
                labels[label] = labels.get(label, 0) + 1
    # an encoding fault drawn when another one already shaped the message is not applied, so not counted
    assert labels == device.counters.faults
    assert set(labels) == {"outlier", "null", "invalid_cbor", "oversize", "duplicate"}


def test_outlier_null_and_out_of_order_values() -> None:
    faults = """\
      - {type: outlier, magnitude: 40, metrics: [humidity], schedule: {at: 1m}}
      - {type: null, metrics: [temperature], schedule: {at: 2m}}
      - {type: out_of_order, lag: 10m, schedule: {at: 3m}}"""
    (device,) = _devices(faults)
    seen = {}
    for at, message, _ in _run(device, 30):
        assert message is not None
        (point,) = _decode(message)
        if message.fault:
            seen[message.fault] = (at, point)
        else:
            assert point.metrics["humidity"] == 50
            assert point.ts == pytest.approx(at, abs=0.001)
    assert set(seen) == {"outlier", "null", "out_of_order"}
    assert seen["outlier"][1].metrics["humidity"] in (10, 90)
    assert seen["null"][1].metrics["temperature"] is None
    at, point = seen["out_of_order"]
    assert point.ts == pytest.approx(at - 600, abs=0.001)
    for name, offset in (("outlier", 60), ("null", 120), ("out_of_order", 180)):
        assert START + offset <= seen[name][0] < START + offset + 10  # the first reading at or after its time


def test_scheduled_window_repeats() -> None:
    (device,) = _devices(
        "      - {type: null, metrics: [humidity], schedule: {at: 1m, every: 5m, duration: 1m, times: 3}}"
    )
    hits = [
        at - START for at, message, _ in _run(device, 200) if message is not None and message.fault == "null"
    ]
    windows = [(60, 120), (360, 420), (660, 720)]
    assert all(any(lo <= t < hi for lo, hi in windows) for t in hits)
    assert len(hits) == 18  # six readings in each one-minute window at one per 10 s


def _temperatures(faults: str, ticks: int) -> list[tuple[float, float, str | None]]:
    (device,) = _devices(faults)
    return [
        (at, orjson.loads(m.payload)["metrics"]["temperature"], m.fault)
        for at, m, _ in _run(device, ticks)
        if m
    ]


def test_stuck_for_readings() -> None:
    run = _temperatures("      - {type: stuck, metrics: [temperature], readings: 5, schedule: {at: 1m}}", 20)
    began = next(i for i, (_, _, fault) in enumerate(run) if fault == "stuck")
    assert START + 60 <= run[began][0] < START + 70
    assert [fault for _, _, fault in run[began : began + 6]] == ["stuck"] * 5 + [None]  # every stuck reading
    assert len({value for _, value, _ in run[began : began + 5]}) == 1
    assert run[began + 5][1] != run[began][1]
    assert len({value for _, value, _ in run[: began + 1]}) == began + 1  # a random walk moves otherwise


def test_stuck_for_a_duration() -> None:
    run = _temperatures(
        "      - {type: stuck, duration: 35s, metrics: [temperature], schedule: {at: 1m}}", 20
    )
    began = next(at for at, _, fault in run if fault == "stuck")
    frozen = [value for at, value, _ in run if began <= at < began + 35]
    assert len(frozen) == 4
    assert len(set(frozen)) == 1
    assert all(value != frozen[0] for at, value, _ in run if at >= began + 35)


@pytest.mark.parametrize("codec", ["json", "cbor", "senml", "senml_cbor"])
def test_malformed_payloads_are_refused_by_the_agent_decoder(codec: str) -> None:
    faults = """\
      - {type: truncated_json, probability: 0.25}
      - {type: wrong_type, probability: 0.25}
      - {type: invalid_cbor, probability: 0.25}
      - {type: oversize, probability: 0.25}"""
    (device,) = _devices(faults, codec=codec)
    reasons: dict[str, set[str]] = {}
    good = 0
    for _, message, _ in _run(device, 400):
        assert message is not None
        if message.fault is None:
            good += len(_decode(message))
            continue
        with pytest.raises(PayloadError) as info:
            _decode(message)
        reasons.setdefault(message.fault, set()).add(info.value.reason)
        # sniffed like an MQTT payload (no content format) they are refused too
        with pytest.raises(PayloadError):
            decode_telemetry(message.payload, "probe-1", START + 10**6)
    assert good > 50
    assert reasons["truncated_json"] == {"bad_json"}
    assert reasons["invalid_cbor"] == {"bad_cbor"}
    assert reasons["oversize"] == {"too_large"}
    assert reasons["wrong_type"] == ({"bad_type"} if codec in ("json", "cbor") else {"bad_senml"})


def test_oversize_is_well_formed_and_over_its_size() -> None:
    (device,) = _devices("      - {type: oversize, schedule: {at: 0s}}")
    message = next(m for _, m, _ in _run(device, 3) if m is not None and m.fault)
    assert len(message.payload) >= 65537
    (point,) = decode_telemetry(message.payload, "probe-1", START + 10**6, max_bytes=1 << 20)
    assert point.metrics["humidity"] == 50


def test_duplicate_sends_the_same_bytes_twice() -> None:
    (device,) = _devices("      - {type: duplicate, schedule: {at: 30s}}")
    run = _run(device, 10)
    pairs = [(a, b) for (t1, a, _), (t2, b, _) in itertools.pairwise(run) if t1 == t2]
    assert len(pairs) == 1
    first, second = pairs[0]
    assert first is not None
    assert second is not None
    assert first.payload == second.payload
    assert first.fault is None
    assert second.fault == "duplicate"


def test_scheduled_dropout_drops_at_its_time_and_comes_back() -> None:
    (device,) = _devices("      - {type: dropout, offline: 2m, schedule: {at: 5m, every: 30m}}")
    run = _run(device, 500)
    drops = [at for at, message, connection in run if connection is Connection.DROP]
    assert drops[:3] == [START + 300, START + 2100, START + 3900]
    for drop in drops:
        assert not [at for at, m, _ in run if m is not None and drop <= at < drop + 120]
        back = min(at for at, m, _ in run if m is not None and at >= drop)
        assert back == drop + 120  # the first reading when it is back
    assert device.counters.faults["dropout"] == len(drops)


def test_dropout_tick_says_until_when() -> None:
    (device,) = _devices("      - {type: dropout, offline: 90s, probability: 0.05}")
    at = device.first_tick_at(START)
    drops = 0
    for _ in range(2000):
        tick = device.tick(at)
        if tick.connection is Connection.DROP:
            drops += 1
            assert tick.offline_until == at + 90
            assert tick.next_at == tick.offline_until
            assert tick.messages == []
        at = tick.next_at
    assert drops == device.counters.faults["dropout"]
    assert abs(drops - 0.05 * (2000 - drops)) < 4 * (0.05 * 0.95 * 2000) ** 0.5


def test_reconnect_storm_hits_every_device_of_the_template_at_once() -> None:
    devices = _devices("      - {type: reconnect_storm, schedule: {at: 10m, every: 1h}}", count=50)
    storms: dict[str, list[float]] = {}
    for device in devices:
        at = device.first_tick_at(START)
        while at < START + 3 * 3600:
            tick = device.tick(at)
            if tick.connection is Connection.RECONNECT:
                storms.setdefault(device.device_id, []).append(at)
            at = tick.next_at
    assert len(storms) == 50
    assert {tuple(times) for times in storms.values()} == {(START + 600, START + 4200, START + 7800)}


def test_faults_are_reproducible() -> None:
    faults = """\
      - {type: outlier, magnitude: 10, probability: 0.1}
      - {type: dropout, offline: 1m, probability: 0.01}
      - {type: truncated_json, probability: 0.05}"""

    def payloads() -> list[bytes | None]:
        return [m.payload if m else None for _, m, _ in _run(_devices(faults)[0], 500)]

    assert payloads() == payloads()


def test_absolute_schedules_skip_what_lies_before_the_run() -> None:
    # START is 2027-01-15T08:00:00Z; a daily 07:55 occurrence first plays the next day, a past one never
    (daily,) = _devices(
        "      - {type: null, metrics: [humidity], schedule: {at: '2027-01-01T07:55:00Z', every: 1d}}"
    )
    hits = [at for at, m, _ in _run(daily, 9000) if m is not None and m.fault == "null"]
    assert START + 86400 - 300 <= hits[0] < START + 86400 - 290
    assert len(hits) == 1
    (past,) = _devices("      - {type: dropout, schedule: {at: '2027-01-01T00:00:00Z'}}")
    assert all(connection is Connection.KEEP for _, _, connection in _run(past, 100))
