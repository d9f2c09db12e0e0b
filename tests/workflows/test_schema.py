"""The JSON Schemas accept the example and test workflows and rules, and refuse what the loader refuses for
reasons a schema can see (unknown keys, unknown action types, bad durations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from workflows.actions import ActionRegistry
from workflows.cli import app
from workflows.schema import DRAFT, rules_schema, workflow_schema

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
EXAMPLES = sorted((ROOT / "examples" / "workflows").rglob("*.yaml")) + sorted(
    (HERE / "valid").rglob("*.yaml")
)
RULES = [p for p in EXAMPLES if "rules" in yaml.safe_load(p.read_text(encoding="utf-8"))]
WORKFLOWS = [p for p in EXAMPLES if p not in RULES]
# Corpus files whose problem a schema can see; the others need the compiler (names, transitions, cron).
SCHEMA_VISIBLE = ["unknown_key", "unknown_action_key", "unknown_action_type", "bad_duration"]
SCHEMA_VISIBLE_RULES = ["rules_invalid", "rules_bad_condition"]  # the latter: `set` is workflow-only


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(document)]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return workflow_schema()


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return rules_schema()


@pytest.mark.parametrize("make", [workflow_schema, rules_schema])
def test_schemas_are_draft7_with_titles(make: Any) -> None:
    schema = make()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT
    assert schema["title"]
    assert schema["description"]
    assert "$defs" not in json.dumps(schema)


def test_actions_are_a_oneof_over_the_registry(workflow: dict[str, Any], rules: dict[str, Any]) -> None:
    registry = ActionRegistry()
    refs = [item["$ref"] for item in workflow["definitions"]["ActionSpec"]["oneOf"]]
    assert refs == [f"#/definitions/action.{name}" for name in registry.names()]
    for name in registry.names():
        kind = workflow["definitions"][f"action.{name}"]
        assert kind["properties"]["type"]["const"] == name
        assert "result_as" in kind["properties"]
        assert kind["additionalProperties"] is False
        assert kind["description"]
    rule_kinds = [item["$ref"].rsplit(".", 1)[1] for item in rules["definitions"]["ActionSpec"]["oneOf"]]
    assert "set" not in rule_kinds  # workflow-only
    assert "command" in rule_kinds


def test_template_fields_are_strings_and_durations_take_both_forms(workflow: dict[str, Any]) -> None:
    command = workflow["definitions"]["action.command"]["properties"]
    assert command["device"]["type"] == "string"
    assert command["timeout"]["type"] == ["number", "string"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_valid_workflows_pass(workflow: dict[str, Any], path: Path) -> None:
    assert errors(workflow, load(path)) == []


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_valid_rules_pass(rules: dict[str, Any], path: Path) -> None:
    assert errors(rules, load(path)) == []


@pytest.mark.parametrize("name", SCHEMA_VISIBLE)
def test_broken_workflows_fail(workflow: dict[str, Any], name: str) -> None:
    assert errors(workflow, load(HERE / "broken" / f"{name}.yaml"))


@pytest.mark.parametrize("name", SCHEMA_VISIBLE_RULES)
def test_broken_rules_fail(rules: dict[str, Any], name: str) -> None:
    assert errors(rules, load(HERE / "broken" / f"{name}.yaml"))


def test_metric_lists_take_a_name_or_a_list(rules: dict[str, Any]) -> None:
    for metrics in ("temperature", ["temperature", "pressure"]):
        document = {"rules": [{"id": "r", "when": {"telemetry": metrics, "condition": "value > 1"}}]}
        assert errors(rules, document) == [], metrics
    assert errors(rules, {"rules": [{"id": "r", "when": {"telemetry": [], "condition": "value > 1"}}]})


BASE: dict[str, Any] = {"id": "w", "start_at": "a", "states": {"a": {"type": "succeed"}}}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"start_at": None}, "start_at must be a string"),
        ({"states": {"a": {"type": "sleep"}}}, "unknown state type"),
        ({"states": {"a b": {"type": "succeed"}}}, "state name with a space"),
        ({"timeout": "soon"}, "bad duration"),
        ({"timeout": -1}, "negative duration"),
        ({"triggers": [{"type": "schedule", "cron": "* * * * *", "tz": "UTC"}]}, "unknown trigger key"),
        (
            {"states": {"a": {"type": "task", "end": True, "actions": [{"type": "log"}]}}},
            "action missing a required key",
        ),
        (
            {
                "states": {
                    "a": {
                        "type": "task",
                        "end": True,
                        "actions": [{"type": "log", "message": "x", "url": "y"}],
                    }
                }
            },
            "key of another action kind",
        ),
    ],
)
def test_schema_refuses(workflow: dict[str, Any], change: dict[str, Any], why: str) -> None:
    document = {**BASE, **change}
    assert errors(workflow, document), why


def test_durations_accept_strings_and_numbers(workflow: dict[str, Any]) -> None:
    for value in ("250ms", "30s", "1h30m", "2d", "45", 12, 0.5):
        assert errors(workflow, {**BASE, "timeout": value}) == [], value


def test_schema_command_writes_both_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert written == ["rules.schema.json", "workflow.schema.json"]
    assert json.loads((tmp_path / "schemas" / "workflow.schema.json").read_text()) == workflow_schema()


def test_schema_command_prints_one_kind() -> None:
    result = CliRunner().invoke(app, ["schema", "--kind", "rules"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == rules_schema()
