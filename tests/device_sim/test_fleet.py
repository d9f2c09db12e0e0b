"""Fleet files: valid ones load into typed templates, bad ones report every problem with file:line:column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device_sim.fleet import Fleet, load_fleet
from device_sim.population import build_devices
from fieldline.errors import ConfigError

GOOD = """\
seed: 42
broker: mqtt://127.0.0.1:1883
coap: coap://127.0.0.1:5683
devices:
  - type: thermo
    id: "thermo-{n:04d}"
    count: 3
    start: 7
    codec: cbor
    interval: 30s
    jitter: 2s
    clock_skew: {offset: -1.5, drift_ppm: 20}
    qos: 0
    attributes: {firmware: "2.1.0", vendor: acme}
    metrics:
      temperature: {type: sine, period: 1h, amplitude: 2, offset: 21, unit: Cel, round: 2}
      humidity: {type: correlated, source: temperature, base: 45, factor: -2, ref: 21}
  - type: meter
    id: "meter-{n}"
    transport: coap
    codec: senml
    interval: 1m
    metrics:
      energy: {type: counter, rate: 0.5, wrap: 100000}
"""


def _issues(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    return [str(issue) for issue in info.value.issues]


def _located(text: str, tmp_path: Path) -> list[str]:
    """``_issues`` with the file path cut off, leaving ``:line:column: field: message``."""
    return [issue.removeprefix(f"{tmp_path}/fleet.yaml") for issue in _issues(text, tmp_path)]


def test_good_fleet_loads_with_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD)
    fleet = load_fleet(path)
    assert fleet.seed == 42
    assert fleet.device_count() == 4
    thermo, meter = fleet.devices
    assert thermo.device_ids() == ["thermo-0007", "thermo-0008", "thermo-0009"]
    assert meter.device_ids() == ["meter-1"]
    assert thermo.interval == 30.0
    assert thermo.jitter == 2.0
    assert thermo.clock_skew.drift_ppm == 20
    assert meter.transport == "coap"
    assert thermo.evaluation_order() == ["temperature", "humidity"]


def test_errors_name_file_line_and_field_and_are_all_collected(tmp_path: Path) -> None:
    text = """\
devices:
  - type: thermo
    id: "t-{n}"
    interval: 10s
    metrics:
      temperature: {type: sine, period: 0}
      level: {type: random_walk, step: -1}
  - type: other
    id: "o-{n}"
    codec: xml
    interval: soon
    metrics:
      x: {type: wobble}
"""
    issues = _issues(text, tmp_path)
    joined = "\n".join(issues)
    assert len(issues) == 5, joined
    assert f"{tmp_path}/fleet.yaml:6:" in issues[0]
    assert "devices.0.metrics.temperature.period" in issues[0]
    assert "devices.0.metrics.level.step" in issues[1]
    assert ":10:" in issues[2]
    assert "devices.1.codec" in issues[2]
    assert ":11:" in issues[3]
    assert "invalid duration 'soon'" in issues[3]
    assert ":13:" in issues[4]
    assert "wobble" in issues[4]


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    issues = _issues("devices:\n  - type: [unclosed\n", tmp_path)
    assert len(issues) == 1
    assert "fleet.yaml:3:" in issues[0]
    assert "invalid YAML" in issues[0]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('id: "same"\n    count: 2', "gives every device the same id"),
        ('id: "bad id {n}"', "not a valid device id"),
        ('id: "x-{m}"', "must use only {n}"),
        ('id: "x-{n}"\n    jitter: 10s', "jitter must be shorter than interval"),
        ('id: "x-{n}"\n    qos: 2', "Input should be 0 or 1"),
    ],
)
def test_template_problems(tmp_path: Path, template: str, message: str) -> None:
    text = f"devices:\n  - type: t\n    interval: 10s\n    {template}\n    metrics: {{a: {{type: constant, value: 1}}}}\n"
    issues = _issues(text, tmp_path)
    assert any(message in issue for issue in issues), issues
    assert all(re.search(r"fleet.yaml:[245]:\d+: devices.0", issue) for issue in issues), issues


def test_duplicate_ids_across_templates(tmp_path: Path) -> None:
    text = """\
devices:
  - {type: a, id: "dev-{n}", count: 3, interval: 1s, metrics: {x: {type: constant, value: 1}}}
  - {type: b, id: "dev-{n}", start: 3, interval: 1s, metrics: {x: {type: constant, value: 1}}}
"""
    issues = _issues(text, tmp_path)
    assert issues == [
        f"{tmp_path}/fleet.yaml:3:19: devices.1.id: device id 'dev-3' is already used by another device"
    ]


def test_references_are_positioned_and_all_reported(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics:
      a: {type: constant, value: 1}
      h: {type: correlated, source: temp}
      c:
        type: composite
        components:
          - {type: noise, sigma: 1}
          - {type: correlated, source: pressure}
    faults:
      - {type: stuck, metrics: [a, b], probability: 0.1}
    commands:
      heat:
        cases:
          - effects: [{type: offset, metric: warmth, value: 1}]
"""
    assert _located(text, tmp_path) == [
        ":7:37: devices.0.metrics.h.source: correlated source 'temp' is not a metric of this template",
        ":12:40: devices.0.metrics.c.components.1.source: correlated source 'pressure' is not a metric of this template",
        ":14:32: devices.0.faults.0.metrics: unknown metric 'b'",
        ":18:46: devices.0.commands.heat.cases.0.effects.0.metric: unknown metric 'warmth'",
    ]


