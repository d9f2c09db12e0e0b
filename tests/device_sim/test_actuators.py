"""Actuators at the model level: commands change metrics (rate to a floor, set, offset) until replaced."""

from __future__ import annotations

import itertools

import orjson
import pytest

from device_sim.device import DeviceModel
from device_sim.fleet import load_fleet
from device_sim.population import build_devices
from fieldline.errors import ConfigError

START = 1_800_000_000.0

FRIDGE = """\
devices:
  - type: fridge
    id: fridge-{n}
    interval: 1m
    metrics:
      # warms by 0.1 °C per minute on its own
      temperature:
        type: composite
        components: [{type: constant, value: 4}, {type: drift, per_hour: 6}]
      humidity: {type: correlated, source: temperature, base: 60, factor: -1, ref: 4}
      setpoint: {type: constant, value: 4.0}
      fan: {type: constant, value: 0}
    commands:
      cooling:
        params: {mode: {type: enum, values: [max, eco, "off"]}}
        cases:
          - when: {mode: max}
            effects: [{type: rate, metric: temperature, per_minute: -0.5, floor: -20}]
          - when: {mode: eco}
            effects: [{type: rate, metric: temperature, per_minute: -0.2, floor: -5}]
      set_point:
        params: {value: {type: number, min: -30, max: 10}}
        cases: [{effects: [{type: set, metric: setpoint, param: value}]}]
      boost:
        params:
          enabled: {type: boolean}
          level: {type: integer, min: 1, max: 3, required: false, default: 1}
        cases:
          - when: {enabled: true}
            effects: [{type: offset, metric: fan, param: level}]
"""


class Fridge:
    """A fridge device played minute by minute (no jitter: readings at START + phase + k minutes)."""

    def __init__(self) -> None:
        (self.device,) = build_devices(load_fleet("fridge.yaml", text=FRIDGE))
        self.at = self.device.first_tick_at(START)
        self.readings: list[tuple[float, dict]] = []
        self.serial = 0

    def run(self, minutes: int) -> list[tuple[float, dict]]:
        out = []
        for _ in range(minutes):
            tick = self.device.tick(self.at)
            out.append((self.at, orjson.loads(tick.messages[0].payload)["metrics"]))
            self.at = tick.next_at
        self.readings.extend(out)
        return out

    def command(self, name: str, **params: object) -> dict:
        self.serial += 1
        body = {"id": f"cmd-{self.serial}", "name": name, "params": params, "expires_at": None}
        ack = self.device.on_command(orjson.dumps(body), self.at - 30)  # between two readings
        assert ack is not None
        return orjson.loads(ack.payload)

    @staticmethod
    def base(at: float) -> float:
        return 4 + 6 * (at - START) / 3600


def test_cooling_falls_at_its_rate_to_the_floor_then_drifts_again_after_off() -> None:
    fridge = Fridge()
    for at, metrics in fridge.run(10):
        assert metrics["temperature"] == pytest.approx(Fridge.base(at))
    on_at = fridge.at - 30
    assert fridge.command("cooling", mode="max")["status"] == "ok"
    cooling = fridge.run(20)
    for at, metrics in cooling:
        expected = Fridge.base(at) - 0.5 * (at - on_at) / 60
        assert metrics["temperature"] == pytest.approx(expected)
        assert metrics["humidity"] == pytest.approx(60 - (metrics["temperature"] - 4))  # follows it
    # net fall 0.4 °C/min: from about 5 °C it reaches the -20 °C floor after about an hour, and stays there
    floor = fridge.run(80)
    assert [m["temperature"] for _, m in floor[-30:]] == pytest.approx([-20.0] * 30)
    assert min(m["temperature"] for _, m in floor) == pytest.approx(-20)
    assert fridge.command("cooling", mode="off")["status"] == "ok"  # no case: the effect stops
    after = [m["temperature"] for _, m in fridge.run(30)]
    # the floor is checked at readings (against the last one for a command between two): within one minute's drift
    assert -20 < after[0] <= -19.9 + 1e-9
    assert [b - a for a, b in itertools.pairwise(after)] == pytest.approx([0.1] * 29)  # drifting again


def test_a_new_mode_replaces_the_previous_one() -> None:
    fridge = Fridge()
    fridge.run(2)
    fridge.command("cooling", mode="max")
    fridge.run(10)
    (at0, last), *_ = fridge.run(1)
    switched = fridge.at - 30
    fridge.command("cooling", mode="eco")
    for at, metrics in fridge.run(10):
        slope = (metrics["temperature"] - last["temperature"]) / ((at - at0) / 60)
        assert slope == pytest.approx(0.1 - 0.2, abs=0.06) or at - switched < 60
        at0, last = at, metrics


def test_set_and_offset_effects_with_params() -> None:
    fridge = Fridge()
    fridge.run(1)
    assert fridge.command("set_point", value=-18)["status"] == "ok"
    assert fridge.command("boost", enabled=True, level=3)["result"] == {
        "command": "boost",
        "params": {"enabled": True, "level": 3},
    }
    (_, metrics), *_ = fridge.run(1)
    assert metrics["setpoint"] == -18
    assert metrics["fan"] == 3
    assert fridge.command("boost", enabled=True)["result"]["params"] == {
        "enabled": True,
        "level": 1,
    }  # the default
    assert fridge.run(1)[0][1]["fan"] == 1
    fridge.command("boost", enabled=False)
    assert fridge.run(1)[0][1]["fan"] == 0
    assert fridge.run(1)[0][1]["setpoint"] == -18  # until another set_point


@pytest.mark.parametrize(
    ("name", "params", "error"),
    [
        ("set_point", {"value": 11}, "value: 11 is above the maximum 10"),
        ("set_point", {"value": "cold"}, "value: 'cold' is not a number"),
        ("boost", {"enabled": 1}, "enabled: 1 is not a boolean"),
        ("boost", {"enabled": True, "level": 1.5}, "level: 1.5 is not an integer"),
        ("cooling", {"mode": False}, "mode: False is not one of ['max', 'eco', 'off']"),
        ("cooling", {"mode": "max", "speed": 2}, "unknown param(s) speed (accepted: mode)"),
        ("defrost", {}, "unknown command 'defrost' (accepted: cooling, set_point, boost)"),
    ],
)
def test_refused_commands_change_nothing(name: str, params: dict, error: str) -> None:
    fridge = Fridge()
    before = fridge.run(3)
    reply = fridge.command(name, **params)
    assert reply["status"] == "error"
    assert reply["error"].startswith(error)
    for at, metrics in fridge.run(3):
        assert metrics == {
            **before[0][1],
            "temperature": pytest.approx(Fridge.base(at)),
            "humidity": metrics["humidity"],
        }


def test_a_redelivered_command_runs_once() -> None:
    fridge = Fridge()
    fridge.run(1)
    body = orjson.dumps({"id": "same", "name": "cooling", "params": {"mode": "max"}})
    device: DeviceModel = fridge.device
    first = device.on_command(body, fridge.at - 30)
    fridge.run(5)
    again = device.on_command(body, fridge.at - 30)
    assert first is not None
    assert again is not None
    assert first.payload == again.payload
    assert device.counters.commands == {"ok": 1, "duplicate": 1}


def test_unquoted_yaml_booleans_in_enums_are_explained() -> None:
    text = FRIDGE.replace('[max, eco, "off"]', "[max, eco, off]")
    with pytest.raises(ConfigError, match=r'quote "on", "off"'):
        load_fleet("fridge.yaml", text=text)
