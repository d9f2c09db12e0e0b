"""Device models: payloads the agent decodes to the model's values, reproducible runs, schedules, state messages,
discovery answers and command acknowledgements in the agent's format."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_sim import codecs
from device_sim.device import Connection, DeviceModel
from device_sim.fleet import load_fleet
from device_sim.population import build_devices, device_seed
from edge_agent.device_commands import ACK_STATUSES
from edge_agent.ingest import parse_state
from fieldline.errors import ConfigError, PayloadError
from fieldline.payloads import CONTENT_FORMATS, decode_telemetry

START = 1_800_000_000.0

THERMO = """\
seed: 3
devices:
  - type: thermo
    id: "thermo-{{n:02d}}"
    count: {count}
    codec: {codec}
    interval: 10s
    jitter: 2s
    attributes: {{firmware: "1.4.2"}}
    metrics:
      temperature:
        type: composite
        unit: Cel
        round: 3
        components:
          - {{type: sine, period: 10m, amplitude: 2, offset: 21, random_phase: true}}
          - {{type: noise, sigma: 0.2}}
      humidity: {{type: correlated, source: temperature, base: 45, factor: -2, ref: 21, round: 2}}
      door: {{type: boolean, switch_probability: 0.3}}
      mode: {{type: enum, states: [eco, comfort, away], switch_probability: 0.3}}
      energy: {{type: counter, rate: 2, wrap: 1000}}
    commands:
      cooling:
        params: {{mode: {{type: enum, values: [max, "off"]}}}}
        cases:
          - when: {{mode: max}}
            effects: [{{type: rate, metric: temperature, per_minute: -1, floor: 5}}]
"""


def _devices(codec: str = "json", count: int = 3, seed: int | None = None) -> list[DeviceModel]:
    return build_devices(load_fleet("fleet.yaml", text=THERMO.format(codec=codec, count=count)), seed=seed)


def _play(device: DeviceModel, ticks: int) -> list[tuple[float, bytes]]:
    """(time, payload) of every message of ``ticks`` ticks."""
    out = []
    at = device.first_tick_at(START)
    for _ in range(ticks):
        tick = device.tick(at)
        out.extend((at, m.payload) for m in tick.messages)
        at = tick.next_at
    return out


@pytest.mark.parametrize("codec", ["json", "cbor", "senml", "senml_cbor"])
def test_every_codec_decodes_to_the_model_values(codec: str) -> None:
    reference = _devices("json")[1]
    device = _devices(codec)[1]
    names = {"json": "json", "cbor": "cbor", "senml": "senml+json", "senml_cbor": "senml+cbor"}
    assert CONTENT_FORMATS[device.kind.content_format] == names[codec]
    at = reference.first_tick_at(START)
    device.first_tick_at(START)
    for _ in range(30):
        expected, got = reference.tick(at), device.tick(at)
        (want,) = decode_telemetry(expected.messages[0].payload, reference.device_id, at)
        (point,) = decode_telemetry(
            got.messages[0].payload, device.device_id, at, content_format=names[codec]
        )
        assert point.ts == want.ts
        assert point.metrics == want.metrics
        assert set(point.metrics) == {"temperature", "humidity", "door", "mode", "energy"}
        assert got.messages[0].topic == "devices/thermo-02/telemetry"
        assert got.messages[0].content_format == device.kind.content_format
        at = got.next_at


def test_metric_values_follow_their_generators() -> None:
    device = _devices()[0]
    at = device.first_tick_at(START)
    for _ in range(50):
        tick = device.tick(at)
        metrics = orjson.loads(tick.messages[0].payload)["metrics"]
        assert 18.0 < metrics["temperature"] < 24.0
        assert metrics["humidity"] == pytest.approx(45 - 2 * (metrics["temperature"] - 21), abs=0.011)
        assert metrics["mode"] in ("eco", "comfort", "away")
        assert isinstance(metrics["door"], bool)
        assert metrics["energy"] == int(2 * (at - START)) % 1000
        at = tick.next_at


def test_same_seed_same_bytes_whatever_the_interleaving() -> None:
    alone = {d.device_id: _play(d, 40) for d in _devices()}
    # the same fleet played round-robin, in reverse order, inside a bigger fleet
    bigger = _devices(count=6)[:3][::-1]
    clocks = {d.device_id: d.first_tick_at(START) for d in bigger}
    mixed: dict[str, list[tuple[float, bytes]]] = {d.device_id: [] for d in bigger}
    for _ in range(40):
        for device in bigger:
            tick = device.tick(clocks[device.device_id])
            mixed[device.device_id].extend((clocks[device.device_id], m.payload) for m in tick.messages)
            clocks[device.device_id] = tick.next_at
    assert mixed == alone


def test_seed_changes_the_values_and_overrides_the_file() -> None:
    base = _play(_devices()[0], 10)
    assert _play(_devices()[0], 10) == base
    assert _play(_devices(seed=3)[0], 10) == base  # the file's seed is 3
    assert _play(_devices(seed=4)[0], 10) != base
    assert device_seed(3, "thermo-01") == device_seed(3, "thermo-01") != device_seed(3, "thermo-02")


def test_first_tick_and_jitter_stay_in_their_window() -> None:
    for device in _devices(count=20):
        at = device.first_tick_at(START)
        assert START <= at < START + 10
        for _ in range(20):
            tick = device.tick(at)
            assert 8.0 <= tick.next_at - at <= 12.0
            assert tick.connection is Connection.KEEP
            at = tick.next_at


def test_clock_skew_offsets_and_drifts_the_timestamps() -> None:
    text = """\