def test_correlated_metrics_cannot_loop(tmp_path: Path) -> None:
    base = "devices:\n  - type: t\n    id: t-{n}\n    interval: 1s\n    metrics:\n"
    loop = base + "      a: {type: correlated, source: b}\n      b: {type: correlated, source: a}\n"
    assert _issues(loop, tmp_path) == [
        f"{tmp_path}/fleet.yaml:6:7: devices.0.metrics: correlated metrics form a cycle: a -> b -> a"
    ]


def test_a_fleet_built_in_code_is_checked_too() -> None:
    fleet = Fleet.model_validate(
        {
            "devices": [
                {
                    "type": "t",
                    "id": "x-{n}",
                    "interval": 1,
                    "metrics": {"h": {"type": "correlated", "source": "z"}},
                }
            ]
        }
    )
    with pytest.raises(
        ConfigError, match=re.escape("<fleet>: devices.0.metrics.h.source: correlated source 'z'")
    ):
        build_devices(fleet)


def test_endpoints_are_checked(tmp_path: Path) -> None:
    text = "broker: http://x\ncoap: udp://y\ndevices:\n  - {type: t, id: 't-{n}', interval: 1s, metrics: {a: {type: constant, value: 1}}}\n"
    issues = _issues(text, tmp_path)
    assert [i.split(": ")[1] for i in issues] == ["broker", "coap"]


def test_faults_and_commands_refer_to_metrics(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics: {a: {type: constant, value: 1}}
    faults:
      - {type: null, metrics: [b], probability: 0.1}
      - {type: outlier, magnitude: 5}
      - {type: reconnect_storm, probability: 0.5}
    commands:
      heat:
        params: {level: {type: integer, min: 0, max: 3}}
        cases:
          - when: {level: 9}
            effects: [{type: rate, metric: a, per_minute: 1}]
"""
    joined = "\n".join(_issues(text, tmp_path))
    assert "give either probability or schedule" in joined
    assert "needs a schedule" in joined
    assert "cases[0].when.level: 9 is above the maximum 3" in joined


def test_effects_and_outliers_need_numbers(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics:
      a: {type: constant, value: 1}
      door: {type: boolean}
    faults:
      - {type: outlier, magnitude: 5, metrics: [door], probability: 0.1}
    commands:
      open:
        params: {how: {type: string}}
        cases:
          - effects: [{type: rate, metric: door, per_minute: 1}, {type: set, metric: door, value: true}]
"""
    issues = _located(text, tmp_path)
    assert issues == [
        ":9:48: devices.0.faults.0.metrics: an outlier needs a numeric metric, door is boolean",
        ":14:44: devices.0.commands.open.cases.0.effects.0.metric: a rate effect needs a numeric metric, door is boolean",
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_fleet(tmp_path / "nope.yaml")


def test_offsets_need_numeric_params(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics: {a: {type: constant, value: 1}}
    commands:
      nudge:
        params: {how: {type: string}}
        cases: [{effects: [{type: offset, metric: a, param: how}]}]
"""
    assert _located(text, tmp_path) == [
        ":8:9: devices.0.commands.nudge: cases[0]: the offset effect on a needs a number or integer param,"
        " 'how' is string"
    ]


def test_spread_is_for_numeric_metrics(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics:
      door: {type: boolean, spread: 1}
      x: {type: composite, components: [{type: noise, sigma: 1, spread: 2}]}
"""
    issues = _located(text, tmp_path)
    assert issues == [
        ":7:10: devices.0.metrics.x: components[0]: unit, round and spread belong to the composite metric"
    ]
    text = text.replace("      x: {type: composite, components: [{type: noise, sigma: 1, spread: 2}]}\n", "")
    issues = _located(text, tmp_path)
    assert issues == [":6:37: devices.0.metrics.door.spread: spread applies to numbers, door is boolean"]


def test_union_tags_are_not_in_the_paths(tmp_path: Path) -> None:
    text = """\
devices:
  - type: t
    id: t-{n}
    interval: 1s
    metrics:
      a: {type: sine}
      b: {type: random_walk, min: 5, max: 1}
    faults:
      - {type: stuck, readings: 2, duration: 1s, probability: 0.1}
"""
    assert _located(text, tmp_path) == [
        ":6:10: devices.0.metrics.a.period: Field required",
        ":7:10: devices.0.metrics.b: min must be below max",
        ":9:9: devices.0.faults.0: give readings or duration, not both",
    ]
