"""Load a rules file and compile each rule: its conditions against the names in scope for its source, its
actions against the registry, its device selector and its index keys. Problems carry the YAML path of the node
they concern; ``load_rules`` raises ``DefinitionError`` with all of them positioned as ``file:line:col``.

Names in scope (conditions; actions also see ``rule`` and ``severity``):

    every source   device_id, device {id, type}, event {type, data, device_id, device_type, topic, ts, source}, now()
    telemetry      value, metric, metrics (the message's metrics), each watched metric by name
    event, message data (the event's data), topic
    state          data, topic, state (the new state), previous_state
    rate           + rate, previous                 window  + <agg> (avg, min, max or sum), count
    sequence       (actions) + elapsed              absence (actions) + last_seen, silent_for
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fieldline.errors import ConfigError, ConfigIssue
from fieldline.yamlconf import read_yaml, validate_data
from workflows.actions import ActionRegistry
from workflows.compiler import Path as NodePath
from workflows.compiler import Problem, compile_action
from workflows.errors import DefinitionError, ExpressionError
from workflows.events import DEVICE_STATE, MQTT_MESSAGE, TELEMETRY
from workflows.expressions import Condition
from workflows.loader import positioned, read_source
from workflows.rule_definition import RulesFile, RuleSpec
from workflows.rule_kinds import CompiledRule, DeviceMatcher, Kind, state_test

COMMON_NAMES = frozenset({"device_id", "device", "event", "now"})
TELEMETRY_NAMES = COMMON_NAMES | {"value", "metric", "metrics"}
EVENT_NAMES = COMMON_NAMES | {"data", "topic"}
STATE_NAMES = EVENT_NAMES | {"state", "previous_state"}
RULE_NAMES = frozenset({"rule", "severity"})
"""Added to the scope of actions: ``rule`` = {id, severity, firing, description}, ``severity``."""


_WATCHING = {"when", "for_", "sequence", "absence", "rate", "window", "cooldown", "clear"}
"""The fields a rule's stored state depends on."""


def _kind(spec: RuleSpec, source: str) -> Kind:
    if spec.modifier is not None:
        return spec.modifier  # type: ignore[return-value]
    return "level" if source in ("telemetry", "state") else "occurrence"


