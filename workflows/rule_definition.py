"""The rules file, as typed models: structure only.

A rules file is ``rules: [...]``; each rule says what it watches (``when``: one source, a device selector and a
condition), how a match becomes a firing (at most one of ``sequence``, ``absence``, ``rate``, ``window``, plus
``for``, ``cooldown`` and ``clear``) and what it does (``actions``, the workflow action registry). Conditions and
action configurations stay strings and dicts here; ``rules.py`` compiles them once and checks names. Combinations
that cannot mean anything (``for`` on a sequence, ``clear`` on an event) are refused here, with the reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fieldline.durations import parse_duration
from workflows.definition import IDENT, ActionSpec, DeviceSelector

Severity = Literal["info", "warning", "critical"]
Aggregate = Literal["avg", "min", "max", "sum", "count"]
SOURCES = ("telemetry", "event", "state", "message")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _metric_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value):
        raise ValueError("expected a metric name or a non-empty list of metric names")
    if len(set(value)) != len(value):
        raise ValueError("a metric is listed twice")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("a duration must be longer than zero")
    return value


Period = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
"""Seconds, longer than zero, written ``30s``/``5m``/``1h`` or as a number."""


class StateChange(Strict):
    """A device state change: ``from`` and/or ``to`` (state names; absent means any)."""

    from_: str | None = Field(None, alias="from")
    to: str | None = None


class When(Strict):
    """What a rule watches: one source, the devices it applies to and a condition."""

    telemetry: Annotated[list[str], BeforeValidator(_metric_list)] | None = Field(
        None, description="metric name or list of metric names"
    )
    event: str | None = Field(None, min_length=1, description="event type, or `*` for every event")
    state: StateChange | None = Field(None, description="device state changes")
    message: str | None = Field(None, description="MQTT topic filter")
    devices: DeviceSelector = DeviceSelector()
    condition: str | None = Field(None, min_length=1)

    @field_validator("message")
    @classmethod
    def _filter(cls, topic: str | None) -> str | None:
        from workflows.topics import validate_filter

        if topic is not None:
            validate_filter(topic)
        return topic

    @model_validator(mode="after")
    def _one_source(self) -> When:
        given = [k for k in SOURCES if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"`when` takes one source, got {' and '.join(given)}")
        return self

    @property
    def source(self) -> str | None:
        return next((k for k in SOURCES if getattr(self, k) is not None), None)


class SequenceSpec(Strict):
    """Event types that must arrive from one device in this order, the last within ``within`` of the first."""

    events: list[Annotated[str, Field(min_length=1)]] = Field(min_length=2)
    within: Period


class RateSpec(Strict):
    """Change of the metric per ``per`` seconds between consecutive samples; ``condition`` tests ``rate``."""

    per: Period = 60.0
    condition: str = Field(min_length=1)


class WindowSpec(Strict):
    """An aggregate of the metric over a sliding window; ``condition`` tests the aggregate by its name."""

    duration: Period
    agg: Aggregate
    condition: str = Field(min_length=1)
    max_samples: int = Field(1000, ge=1, le=100_000, description="samples kept per device; oldest dropped")


class RuleSpec(Strict):
    id: str = Field(pattern=IDENT)
    description: str = ""
    when: When | None = None
    for_: Period | None = Field(None, alias="for", description="the condition must hold this long")
    sequence: SequenceSpec | None = None
    absence: Period | None = Field(None, description="fire when a watched device is silent this long")
    rate: RateSpec | None = None
    window: WindowSpec | None = None
    cooldown: Period | None = Field(None, description="at most one firing per device in this interval")
    clear: str | None = Field(None, min_length=1, description="condition that re-arms a fired rule")
    severity: Severity = "warning"
    actions: list[ActionSpec] = []

    @property
    def modifier(self) -> str | None:
        """The one of ``sequence``, ``absence``, ``rate``, ``window`` this rule uses, if any."""
        return next(
            (k for k in ("sequence", "absence", "rate", "window") if getattr(self, k) is not None), None
        )

    @model_validator(mode="after")
    def _combinations(self) -> RuleSpec:
        problems = _combination_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _combination_problems(rule: RuleSpec) -> list[str]:
    """Why this combination of source and modifiers cannot mean anything, one reason per problem."""
    modifiers = [k for k in ("sequence", "absence", "rate", "window") if getattr(rule, k) is not None]
    if len(modifiers) > 1:
        return [
            f"`{'` and `'.join(modifiers)}` exclude each other: use at most one of sequence, absence, rate, window"
        ]
    modifier = modifiers[0] if modifiers else None
    when = rule.when
    source = when.source if when is not None else None
    condition = when.condition if when is not None else None
    out: list[str] = []
    if modifier == "sequence":
        if source is not None:
            out.append(
                f"`sequence` names its own event types: remove `when.{source}` (`when` takes only `devices`)"
            )
        if condition is not None:
            out.append("a `sequence` has no single event to test `when.condition` against")
    elif source is None:
        out.append("`when` needs one source: telemetry, event, state or message")
    if rule.for_ is not None and modifier in ("sequence", "absence"):
        out.append(f"`for` does not apply to `{modifier}` (it already waits for its own time)")
    if rule.clear is not None and modifier in ("sequence", "absence"):
        why = (
            "a completed sequence is a moment"
            if modifier == "sequence"
            else "the alert clears when the device speaks"
        )
        out.append(f"`clear` does not apply to `{modifier}`: {why}")
    if modifier in ("rate", "window"):
        if source != "telemetry" or when is None or when.telemetry is None or len(when.telemetry) != 1:
            out.append(f"`{modifier}` needs `when.telemetry` with exactly one metric")
        if condition is not None:
            out.append(
                f"with `{modifier}`, the condition goes in `{modifier}.condition`, not `when.condition`"
            )
    if source in ("event", "message") and modifier != "absence":
        for key in ("for", "clear"):
            if (rule.for_ if key == "for" else rule.clear) is not None:
                out.append(f"`{key}` needs a level that lasts (telemetry or state); an event is a moment")
    if source == "telemetry" and modifier is None and condition is None:
        out.append("a telemetry rule needs `when.condition` (or `rate`, `window` or `absence`)")
    if source == "state" and when is not None and when.state is not None and modifier != "absence":
        change = when.state
        if change.from_ is None and change.to is None and condition is None:
            out.append("a `state` rule needs `from`, `to` or `when.condition`")
    return out


class RulesFile(Strict):
    """A rules file: ``rules: [...]``."""

    rules: list[RuleSpec]
