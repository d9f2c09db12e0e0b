"""Loading rules files: the format, what is refused and why, every problem positioned as file:line:col."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workflows.errors import DefinitionError
from workflows.rules import load_rules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"

OVERHEAT = """\
rules:
  - id: boiler-overheat
    when: {telemetry: temperature, devices: {id: "boiler-*", type: boiler}, condition: "value > 80"}
    for: 5m
    cooldown: 10m
    clear: "value < 75"
    severity: critical
    actions:
      - {type: notify, message: "{{ device_id }} at {{ value }} °C"}
      - {type: command, name: cooling, params: {mode: max}}
"""


def errors(text: str) -> list[str]:
    """The issues of a file that must not load, as ``file:line:col: path: message`` lines."""
    with pytest.raises(DefinitionError) as info:
        load_rules("broken.rules.yaml", text=text)
    return [str(issue) for issue in info.value.issues]


def test_the_issue_example_loads() -> None:
    loaded = load_rules("overheat.rules.yaml", text=OVERHEAT)
    (rule,) = loaded.rules
    assert (rule.id, rule.kind, rule.source, rule.metrics) == (
        "boiler-overheat",
        "level",
        "telemetry",
        ("temperature",),
    )
    assert (rule.hold, rule.cooldown, rule.severity) == (300.0, 600.0, "critical")
    assert [a.type for a in rule.actions] == ["notify", "command"]
    assert rule.matcher is not None
    assert rule.matcher("boiler-7", "boiler")
    assert not rule.matcher("pump-1", "boiler")
    assert loaded.source == OVERHEAT
    assert loaded.warnings == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.rules.yaml")), ids=lambda p: p.name)
def test_every_example_rules_file_loads(path: Path) -> None:
    loaded = load_rules(path)
    assert loaded.rules, path
    assert loaded.warnings == []


def test_the_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.rules.yaml")}
    assert {"heartbeat-loss.rules.yaml", "overheat.rules.yaml"} <= names


def test_each_source_and_modifier_compiles_to_its_kind() -> None:
    loaded = load_rules(
        "kinds.rules.yaml",
        text="""
rules:
  - {id: level, when: {telemetry: [a, b], condition: "a > b"}}
  - {id: state, when: {state: {to: offline}}, for: 5m}
  - {id: event, when: {event: door.forced}}
  - {id: message, when: {message: "site/+/alarm", condition: "data.level > 2"}}
  - {id: rate, when: {telemetry: p}, rate: {per: 1m, condition: "rate < -2"}}
  - {id: window, when: {telemetry: t}, window: {duration: 5m, agg: avg, condition: "avg > 70"}}
  - {id: sequence, when: {devices: {type: door}}, sequence: {events: [open, motion, close], within: 2m}}
  - {id: absence, when: {event: "*"}, absence: 5m}
""",
    )
    assert [(r.id, r.kind, r.source) for r in loaded.rules] == [
        ("level", "level", "telemetry"),
        ("state", "level", "state"),
        ("event", "occurrence", "event"),
        ("message", "occurrence", "message"),
        ("rate", "rate", "telemetry"),
        ("window", "window", "telemetry"),
        ("sequence", "sequence", "sequence"),
        ("absence", "absence", "event"),
    ]
    assert loaded.rules[6].event_types == ("open", "motion", "close")


def test_schema_errors_are_positioned() -> None:
    issues = errors(
        """\
rules:
  - id: a
    when: {telemetry: t, condition: "value > 1", colour: red}
  - id: b
    when: {telemetry: t, event: x, condition: "value > 1"}
  - id: c
    when: {telemetry: t, condition: "value > 1"}
    for: 5 minutes
  - id: d
    when: {telemetry: t, condition: "value > 1"}
    severity: fatal
"""
    )
    assert len(issues) == 4, issues
    assert issues[0].startswith("broken.rules.yaml:3:58: rules.0.when.colour: Extra inputs are not permitted")
    assert issues[1].startswith("broken.rules.yaml:5:11: rules.1.when:")
    assert "`when` takes one source, got telemetry and event" in issues[1]
    assert issues[2].startswith("broken.rules.yaml:8:10: rules.2.for:")
    assert "invalid duration" in issues[2]
    assert issues[3].startswith("broken.rules.yaml:11:15: rules.3.severity:")


def test_expression_errors_are_positioned_with_the_unknown_name() -> None:
    issues = errors(
        """\
rules:
  - id: syntax
    when: {telemetry: t, condition: "value >"}
  - id: unknown
    when:
      telemetry: temperature
      condition: "temprature > 80"
  - id: clear
    when: {telemetry: t, condition: "value > 1"}
    clear: "avg < 3"
  - id: template
    when: {event: door.forced}
    actions:
      - {type: notify, message: "{{ value }}"}
"""
    )
    assert issues[0].startswith("broken.rules.yaml:3:37: rules.0.when.condition: syntax error")
    assert (
        issues[1]
        == "broken.rules.yaml:7:18: rules.1.when.condition: unknown name temprature in `temprature > 80`"
    )
    assert issues[2].startswith("broken.rules.yaml:10:12: rules.2.clear: unknown name avg")
    assert issues[3].startswith("broken.rules.yaml:14:33: rules.3.actions.0.message: unknown name value")


def test_action_errors_are_positioned() -> None:
    issues = errors(
        """\
rules:
  - id: a
    when: {event: x}
    actions:
      - {type: teleport, where: mars}
      - {type: set, values: {a: 1}}
      - {type: command}
      - {type: notify, message: hi, colour: red}