def compile_rule(
    spec: RuleSpec, path: NodePath, registry: ActionRegistry, problems: list[Problem], filename: str = ""
) -> CompiledRule | None:
    """Compile one validated rule; append problems and return None when it has errors."""
    before = len([p for p in problems if p.severity == "error"])
    when = spec.when
    source = (when.source if when is not None else None) or "sequence"
    kind = _kind(spec, source)
    metrics = tuple(when.telemetry) if when is not None and when.telemetry else ()
    names = {
        "telemetry": TELEMETRY_NAMES | set(metrics),
        "state": STATE_NAMES,
        "event": STATE_NAMES if when is not None and when.event == DEVICE_STATE else EVENT_NAMES,
        "message": EVENT_NAMES,
        "sequence": EVENT_NAMES,
    }[source]
    for metric in metrics:
        if metric in TELEMETRY_NAMES:
            problems.append(
                Problem(
                    (*path, "when", "telemetry"),
                    f"metric {metric!r} is hidden by the scope name of the same name: read it as metrics[{metric!r}]",
                    "warning",
                )
            )

    def condition(source_text: str, where: NodePath, known: frozenset[str]) -> Condition | None:
        try:
            return Condition(source_text, known=known)
        except ExpressionError as exc:
            problems.append(Problem(where, str(exc)))
            return None

    alert_keys: tuple[str, ...] = {
        "telemetry": ("metric", "value"),
        "state": ("state", "previous_state"),
        "event": (),
        "message": ("topic",),
        "sequence": (),
    }[source]
    main = None
    cond_names = frozenset(names)
    modifier = spec.rate or spec.window
    if modifier is not None:
        if spec.rate is not None:
            extra: tuple[str, ...] = ("rate", "previous")
        else:
            extra = ("count",) if modifier.agg == "count" else (modifier.agg, "count")  # type: ignore[union-attr]
        cond_names = cond_names | set(extra)
        alert_keys += extra
        main = condition(modifier.condition, (*path, kind, "condition"), cond_names)
    elif when is not None and when.condition is not None:
        main = condition(when.condition, (*path, "when", "condition"), cond_names)
    test = main.value if main is not None else None
    if when is not None and when.state is not None:
        test = state_test(when.state.from_, when.state.to, main)
    action_names = cond_names | RULE_NAMES
    if kind == "sequence":
        action_names |= {"elapsed"}
        alert_keys = ("elapsed",)
    elif kind == "absence":
        action_names |= {"last_seen", "silent_for"}
        alert_keys = ("last_seen", "silent_for")
    clear = condition(spec.clear, (*path, "clear"), cond_names) if spec.clear is not None else None
    actions = tuple(
        a
        for i, action in enumerate(spec.actions)
        if (a := compile_action(action, (*path, "actions", i), registry, action_names, problems, rule=True))
    )
    if len([p for p in problems if p.severity == "error"]) > before:
        return None
    devices = when.devices if when is not None else None
    matcher = DeviceMatcher(devices.id, devices.type) if devices and (devices.id or devices.type) else None
    if source == "sequence":
        event_types = tuple(dict.fromkeys(spec.sequence.events))  # type: ignore[union-attr]
    elif source == "event":
        event_types = (when.event,)  # type: ignore[union-attr]
    elif source == "state":
        event_types = (DEVICE_STATE,)
    elif source == "message":
        event_types = (MQTT_MESSAGE,)
    else:
        event_types = (TELEMETRY,)
    return CompiledRule(
        spec=spec,
        file=filename,
        kind=kind,
        source=source,
        metrics=metrics,
        event_types=event_types,
        topic=when.message if when is not None else None,
        matcher=matcher,
        condition=main,
        test=test,
        clear=clear,
        actions=actions,
        alert_keys=alert_keys,
        digest=hashlib.sha256(spec.model_dump_json(include=_WATCHING, by_alias=True).encode()).hexdigest()[
            :16
        ],
    )


@dataclass(frozen=True, slots=True)
class LoadedRules:
    rules: tuple[CompiledRule, ...]
    file: str
    source: str
    warnings: list[ConfigIssue]


def load_rules(
    path: str | Path, registry: ActionRegistry | None = None, *, text: str | None = None
) -> LoadedRules:
    """Load and compile a rules file; raises ``DefinitionError`` with every error found."""
    filename = str(path)
    text = read_source(path, text)
    try:
        data, positions = read_yaml(filename, text=text)
    except ConfigError as exc:
        raise DefinitionError(exc.issues) from exc
    schema: list[ConfigIssue] = []
    try:
        specs: list[RuleSpec | None] = list(validate_data(RulesFile, data, filename, positions).rules)
    except ConfigError as exc:
        # Report every problem at once: the rules that validate on their own are still compiled.
        schema = exc.issues
        raw = data.get("rules") if isinstance(data, dict) else None
        specs = [_valid_spec(item) for item in raw] if isinstance(raw, list) else []
    problems: list[Problem] = []
    compiled = []
    first: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec is None:
            continue
        if spec.id in first:
            line = positions.get(("rules", first[spec.id], "id"), (None,))[0]
            problems.append(
                Problem(
                    ("rules", index, "id"), f"duplicate rule id {spec.id!r} (first defined at line {line})"
                )
            )
            continue
        first[spec.id] = index
        rule = compile_rule(spec, ("rules", index), registry or ActionRegistry(), problems, filename)
        if rule is not None:
            compiled.append(rule)
    issues = positioned(problems, filename, positions)
    if schema or any(p.severity == "error" for p in problems):
        raise DefinitionError(
            sorted([*schema, *issues], key=lambda i: (i.line is None, i.line or 0, i.column or 0))
        )
    return LoadedRules(tuple(compiled), filename, text, [i for i in issues if i.severity == "warning"])


def _valid_spec(raw: Any) -> RuleSpec | None:
    try:
        return RuleSpec.model_validate(raw)
    except ValidationError:
        return None
