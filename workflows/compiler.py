"""Turn a validated ``WorkflowDefinition`` into a runnable ``Workflow``, collecting every problem on the way.

The schema (``definition.py``) checks shapes; this checks meaning: transitions to states that do not exist, a
missing start state, unreachable states (a warning), a choice without ``default``, unknown action types and
their configuration, expression syntax and names that are not in scope, cron expressions and time zones.
Each problem carries the path of the YAML node it concerns so the loader can print ``file:line:col``.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from croniter import croniter
from pydantic import ValidationError

from workflows.actions import ActionConfig, ActionKind, ActionRegistry
from workflows.definition import (
    ActionSpec,
    ChoiceState,
    EventTrigger,
    MapState,
    MessageTrigger,
    ParallelState,
    ScheduleTrigger,
    SubMachine,
    SucceedState,
    TaskState,
    Trigger,
    WaitState,
    WorkflowDefinition,
)
from workflows.errors import ExpressionError
from workflows.expressions import Condition, Template, TemplateValue

Path = tuple[str | int, ...]
SCOPE_NAMES = frozenset({"vars", "event", "result", "device", "instance", "now", "error"})
TRIGGER_SCOPE = frozenset({"event", "device", "now"})


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    message: str
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True, slots=True)
class CompiledAction:
    kind: ActionKind
    config: ActionConfig
    result_as: str | None
    type: str


@dataclass(slots=True)
class CompiledState:
    name: str
    spec: Any
    actions: list[CompiledAction] = field(default_factory=list)
    choices: list[tuple[Condition, str]] = field(default_factory=list)
    items: Condition | None = None
    until: Template | None = None
    event_condition: Condition | None = None
    event_device_var: str | None = None
    """The variable an event wait's condition equates with the event's ``device_id`` (the wait index key)."""
    output: TemplateValue | None = None
    branches: list[Machine] = field(default_factory=list)


@dataclass(slots=True)
class Machine:
    """A state machine: the workflow's top level, a parallel branch or a map iterator. ``path`` locates it."""

    path: Path
    start_at: str
    states: dict[str, CompiledState]


@dataclass(slots=True)
class CompiledTrigger:
    spec: Trigger
    condition: Condition | None
    variables: dict[str, TemplateValue]


@dataclass(slots=True)
class Workflow:
    definition: WorkflowDefinition
    machine: Machine
    triggers: list[CompiledTrigger]
    on_error: list[CompiledAction]
    machines: dict[Path, Machine]
    """Every machine by path, so a child instance finds its branch in the version it was started with."""

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def version(self) -> str:
        return self.definition.version