"""
    )
    assert issues[0].startswith(
        "broken.rules.yaml:5:16: rules.0.actions.0.type: unknown action type 'teleport'"
    )
    assert (
        issues[1]
        == "broken.rules.yaml:6:16: rules.0.actions.1.type: action 'set' only runs inside a workflow"
    )
    assert issues[2].startswith("broken.rules.yaml:7:9: rules.0.actions.2.name: Field required")
    assert issues[3] == "broken.rules.yaml:8:45: rules.0.actions.3.colour: unknown key for action 'notify'"


def test_duplicate_ids_are_refused_with_the_first_line() -> None:
    issues = errors(
        """\
rules:
  - {id: same, when: {event: a}}
  - {id: other, when: {event: b}}
  - {id: same, when: {event: c}}
"""
    )
    assert issues == [
        "broken.rules.yaml:4:10: rules.2.id: duplicate rule id 'same' (first defined at line 2)"
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            '{id: x, when: {telemetry: t}, rate: {condition: "rate > 1"}, window: {duration: 1m, agg: avg, condition: "avg > 1"}}',
            "`rate` and `window` exclude each other",
        ),
        (
            "{id: x, when: {event: a}, sequence: {events: [a, b], within: 1m}}",
            "`sequence` names its own event types: remove `when.event`",
        ),
        ("{id: x, sequence: {events: [a, b], within: 1m}, for: 1m}", "`for` does not apply to `sequence`"),
        ("{id: x, when: {event: a}, absence: 1m, clear: 'true'}", "`clear` does not apply to `absence`"),
        (
            '{id: x, when: {telemetry: [a, b]}, rate: {condition: "rate > 1"}}',
            "`rate` needs `when.telemetry` with exactly one metric",
        ),
        (
            '{id: x, when: {telemetry: a, condition: "value > 1"}, rate: {condition: "rate > 1"}}',
            "the condition goes in `rate.condition`",
        ),
        ("{id: x, when: {event: a}, for: 1m}", "`for` needs a level that lasts"),
        ("{id: x, when: {telemetry: a}}", "a telemetry rule needs `when.condition`"),
        ("{id: x, when: {state: {}}}", "a `state` rule needs `from`, `to` or `when.condition`"),
        ("{id: x, when: {devices: {type: door}}}", "`when` needs one source"),
        ("{id: x, when: {event: a}, cooldown: 0s}", "a duration must be longer than zero"),
        ("{id: x, when: {message: 'a/#/b'}}", "`#` must be a whole last level"),
        ("{id: x, when: {telemetry: [a, a], condition: 'a > 1'}}", "a metric is listed twice"),
    ],
)
def test_incompatible_combinations_are_refused_with_the_reason(rule: str, message: str) -> None:
    issues = errors(f"rules:\n  - {rule}\n")
    assert len(issues) == 1, issues
    assert re.match(r"broken\.rules\.yaml:2:\d+: rules\.0", issues[0]), issues[0]
    assert message in issues[0]


def test_every_problem_of_a_file_is_reported_in_file_order() -> None:
    issues = errors(
        """\
rules:
  - {id: a, when: {telemetry: t, condition: "nope > 1"}}
  - {id: b, when: {event: x}, actions: [{type: teleport}]}
  - {id: c, when: {event: x}, for: 1m}
  - {id: "bad id", when: {event: x}}
"""
    )
    assert [i.split(":")[1] for i in issues] == ["2", "3", "4", "5"]


def test_invalid_yaml_and_missing_rules_key() -> None:
    assert errors("rules:\n  - {id: a\n")[0].startswith("broken.rules.yaml:3:1: invalid YAML")
    assert errors("{}\n") == ["broken.rules.yaml:1:1: rules: Field required"]
    with pytest.raises(DefinitionError, match="cannot read"):
        load_rules("/nonexistent/x.rules.yaml")


def test_scope_names_depend_on_the_source() -> None:
    loaded = load_rules(
        "scope.rules.yaml",
        text="""
rules:
  - id: telemetry
    when: {telemetry: [temperature, humidity], condition: "temperature > 30 and humidity > metrics.floor and device.type == 'room'"}
    actions: [{type: log, message: "{{ rule.id }} {{ severity }} {{ metric }}={{ value }} at {{ now() }}"}]
  - id: state
    when: {state: {to: offline}, condition: "previous_state != 'maintenance'"}
    actions: [{type: log, message: "{{ device_id }} went {{ state }}"}]
  - id: sequence
    sequence: {events: [a, b], within: 1m}
    actions: [{type: log, message: "{{ elapsed }}s, last {{ event.type }}"}]
  - id: absence
    when: {telemetry: heartbeat}
    absence: 5m
    actions: [{type: log, message: "silent {{ silent_for }}s since {{ last_seen }}"}]
  - id: window
    when: {telemetry: t}
    window: {duration: 1m, agg: max, condition: "max - value > 3 and count > 2"}
""",
    )
    assert len(loaded.rules) == 5
    assert (
        "rate"
        in errors(
            'rules:\n  - {id: x, when: {telemetry: t}, window: {duration: 1m, agg: min, condition: "rate > 1"}}\n'
        )[0]
    )


def test_a_metric_named_like_a_scope_name_warns() -> None:
    loaded = load_rules(
        "w.rules.yaml", text="rules:\n  - {id: x, when: {telemetry: value, condition: 'value > 1'}}\n"
    )
    assert [str(w) for w in loaded.warnings] == [
        "w.rules.yaml:2:31: warning: rules.0.when.telemetry: metric 'value' is hidden by the scope name of the "
        "same name: read it as metrics['value']"
    ]
