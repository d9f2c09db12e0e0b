"""Draw a compiled workflow as a Mermaid ``stateDiagram-v2`` (``fieldline workflow graph``).

Each machine starts at ``[*]``; ``end: true``, ``succeed`` and ``fail`` states go to ``[*]``. Transitions carry
what takes them: a choice branch's ``when`` condition or ``default``, ``catch: <errors>``, ``retry``, a wait's
event or delay and its ``timeout``. Choice states are ``<<choice>>`` diamonds; ``parallel`` branches are the
concurrent regions of a composite state and a ``map`` iterator is a composite state of its own.

Mermaid ids are global to a diagram and refuse some characters and keywords, so every state gets an id made of
its path (``fanout_0_heat``) and is labelled with its own name.
"""

from __future__ import annotations

import re

from workflows.compiler import CompiledState, Machine, Workflow
from workflows.definition import ChoiceState, FailState, MapState, ParallelState, SucceedState, WaitState

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# Words Mermaid's state grammar reads as keywords (compared case-insensitively).
_KEYWORDS = frozenset(
    {
        "state",
        "note",
        "class",
        "classdef",
        "style",
        "click",
        "default",
        "scale",
        "href",
        "statediagram",
        "end",
    }
)
_INDENT = "    "


def mermaid(workflow: Workflow) -> str:
    """The workflow as Mermaid text, titled with its id and version."""
    writer = _Writer()
    writer.machine(workflow.machine, "", 1)
    on_error = workflow.definition.on_error
    if on_error is not None and on_error.next is not None:
        target = writer.ids[((), on_error.next)]
        writer.lines.append(f"{_INDENT}note right of {target} : on_error continues here")
    title = f"{workflow.id} {workflow.version}"
    return "\n".join(["---", f"title: {title}", "---", "stateDiagram-v2", *writer.lines]) + "\n"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ids: dict[tuple[tuple[str | int, ...], str], str] = {}
        self.used: set[str] = set()

    def id(self, machine: Machine, prefix: str, name: str) -> str:
        """A unique Mermaid id for state ``name`` of ``machine``."""
        key = (machine.path, name)
        if key not in self.ids:
            base = _UNSAFE.sub("_", f"{prefix}{name}")
            if base.lower() in _KEYWORDS:
                base += "_"
            candidate, n = base, 1
            while candidate in self.used:
                n += 1
                candidate = f"{base}_{n}"
            self.used.add(candidate)
            self.ids[key] = candidate
        return self.ids[key]

    def emit(self, depth: int, text: str) -> None:
        self.lines.append(_INDENT * depth + text)

    def machine(self, machine: Machine, prefix: str, depth: int) -> None:
        """Declare the machine's states (composites with their insides), then its transitions."""
        for name in machine.states:
            self.id(machine, prefix, name)
        for name, state in machine.states.items():
            self.declare(machine, prefix, name, state, depth)
        self.emit(depth, f"[*] --> {self.ids[(machine.path, machine.start_at)]}")
        for name, state in machine.states.items():
            self.transitions(machine, self.ids[(machine.path, name)], state, depth)

    def declare(self, machine: Machine, prefix: str, name: str, state: CompiledState, depth: int) -> None:
        sid = self.ids[(machine.path, name)]
        spec = state.spec
        if isinstance(spec, ChoiceState):
            self.emit(depth, f"state {sid} <<choice>>")
            return
        if isinstance(spec, ParallelState | MapState):
            label = (
                name
                if isinstance(spec, ParallelState)
                else f"{name} (for each {spec.item_as} in {spec.items})"
            )
            head = sid if label == sid else f'"{_quoted(label)}" as {sid}'
            self.emit(depth, f"state {head} {{")
            for i, branch in enumerate(state.branches):
                if i:
                    self.emit(depth + 1, "--")
                inner = f"{sid}_{i}_" if isinstance(spec, ParallelState) else f"{sid}_"
                self.machine(branch, inner, depth + 1)
            self.emit(depth, "}")
            return
        if sid != name:
            self.emit(depth, f'state "{_quoted(name)}" as {sid}')

    def transitions(self, machine: Machine, sid: str, state: CompiledState, depth: int) -> None:
        spec = state.spec

        def edge(target: str | None, label: str = "") -> None:
            to = "[*]" if target is None else self.ids[(machine.path, target)]
            self.emit(depth, f"{sid} --> {to}" + (f" : {_label(label)}" if label else ""))

        if isinstance(spec, ChoiceState):
            for branch in spec.choices:
                edge(branch.next, branch.when)
            if spec.default is not None:
                edge(spec.default, "default")
            return
        if isinstance(spec, SucceedState):
            edge(None)
            return
        if isinstance(spec, FailState):
            edge(None, spec.error)
            return
        for policy in getattr(spec, "retry", []):
            edge(state.name, f"retry {', '.join(policy.errors)} (up to {policy.max_attempts} attempts)")
        label = ""
        if isinstance(spec, WaitState):
            if spec.event is not None:
                label = f"on {spec.event.type}"
                if spec.event.on_timeout is not None and spec.event.timeout is not None:
                    edge(spec.event.on_timeout, f"timeout after {_duration(spec.event.timeout)}")
            elif spec.seconds is not None:
                label = f"after {_duration(spec.seconds)}"
            elif spec.until is not None:
                label = f"until {spec.until}"
        edge(None if spec.end else spec.next, label)
        for clause in getattr(spec, "catch", []):
            edge(clause.next, f"catch: {', '.join(clause.errors)}")


def _duration(seconds: float) -> str:
    """``900.0`` as ``15m``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _label(text: str) -> str:
    """A transition label on one line."""
    return " ".join(text.split())


def _quoted(text: str) -> str:
    """Text for a ``state "..." as id`` description, which ends at the next double quote."""
    return _label(text).replace('"', "'")