class _Compiler:
    def __init__(self, definition: WorkflowDefinition, registry: ActionRegistry) -> None:
        self.definition = definition
        self.registry = registry
        self.problems: list[Problem] = []
        self.machines: dict[Path, Machine] = {}
        self.known = SCOPE_NAMES | set(definition.variables) | _assigned_names(definition)

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(path, message))

    def condition(self, source: str, path: Path, known: Iterable[str] | None = None) -> Condition | None:
        try:
            return Condition(source, known=frozenset(known) if known is not None else self.known)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return None

    def template(self, source: str, path: Path) -> Template | None:
        try:
            return Template(source, known=self.known)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return None

    def actions(self, specs: list[ActionSpec], path: Path, *, rule: bool = False) -> list[CompiledAction]:
        return [
            a
            for i, spec in enumerate(specs)
            if (a := compile_action(spec, (*path, i), self.registry, self.known, self.problems, rule=rule))
        ]

    def machine(self, start_at: str, states: dict[str, Any], path: Path) -> Machine:
        compiled = {name: self.state(name, spec, (*path, "states", name)) for name, spec in states.items()}
        if start_at not in states:
            self.error(
                (*path, "start_at"), f"start state {start_at!r} is not defined (states: {', '.join(states)})"
            )
        machine = Machine(path, start_at, compiled)
        self.machines[path] = machine
        self.check_targets(machine, path)
        return machine

    def state(self, name: str, spec: Any, path: Path) -> CompiledState:
        state = CompiledState(name, spec)
        if isinstance(spec, TaskState):
            state.actions = self.actions(spec.actions, (*path, "actions"))
        elif isinstance(spec, ChoiceState):
            for i, branch in enumerate(spec.choices):
                if (cond := self.condition(branch.when, (*path, "choices", i, "when"))) is not None:
                    state.choices.append((cond, branch.next))
            if spec.default is None:
                self.error(
                    path,
                    f"choice {name!r} has no `default`: when no branch matches the instance would have nowhere to go",
                )
        elif isinstance(spec, ParallelState):
            state.branches = [
                self.machine(b.start_at, b.states, (*path, "branches", i))
                for i, b in enumerate(spec.branches)
            ]
        elif isinstance(spec, MapState):
            state.items = self.condition(spec.items, (*path, "items"))
            state.branches = [self.sub_machine(spec.iterator, (*path, "iterator"))]
        elif isinstance(spec, SucceedState) and spec.output is not None:
            try:
                state.output = TemplateValue(spec.output, known=self.known)
            except ExpressionError as exc:
                self.error((*path, "output"), str(exc))
        elif isinstance(spec, WaitState):
            if spec.until is not None:
                state.until = self.template(spec.until, (*path, "until"))
            if spec.event is not None and spec.event.condition is not None:
                known = self.known | {spec.event.result_as}
                state.event_condition = self.condition(
                    spec.event.condition, (*path, "event", "condition"), known
                )
                if state.event_condition is not None:
                    state.event_device_var = state.event_condition.equated_name(
                        f"{spec.event.result_as}.device_id"
                    )
        return state

    def sub_machine(self, sub: SubMachine, path: Path) -> Machine:
        return self.machine(sub.start_at, sub.states, path)

    def check_targets(self, machine: Machine, path: Path) -> None:
        names = set(machine.states)
        edges: dict[str, set[str]] = {n: set() for n in names}
        for name, state in machine.states.items():
            for target, where in _targets(state.spec):
                if target not in names:
                    self.error(
                        (*path, "states", name, *where),
                        f"transition to undefined state {target!r} (states: {', '.join(sorted(names))})",
                    )
                else:
                    edges[name].add(target)
        if path == () and self.definition.on_error and self.definition.on_error.next:
            target = self.definition.on_error.next
            if target not in names:
                self.error(("on_error", "next"), f"transition to undefined state {target!r}")
            else:
                edges.setdefault("", set()).add(target)
        reachable: set[str] = set()
        stack = [machine.start_at, *edges.get("", ())]
        while stack:
            current = stack.pop()
            if current in reachable or current not in edges:
                continue
            reachable.add(current)
            stack.extend(edges[current])
        for name in machine.states:
            if name not in reachable and machine.start_at in names:
                self.problems.append(
                    Problem((*path, "states", name), f"state {name!r} is unreachable", "warning")
                )

    def triggers(self) -> list[CompiledTrigger]:
        out = []
        for i, trigger in enumerate(self.definition.triggers):
            path: Path = ("triggers", i)
            condition = None
            if isinstance(trigger, EventTrigger | MessageTrigger) and trigger.condition is not None:
                condition = self.condition(trigger.condition, (*path, "condition"), TRIGGER_SCOPE)
            if isinstance(trigger, ScheduleTrigger):
                if trigger.cron is not None and not croniter.is_valid(trigger.cron):
                    self.error((*path, "cron"), f"invalid cron expression {trigger.cron!r}")
                try:
                    zoneinfo.ZoneInfo(trigger.timezone)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    self.error((*path, "timezone"), f"unknown time zone {trigger.timezone!r}")
            variables: dict[str, TemplateValue] = {}
            for name, source in trigger.variables.items():
                if name not in self.definition.variables:
                    self.error(
                        (*path, "variables", name),
                        f"{name!r} is not a declared variable (declared: {', '.join(self.definition.variables) or 'none'})",
                    )
                    continue
                try:
                    variables[name] = TemplateValue(source, known=TRIGGER_SCOPE)
                except ExpressionError as exc:
                    self.error((*path, "variables", name), str(exc))
            out.append(CompiledTrigger(trigger, condition, variables))
        return out


