"""Commands a simulated device obeys, and how they change its metrics (closed-loop actuators).

A template's ``commands`` name each command with its ``params`` (typed, checked) and ``cases``: the first case
whose ``when`` matches the params becomes the command's active case and stays so until the same command is
received again. A case's ``effects`` act on metrics while it is active:

- ``rate``: the metric moves by ``per_minute`` units per simulated minute, not past ``floor`` (falling) or
  ``ceiling`` (rising). What it moved stays when the case ends: a cooled room stays cool, and its own generator
  (a drift, a walk) carries on from there.
- ``set``: the metric reads ``value`` (or the value of param ``param``) while active.
- ``offset``: ``value`` (or param ``param``) is added to the metric while active.

``cooling {mode: max}`` making temperature fall by 0.5 °C/min down to -25 °C until ``cooling {mode: off}``::

    commands:
      cooling:
        params: {mode: {type: enum, values: [max, "off"]}}
        cases:
          - when: {mode: max}
            effects: [{type: rate, metric: temperature, per_minute: -0.5, floor: -25}]
          - when: {mode: "off"}

A command that is unknown, has unknown, missing or invalid params, or has expired, is refused with
``CommandRejected`` (the device answers ``status: error`` with its ``code``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_sim.errors import CommandRejected
from device_sim.generators import Scalar

#: How many command ids a device remembers to answer a redelivered command without running it again.
REMEMBERED_COMMANDS = 16


_YAML_BOOLEANS = 'quote "on", "off", "yes" and "no" in YAML, which reads them unquoted as booleans'


def same(a: Any, b: Any) -> bool:
    """Equal, and a boolean only equals a boolean (``True == 1`` in Python, not in a command)."""
    return a == b and (type(a) is bool) == (type(b) is bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Param(_Model):
    """A command parameter: its type, allowed values or range, and whether it must be given."""

    type: Literal["enum", "number", "integer", "boolean", "string"]
    values: list[Scalar] | None = None
    min: float | None = None
    max: float | None = None
    required: bool = True
    default: Scalar | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if (self.type == "enum") != (self.values is not None):
            raise ValueError("values is required for an enum, and only for an enum")
        if self.values is not None and any(type(v) is bool for v in self.values):
            raise ValueError(f"enum values are strings or numbers, not booleans: {_YAML_BOOLEANS}")
        if (self.min is not None or self.max is not None) and self.type not in ("number", "integer"):
            raise ValueError("min and max apply to numbers and integers")
        if self.default is not None:
            problem = self.problem(self.default)
            if problem:
                raise ValueError(f"default: {problem}")
        return self

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        kind = self.type
        if kind == "enum":
            assert self.values is not None
            return (
                None if any(same(value, v) for v in self.values) else f"{value!r} is not one of {self.values}"
            )
        if kind == "boolean":
            return None if type(value) is bool else f"{value!r} is not a boolean"
        if kind == "string":
            return None if type(value) is str else f"{value!r} is not a string"
        if (
            type(value) is bool
            or not isinstance(value, int | float)
            or (kind == "integer" and type(value) is not int)
        ):
            return f"{value!r} is not {'an integer' if kind == 'integer' else 'a number'}"
        if self.min is not None and value < self.min:
            return f"{value} is below the minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{value} is above the maximum {self.max:g}"
        return None


class _Effect(_Model):
    metric: str


class Rate(_Effect):
    type: Literal["rate"]
    per_minute: float
    floor: float | None = None
    ceiling: float | None = None


class _ValueEffect(_Effect):
    value: Scalar | None = None
    param: str | None = None

    @model_validator(mode="after")
    def _source(self) -> _ValueEffect:
        if (self.value is None) == (self.param is None):
            raise ValueError("give either value or param")
        return self

    def resolve(self, params: dict[str, Any]) -> Any:
        return self.value if self.param is None else params.get(self.param)


class Set(_ValueEffect):
    type: Literal["set"]


class Offset(_ValueEffect):
    type: Literal["offset"]


Effect = Annotated[Rate | Set | Offset, Field(discriminator="type")]


class Case(_Model):
    when: dict[str, Scalar] = {}
    effects: list[Effect] = []


class Command(_Model):
    """A command a device accepts: its parameters and the cases that say what it does."""

    params: dict[str, Param] = {}
    cases: list[Case] = []

    @model_validator(mode="after")
    def _references(self) -> Command:
        for index, case in enumerate(self.cases):
            for name, value in case.when.items():
                param = self.params.get(name)
                if param is None:
                    raise ValueError(f"cases[{index}].when: {name!r} is not a param of this command")
                problem = param.problem(value)
                if problem:
                    hint = f" ({_YAML_BOOLEANS})" if type(value) is bool and param.type == "enum" else ""
                    raise ValueError(f"cases[{index}].when.{name}: {problem}{hint}")
            for effect in case.effects:
                if not isinstance(effect, Set | Offset):
                    continue
                where = f"cases[{index}]: the {effect.type} effect on {effect.metric}"
                if effect.param is not None:
                    param = self.params.get(effect.param)
                    if param is None:
                        raise ValueError(f"{where} uses unknown param {effect.param!r}")
                    if isinstance(effect, Offset) and param.type not in ("number", "integer"):
                        raise ValueError(
                            f"{where} needs a number or integer param, {effect.param!r} is {param.type}"
                        )
                elif isinstance(effect, Offset) and not _number(effect.value):
                    raise ValueError(f"{where} needs a numeric value")
        return self

    def effects(self) -> list[tuple[int, int, Effect]]:
        """(case index, effect index, effect) of every effect."""
        return [(c, e, effect) for c, case in enumerate(self.cases) for e, effect in enumerate(case.effects)]

    def check(self, name: str, params: Any, device_id: str) -> tuple[Case | None, dict[str, Any]]:
        """The case ``params`` select (None: no case, the command's effects stop) and the params with their
        defaults; raises ``CommandRejected`` (``bad_params``)."""
        if not isinstance(params, dict):
            raise CommandRejected("bad_params", "params must be an object", device_id=device_id, command=name)
        unknown = sorted(str(key) for key in params if key not in self.params)
        if unknown:
            raise CommandRejected(
                "bad_params",
                f"unknown param(s) {', '.join(unknown)} (accepted: {', '.join(self.params) or 'none'})",
                device_id=device_id,
                command=name,
            )
        full: dict[str, Any] = {}
        for key, param in self.params.items():
            if key in params:
                problem = param.problem(params[key])
                if problem:
                    raise CommandRejected(
                        "bad_params", f"{key}: {problem}", device_id=device_id, command=name
                    )
                full[key] = params[key]
            elif param.default is not None:
                full[key] = param.default
            elif param.required:
                raise CommandRejected(
                    "bad_params", f"missing param {key!r}", device_id=device_id, command=name
                )
        for case in self.cases:
            if all(key in full and same(full[key], value) for key, value in case.when.items()):
                return case, full
        return None, full


class ActuatorState:
    """One device's actuators: the active case of each command, what rate effects moved each metric, the last
    values seen (for floors at command time) and the answers to recent command ids."""

    __slots__ = ("active", "bases", "last_at", "moved", "recent")

    def __init__(self) -> None:
        self.active: dict[str, tuple[Case, dict[str, Any]]] = {}
        self.moved: dict[str, float] = {}
        self.bases: dict[str, float] = {}
        self.last_at: float | None = None
        self.recent: OrderedDict[str, bytes] = OrderedDict()

    def remember(self, command_id: str, ack: bytes) -> None:
        self.recent[command_id] = ack
        if len(self.recent) > REMEMBERED_COMMANDS:
            self.recent.popitem(last=False)

    def _rates(self, metric: str) -> list[Rate]:
        return [
            effect
            for case, _ in self.active.values()
            for effect in case.effects
            if effect.metric == metric and isinstance(effect, Rate)
        ]

    def _move(self, metric: str, base: float, elapsed: float) -> None:
        moved = self.moved.get(metric, 0.0)
        for rate in self._rates(metric):
            step = moved + rate.per_minute * elapsed / 60.0
            if rate.per_minute < 0 and rate.floor is not None:
                step = max(step, min(moved, rate.floor - base))
            elif rate.per_minute > 0 and rate.ceiling is not None:
                step = min(step, max(moved, rate.ceiling - base))
            moved = step
        self.moved[metric] = moved

    def advance(self, now: float) -> None:
        """Move every metric under a rate effect up to ``now`` (before the active cases change)."""
        if self.last_at is not None and now > self.last_at:
            for metric, base in self.bases.items():
                self._move(metric, base, now - self.last_at)
        self.last_at = now if self.last_at is None else max(self.last_at, now)

    def apply(self, metric: str, base: Any, now: float) -> Any:
        """The value of ``metric`` at ``now`` given its generator's ``base`` value."""
        if type(base) is not float and type(base) is not int:
            value = base
        else:
            self.bases[metric] = base
            if self.last_at is not None and now > self.last_at:
                self._move(metric, base, now - self.last_at)
            value = base + self.moved.get(metric, 0.0)
        for case, params in self.active.values():
            for effect in case.effects:
                if effect.metric != metric:
                    continue
                if isinstance(effect, Set):
                    value = effect.resolve(params)
                elif isinstance(effect, Offset) and _number(value):
                    value = value + effect.resolve(params)
        return value

    def finish(self, now: float) -> None:
        """A reading at ``now`` is complete: rate effects have moved up to it."""
        self.last_at = now if self.last_at is None else max(self.last_at, now)
