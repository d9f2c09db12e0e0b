"""JSON Schemas of workflow and rules files, so editors (the YAML language server) complete keys and flag errors.

The schemas are generated from the same pydantic models the loader validates with, then tightened where the
models are looser than the files they accept:

- an action is a ``oneOf`` over the registry's kinds, each with its ``type`` constant, ``result_as`` and that
  kind's configuration keys and nothing else (the models keep action configuration open until compile time);
- durations accept ``30s``/``5m``/``1h30m`` strings as well as numbers of seconds;
- maps whose keys follow a pattern (state names, variables) refuse keys that do not.

They are draft-07, the draft the YAML language server implements, so ``$defs`` become ``definitions``, a
``$ref`` with sibling keys is wrapped in ``allOf`` (draft-07 ignores the siblings) and pydantic's OpenAPI
``discriminator`` hint is dropped. What a schema cannot say (transitions to undefined states, unknown names in
expressions, cron syntax) is left to ``fieldline workflow validate``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from fieldline.durations import parse_duration
from workflows.actions import ActionKind, ActionRegistry
from workflows.definition import NAME, WorkflowDefinition
from workflows.rule_definition import RulesFile, _metric_list

DRAFT = "http://json-schema.org/draft-07/schema#"
_LITERAL = frozenset({"default", "const", "enum", "examples"})  # values, not schemas: left as they are
DURATION: dict[str, Any] = {
    "description": "a duration: 250ms, 30s, 5m, 1h30m, 2d, or a number of seconds",
    "type": ["number", "string"],
    "minimum": 0,  # applies to numbers only, as `pattern` to strings only
    "pattern": r"^\s*(?:(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+|\d+(?:\.\d+)?\s*)$",
    "patternErrorMessage": "not a duration: use forms like 250ms, 30s, 5m, 1h30m, 2d",  # read by VS Code
}
# Descriptions for models that carry no docstring, shown by editors on hover.
_DESCRIPTIONS = {
    "TaskState": "Run `actions` in order, then go to `next` (or end); `retry` and `catch` handle failures.",
    "ChoiceState": "Go to the `next` of the first branch whose `when` condition holds, else to `default`.",
    "ChoiceBranch": "A branch of a choice: a condition and the state to go to when it holds.",
    "ParallelState": "Run every branch as its own state machine; go on when all have finished.",
    "MapState": "Run `iterator` once for each element of `items`, at most `max_concurrency` at a time.",
    "WaitState": "Wait for `seconds`, `until` a time, or for an `event` (with an optional timeout).",
    "WaitForEvent": "The event a wait state waits for; `on_timeout` names the state to go to after `timeout`.",
    "SucceedState": "End the machine successfully, with an optional `output`.",
    "FailState": "End the machine with `error` and `cause`.",
    "EventTrigger": "Start an instance for each event of type `event` whose `condition` holds.",
    "ScheduleTrigger": "Start an instance on a `cron` schedule (in `timezone`) or `every` interval.",
    "ApiTrigger": "Start instances through the REST API or the CLI.",
    "DeviceStateTrigger": "Start an instance when a matching device goes `from` one state `to` another.",
    "DeviceSelector": "Which devices a trigger watches: an id glob and/or a device type.",
    "MessageTrigger": "Start an instance for each MQTT message on `topic` (a filter with + and #).",
}
# Descriptions for fields that carry none; only names that mean one thing wherever they appear.
_FIELD_HELP = {
    "start_at": "the state an instance (or a branch, an iteration) starts in",
    "states": "the states, by name",
    "next": "the state to go to next",
    "end": "true: the machine ends after this state",
    "retry": "retry policies for errors this state raises, the first that matches applies",
    "catch": "where to go when this state fails, the first clause that matches applies",
    "errors": "error names this applies to; `*` matches any",
    "comment": "free text for readers",
    "triggers": "what starts an instance",
    "actions": "actions to run, in order",
    "result_as": "store the result in this variable",
    "condition": "a condition: a Jinja expression such as `temperature > 80`",
    "choices": "branches tried in order; the first whose `when` holds is taken",
}
_ACTION_HELP = {
    "command": "Send a command to a device (`device` defaults to the event's device); `await_ack` waits.",
    "publish": "Publish a payload on an MQTT topic.",
    "emit": "Emit an event that rules and workflows can react to.",
    "notify": "Send a message through a notification channel (`log` by default).",
    "http": "Call an HTTP endpoint; the response status and body become the result.",
    "set": "Set workflow variables from `values`.",
    "log": "Write a message to the log.",
    "start_workflow": "Start another workflow with `variables`; the result holds the new instance id.",
    "signal": "Send an event to a waiting workflow instance.",
}


# What the file may hold where a before-validator turns it into the field's type (a validator that declares
# `json_schema_input_type` needs no entry).
_INPUTS: dict[Any, dict[str, Any]] = {
    parse_duration: DURATION,
    _metric_list: {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "uniqueItems": True,
            },
        ]
    },
}


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with the input forms of ``_INPUTS``."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        known = _INPUTS.get(schema["function"]["function"])
        return dict(known) if known is not None else super().function_before_schema(schema)


def workflow_schema(registry: ActionRegistry | None = None) -> dict[str, Any]:
    """The JSON Schema of a workflow file."""
    return _document(
        WorkflowDefinition,
        registry or ActionRegistry(),
        title="Fieldline workflow",
        description="A state-machine workflow: triggers start instances at `start_at`; states run actions, "
        "choose, wait, fan out and end.",
        rules=False,
    )


def rules_schema(registry: ActionRegistry | None = None) -> dict[str, Any]:
    """The JSON Schema of a rules file (a top-level ``rules:`` list)."""
    return _document(
        RulesFile,
        registry or ActionRegistry(),
        title="Fieldline rules",
        description="Event rules: each rule watches events or telemetry and runs actions when its condition holds.",
        rules=True,
    )


def _document(
    model: type[BaseModel], registry: ActionRegistry, *, title: str, description: str, rules: bool
) -> dict[str, Any]:
    schema = model.model_json_schema(schema_generator=_Generator)
    defs: dict[str, Any] = schema.pop("$defs", {})
    for name, text in _DESCRIPTIONS.items():
        if name in defs:
            defs[name].setdefault("description", text)
    for definition in [schema, *defs.values()]:
        for field, prop in definition.get("properties", {}).items():
            if field in _FIELD_HELP:
                prop.setdefault("description", _FIELD_HELP[field])
    kinds = [
        kind
        for name in registry.names()
        if (kind := registry.get(name)) is not None and not (rules and kind.workflow_only)
    ]
    for kind in kinds:
        defs[f"action.{kind.name}"] = _action(kind, defs)
    defs["ActionSpec"] = {
        "title": "Action",
        "description": "An action: `type` picks the kind ("
        + ", ".join(k.name for k in kinds)
        + "), the other keys are its configuration.",
        "type": "object",
        "required": ["type"],
        "oneOf": [{"$ref": f"#/$defs/action.{kind.name}"} for kind in kinds],
    }
    schema.pop("title", None)
    schema.pop("description", None)
    document = {"$schema": DRAFT, "title": title, "description": description, **schema, "$defs": defs}
    return _draft7(document)


def _action(kind: ActionKind, defs: dict[str, Any]) -> dict[str, Any]:
    """One action kind: its ``type`` constant, ``result_as`` and its configuration's keys, nothing else."""
    config = kind.config.model_json_schema(schema_generator=_Generator)
    defs.update(config.pop("$defs", {}))
    return {
        "title": f"{kind.name} action",
        "description": (kind.config.__doc__ if "__doc__" in vars(kind.config) else None)
        or _ACTION_HELP.get(kind.name, f"The `{kind.name}` action."),
        "type": "object",
        "properties": {
            "type": {"const": kind.name, "description": "the action kind"},
            "result_as": {
                "type": "string",
                "pattern": NAME,
                "description": "store the action's result in this variable",
            },
            **config.get("properties", {}),
        },
        "required": ["type", *config.get("required", [])],
        "additionalProperties": False,
    }


def _draft7(node: Any) -> Any:
    """Rewrite a pydantic (2020-12 flavoured) schema into draft-07."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: value if key in _LITERAL else _draft7(value)
        for key, value in node.items()
        if key != "discriminator"
    }
    if "$defs" in out:
        out["definitions"] = out.pop("$defs")
    if isinstance(ref := out.get("$ref"), str):
        out["$ref"] = ref.replace("#/$defs/", "#/definitions/")
        if len(out) > 1:
            out["allOf"] = [{"$ref": out.pop("$ref")}]
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = _flatten(out)
    if "patternProperties" in out and "properties" not in out:
        out.setdefault("additionalProperties", False)
    return out


def _flatten(node: dict[str, Any]) -> list[Any]:
    """The items of ``node``'s ``anyOf`` with nested bare ``anyOf`` lists lifted in (``metrics | None``)."""
    flat: list[Any] = []
    for item in node["anyOf"]:
        flat += item["anyOf"] if isinstance(item, dict) and set(item) == {"anyOf"} else [item]
    return flat