devices:
  - type: clock
    id: c-{n}
    interval: 1h
    clock_skew: {offset: -30, drift_ppm: 100}
    metrics: {x: {type: constant, value: 1}}
"""
    (device,) = build_devices(load_fleet("f.yaml", text=text))
    at = device.first_tick_at(START)
    for _ in range(48):
        tick = device.tick(at)
        ts = orjson.loads(tick.messages[0].payload)["ts"]
        assert ts == pytest.approx(at - 30 + (at - START) * 100e-6, abs=0.001)
        at = tick.next_at
    assert at - START > 47 * 3600  # two days: the clock is 17 s fast on its offset by then


def test_state_will_and_discovery_messages() -> None:
    device = _devices()[0]
    online = device.state_message(True, START)
    assert (online.topic, online.retain, online.kind) == ("devices/thermo-01/state", True, "state")
    assert parse_state(device.device_id, online.payload) == (
        "online",
        {"type": "thermo", "firmware": "1.4.2"},
    )
    will = device.will_message()
    assert will.retain
    assert parse_state(device.device_id, will.payload)[0] == "offline"
    assert parse_state(device.device_id, device.state_message(False, START).payload)[0] == "offline"

    answer = device.discovery_message(START)
    assert answer.topic == "discovery/response/thermo-01"
    body = orjson.loads(answer.payload)
    assert body["id"] == "thermo-01"
    assert body["type"] == "thermo"
    assert body["firmware"] == "1.4.2"
    assert body["metrics"]["temperature"] == {"kind": "number", "unit": "Cel"}
    assert body["metrics"]["door"]["kind"] == "boolean"
    assert body["metrics"]["mode"]["kind"] == "string"
    assert body["commands"]["cooling"]["params"]["mode"]["values"] == ["max", "off"]


def _command(device: DeviceModel, now: float = START, **fields: object) -> dict[str, object]:
    body = {"id": "c1", "name": "cooling", "params": {"mode": "max"}, "expires_at": now + 30, **fields}
    ack = device.on_command(orjson.dumps(body), now)
    assert ack is not None
    assert ack.topic == f"devices/{device.device_id}/commands/ack"
    reply = orjson.loads(ack.payload)
    assert reply["id"] == body["id"]
    assert reply["status"] in ACK_STATUSES  # what the agent's DeviceCommands accepts
    return reply


def test_command_acknowledgements() -> None:
    device = _devices()[0]
    assert _command(device) == {
        "id": "c1",
        "status": "ok",
        "result": {"command": "cooling", "params": {"mode": "max"}},
    }
    # a redelivered command is answered again, not run again
    assert _command(device)["status"] == "ok"
    refused = {
        "unknown_command": _command(device, id="c2", name="heating"),
        "bad_params": _command(device, id="c3", params={"mode": "min"}),
        "expired": _command(device, id="c4", expires_at=START - 1),
    }
    for code, reply in refused.items():
        assert reply["status"] == "error"
        assert reply["code"] == code
    assert "not one of ['max', 'off']" in refused["bad_params"]["error"]
    assert _command(device, id="c5", params={"mode": "max", "extra": 1})["code"] == "bad_params"
    assert _command(device, id="c6", params={})["error"] == "missing param 'mode'"
    assert device.on_command(b"{not json", START) is None
    assert device.on_command(b'{"name": "cooling"}', START) is None
    assert device.counters.commands == {
        "ok": 1, "duplicate": 1, "unknown_command": 1, "bad_params": 3, "expired": 1, "malformed": 2,
    }  # fmt: skip


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=256),
)


@settings(max_examples=200, deadline=None)
@given(
    metrics=st.dictionaries(_names, _values, min_size=1, max_size=8),
    ts=st.floats(1_000_000_000, 4_000_000_000),
    codec=st.sampled_from(["json", "cbor", "senml", "senml_cbor"]),
)
def test_codecs_round_trip_through_the_agent_decoder(metrics: dict, ts: float, codec: str) -> None:
    payload = codecs.encode(codec, "dev-1", ts, metrics, {name: "u" for name in metrics})
    expected = {k: v for k, v in metrics.items() if v is not None} if codec.startswith("senml") else metrics
    fmt = CONTENT_FORMATS[codecs.CONTENT_FORMATS[codec]]
    if not expected:  # a SenML pack of nothing but nulls is empty, which the contract refuses
        with pytest.raises(PayloadError):
            decode_telemetry(payload, "dev-1", ts, content_format=fmt)
        return
    (point,) = decode_telemetry(payload, "dev-1", ts, content_format=fmt)
    assert point.ts == ts
    assert point.metrics == expected
    assert {k: type(v) for k, v in point.metrics.items()} == {k: type(v) for k, v in expected.items()}


def test_metric_values_must_fit_the_payload_contract() -> None:
    text = THERMO.format(codec="json", count=1).replace(
        "energy: {type: counter, rate: 2, wrap: 1000}", "energy: {type: constant, value: .inf}"
    )
    with pytest.raises(ConfigError, match=r"metrics\.energy\.value: expected a finite number"):
        load_fleet("fleet.yaml", text=text)


_PLAY = """
import hashlib, sys
from device_sim.fleet import load_fleet
from device_sim.population import build_devices
digest = hashlib.sha256()
for device in build_devices(load_fleet("fleet.yaml", text=sys.stdin.read())):
    at = device.first_tick_at(1_800_000_000.0)
    for _ in range(50):
        tick = device.tick(at)
        for message in tick.messages:
            digest.update(message.payload)
        at = tick.next_at
print(digest.hexdigest())
"""


def test_runs_are_identical_across_processes_and_leave_the_global_random_alone() -> None:
    text = THERMO.format(codec="cbor", count=4)
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _PLAY],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        ).stdout
        for hash_seed in ("1", "2", "random")
    }
    assert len(outputs) == 1
    before = random.getstate()
    for device in _devices():
        _play(device, 20)
    assert random.getstate() == before


def test_per_device_state_is_slotted_and_the_template_shared() -> None:
    devices = _devices(count=3)
    assert all(not hasattr(d, "__dict__") for d in devices)
    assert not hasattr(devices[0].counters, "__dict__")
    assert devices[0].kind is devices[1].kind is devices[2].kind
    assert len(devices[0].state) == devices[0].kind.state_size == 3  # a sine phase, a boolean, an enum