def compile_action(
    spec: ActionSpec,
    path: Path,
    registry: ActionRegistry,
    known: Iterable[str] | None,
    problems: list[Problem],
    *,
    rule: bool = False,
) -> CompiledAction | None:
    """Validate one action's configuration against its kind; append problems, return None when invalid."""
    kind = registry.get(spec.type)
    if kind is None:
        problems.append(
            Problem(
                (*path, "type"), f"unknown action type {spec.type!r} (known: {', '.join(registry.names())})"
            )
        )
        return None
    if rule and kind.workflow_only:
        problems.append(Problem((*path, "type"), f"action {spec.type!r} only runs inside a workflow"))
        return None
    try:
        config = kind.config.model_validate(
            spec.config, context={"known": frozenset(known) if known is not None else None}
        )
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown key for action {spec.type!r}"
            problems.append(Problem((*path, *loc), message))
        return None
    return CompiledAction(kind, config, spec.result_as, spec.type)


def _targets(spec: Any) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if getattr(spec, "next", None):
        out.append((spec.next, ("next",)))
    if isinstance(spec, ChoiceState):
        out += [(b.next, ("choices", i, "next")) for i, b in enumerate(spec.choices)]
        if spec.default:
            out.append((spec.default, ("default",)))
    for i, clause in enumerate(getattr(spec, "catch", [])):
        out.append((clause.next, ("catch", i, "next")))
    if isinstance(spec, WaitState) and spec.event is not None and spec.event.on_timeout:
        out.append((spec.event.on_timeout, ("event", "on_timeout")))
    return out


def _assigned_names(definition: WorkflowDefinition) -> set[str]:
    """Names a workflow can assign (result_as, catch variables, map items, ``set`` keys): in scope everywhere."""
    names: set[str] = set()

    def actions(specs: list[ActionSpec]) -> None:
        for spec in specs:
            if spec.result_as:
                names.add(spec.result_as)
            values = spec.config.get("values")
            if spec.type == "set" and isinstance(values, dict):
                names.update(str(k) for k in values)

    def states(machine_states: dict[str, Any]) -> None:
        for spec in machine_states.values():
            if isinstance(spec, TaskState):
                actions(spec.actions)
            for clause in getattr(spec, "catch", []):
                names.add(clause.result_as)
            if isinstance(spec, ParallelState):
                for branch in spec.branches:
                    states(branch.states)
            if isinstance(spec, MapState):
                names.add(spec.item_as)
                names.add("index")
                states(spec.iterator.states)
            if getattr(spec, "result_as", None):
                names.add(spec.result_as)
            if isinstance(spec, WaitState) and spec.event is not None:
                names.add(spec.event.result_as)

    states(definition.states)
    if definition.on_error:
        actions(definition.on_error.actions)
        names.add(definition.on_error.result_as)
    return names


def compile_workflow(
    definition: WorkflowDefinition, registry: ActionRegistry
) -> tuple[Workflow | None, list[Problem]]:
    """Compile a workflow; the workflow is None when any problem is an error."""
    compiler = _Compiler(definition, registry)
    machine = compiler.machine(definition.start_at, definition.states, ())
    triggers = compiler.triggers()
    on_error = (
        compiler.actions(definition.on_error.actions, ("on_error", "actions")) if definition.on_error else []
    )
    problems = compiler.problems
    if any(p.severity == "error" for p in problems):
        return None, problems
    return Workflow(definition, machine, triggers, on_error, compiler.machines), problems
