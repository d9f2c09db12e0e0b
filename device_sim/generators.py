"""Metric generators: the YAML models of a fleet file's ``metrics`` and how each one produces values.

A metric is one generator, chosen by its ``type:``; ``composite`` combines several (their sum by default, or
their product, minimum or maximum), so ``sine + noise + drift`` is one metric. Generators are shared by every
device of a template: what changes per device (a random walk's position, a boolean's state, a random phase)
lives in the device's own state list, from the index (``slot``) its template gives each metric. Randomness comes only from
the device's own ``random.Random``, so a device's values depend on the fleet seed and its id, never on the
other devices or the order in which they are played.

Each ``sample`` gets ``now`` (simulated epoch seconds), ``t`` (seconds since the run started), ``dt`` (seconds
since the device's previous reading, 0 for the first) and the values already computed for this reading (what a
``correlated`` generator reads).
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from fieldline.durations import Duration, parse_duration
from fieldline.payloads import MAX_STRING_LENGTH

MetricValue = float | int | bool | str | None
Scalar = float | int | bool | str
#: A text value a metric may take: the payload contract's longest string.
MetricText = Annotated[str, Field(max_length=MAX_STRING_LENGTH)]


def _metric_value(value: object) -> object:
    """A value the payload contract accepts: a finite number, a boolean or a short string."""
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, str) and len(value) <= MAX_STRING_LENGTH:
        return value
    raise ValueError(
        f"expected a finite number, a boolean or a string of at most {MAX_STRING_LENGTH} characters"
    )


MetricScalar = Annotated[Scalar, BeforeValidator(_metric_value)]


class SampleState(Protocol):
    """What a generator reads from the device it samples for: its random source and its state slots."""

    rng: random.Random
    state: list[Any]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _time_point(value: object) -> tuple[bool, float]:
    """``(absolute, seconds)``: a datetime with a UTC offset is absolute, a duration is from the run's start."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a date and time needs a UTC offset (add Z or +hh:mm)")
        return True, value.timestamp()
    if isinstance(value, str) and ("T" in value or value.count("-") >= 2):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"invalid date and time {value!r}: use 2026-01-01T08:00:00Z") from None
        return _time_point(parsed)
    return False, parse_duration(value)


class At:
    """A moment: a duration after the run's start (``90s``, ``2h``) or an absolute time with a UTC offset."""

    __slots__ = ("absolute", "seconds")

    def __init__(self, value: object) -> None:
        self.absolute, self.seconds = _time_point(value)

    def resolve(self, start: float) -> float:
        """Simulated epoch seconds of this moment in a run that started at ``start``."""
        return self.seconds if self.absolute else start + self.seconds

    def __repr__(self) -> str:
        return f"At({'absolute' if self.absolute else 'offset'} {self.seconds})"


TimePoint = Annotated[Any, AfterValidator(At)]
"""Written as ``90s``/``2h`` (after the start) or ``2026-01-01T08:00:00Z``; validated into ``At``."""


def _kind_of(value: Scalar) -> str:
    return "boolean" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"


class Generator(_Model):
    """Base of every generator: it keeps ``slots`` values per device in the device's state list from ``slot``.
    ``unit``, ``round`` (decimals; 0 makes an integer) and ``spread`` (each device adds its own constant, drawn
    uniformly within ± spread, so devices of a template differ) belong to the metric: a composite's components
    have none."""

    slots: ClassVar[int] = 0
    unit: str | None = Field(None, max_length=32)
    round: int | None = Field(None, ge=0, le=12)
    spread: float = Field(0.0, ge=0)

    def width(self) -> int:
        """How many state slots a device needs for this generator."""
        return self.slots

    def init(self, dev: SampleState, slot: int) -> None:
        """Set this generator's slots for a new device (the slots exist, set to None)."""

    def sources(self) -> set[str]:
        """Other metrics this generator reads."""
        return set()

    def kind(self) -> str:
        """``number``, ``boolean`` or ``string``: what the values are, for discovery and faults."""
        return "number"

    @abstractmethod
    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        """The generator's value for the reading at ``now``."""

    def finish(self, value: Any) -> MetricValue:
        """Round a float to ``round`` decimals (an int for 0)."""
        digits = self.round
        if digits is None or type(value) is not float:
            return value
        return round(value) if digits == 0 else round(value, digits)


class Constant(Generator):
    type: Literal["constant"]
    value: MetricScalar

    def kind(self) -> str:
        return _kind_of(self.value)

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        return self.value


class Sine(Generator):
    """``offset + amplitude * sin(2π (t + phase) / period)``; ``random_phase`` gives each device its own."""

    type: Literal["sine"]
    period: Duration = Field(gt=0)
    amplitude: float = 1.0
    offset: float = 0.0
    phase: Duration = 0.0
    random_phase: bool = False
    slots: ClassVar[int] = 1

    def init(self, dev: SampleState, slot: int) -> None:
        dev.state[slot] = self.phase + (dev.rng.uniform(0, self.period) if self.random_phase else 0.0)

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        return self.offset + self.amplitude * math.sin(2 * math.pi * (t + dev.state[slot]) / self.period)


class RandomWalk(Generator):
    """Moves by a Gaussian step (standard deviation ``step``) each reading, within ``[min, max]``: a step past a
    bound is reflected back inside (``reflect``) or stops at the bound."""

    type: Literal["random_walk"]
    start: float | None = None
    step: float = Field(1.0, ge=0)
    min: float | None = None
    max: float | None = None
    reflect: bool = True
    slots: ClassVar[int] = 1

    @model_validator(mode="after")
    def _bounds(self) -> RandomWalk:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        start = self.start
        if start is not None and (
            (self.min is not None and start < self.min) or (self.max is not None and start > self.max)
        ):
            raise ValueError("start must be within [min, max]")
        return self

    def init(self, dev: SampleState, slot: int) -> None:
        start = self.start
        if start is None:
            if self.min is not None and self.max is not None:
                start = (self.min + self.max) / 2
            else:
                start = self.min if self.min is not None else self.max if self.max is not None else 0.0
        dev.state[slot] = start

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        value = dev.state[slot]
        if dt > 0:  # the first reading is the start value
            value += dev.rng.gauss(0.0, self.step)
            low, high = self.min, self.max
            if self.reflect:
                for _ in range(4):  # a step larger than the range bounces more than once
                    if low is not None and value < low:
                        value = 2 * low - value
                    elif high is not None and value > high:
                        value = 2 * high - value
                    else:
                        break
            if low is not None and value < low:
                value = low
            elif high is not None and value > high:
                value = high
            dev.state[slot] = value
        return value


class Noise(Generator):
    """Gaussian noise: ``mean`` plus a normal draw of standard deviation ``sigma``, fresh each reading."""

    type: Literal["noise"]
    sigma: float = Field(ge=0)
    mean: float = 0.0

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        return dev.rng.gauss(self.mean, self.sigma)


class Drift(Generator):
    """A linear drift from the run's start: ``start + per_hour * hours elapsed``."""

    type: Literal["drift"]
    per_hour: float
    start: float = 0.0

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        return self.start + self.per_hour * t / 3600.0


class Change(_Model):
    at: TimePoint
    value: MetricScalar


class Steps(Generator):
    """``initial`` until the first change, then each change's value from its time on."""

    type: Literal["steps"]
    initial: MetricScalar = 0.0
    changes: list[Change] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_kind(self) -> Steps:
        if any(_kind_of(c.value) != _kind_of(self.initial) for c in self.changes):
            raise ValueError("initial and every change must be of one kind (numbers, booleans or strings)")
        return self

    def kind(self) -> str:
        return _kind_of(self.initial)

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        start = now - t
        value = self.initial
        best = -math.inf
        for change in self.changes:
            when = change.at.resolve(start)
            if best <= when <= now:
                best, value = when, change.value
        return value


class Daily(Generator):
    """A daily cycle: ``mean + amplitude * cos(2π (local hour - peak_hour) / 24)``, local time being UTC plus
    ``tz_offset`` hours; it follows the simulated clock, so a run at ``--speed`` goes through days quickly."""

    type: Literal["daily"]
    mean: float = 0.0
    amplitude: float = 1.0
    peak_hour: float = Field(14.0, ge=0, lt=24)
    tz_offset: float = Field(0.0, ge=-14, le=14)

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        hour = ((now + self.tz_offset * 3600.0) % 86400.0) / 3600.0
        return self.mean + self.amplitude * math.cos(2 * math.pi * (hour - self.peak_hour) / 24.0)


class Counter(Generator):
    """A counter growing by ``rate`` per second from ``start``, wrapping to 0 at ``wrap`` (an energy meter, a
    32-bit packet counter); integer unless ``integer: false``."""

    type: Literal["counter"]
    rate: float = Field(gt=0)
    start: float = Field(0.0, ge=0)
    wrap: float | None = Field(None, gt=0)
    integer: bool = True

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        value = self.start + self.rate * t
        if self.wrap is not None:
            value %= self.wrap
        return int(value) if self.integer else value


class Correlated(Generator):
    """A function of another metric of the same reading: ``base + factor * (source - ref)`` (humidity falling
    as temperature rises: ``factor: -2``). A null or non-numeric source gives ``base``."""

    type: Literal["correlated"]
    source: str
    base: float = 0.0
    factor: float = 1.0
    ref: float = 0.0

    def sources(self) -> set[str]:
        return {self.source}

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        source = values.get(self.source)
        if type(source) is not float and type(source) is not int:
            return self.base
        return self.base + self.factor * (source - self.ref)


class Boolean(Generator):
    """A boolean that flips with probability ``switch_probability`` at each reading (a door, a relay)."""

    type: Literal["boolean"]
    initial: bool = False
    switch_probability: float = Field(0.05, ge=0, le=1)
    slots: ClassVar[int] = 1

    def kind(self) -> str:
        return "boolean"

    def init(self, dev: SampleState, slot: int) -> None:
        dev.state[slot] = self.initial

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        value = dev.state[slot]
        if dt > 0 and dev.rng.random() < self.switch_probability:
            value = not value
            dev.state[slot] = value
        return value


class Enum(Generator):
    """One of ``states``; at each reading, with probability ``switch_probability``, another one at random."""

    type: Literal["enum"]
    states: list[MetricText] = Field(min_length=2)
    initial: str | None = None
    switch_probability: float = Field(0.05, ge=0, le=1)
    slots: ClassVar[int] = 1

    @model_validator(mode="after")
    def _initial(self) -> Enum:
        if self.initial is not None and self.initial not in self.states:
            raise ValueError(f"initial {self.initial!r} is not one of the states")
        if len(set(self.states)) != len(self.states):
            raise ValueError("states must be distinct")
        return self

    def kind(self) -> str:
        return "string"

    def init(self, dev: SampleState, slot: int) -> None:
        dev.state[slot] = self.states.index(self.initial) if self.initial is not None else 0

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        index = dev.state[slot]
        if dt > 0 and dev.rng.random() < self.switch_probability:
            index = (index + dev.rng.randrange(1, len(self.states))) % len(self.states)
            dev.state[slot] = index
        return self.states[index]


Component = Annotated[
    Constant | Sine | RandomWalk | Noise | Drift | Steps | Daily | Counter | Correlated | Boolean | Enum,
    Field(discriminator="type"),
]


class Composite(Generator):
    """Several generators combined into one value: ``sum`` (default), ``product``, ``min`` or ``max``."""

    type: Literal["composite"]
    combine: Literal["sum", "product", "min", "max"] = "sum"
    components: list[Component] = Field(min_length=1)

    @model_validator(mode="after")
    def _numeric(self) -> Composite:
        for index, component in enumerate(self.components):
            if component.kind() != "number":
                raise ValueError(
                    f"components[{index}] ({component.type}) is not numeric and cannot be combined"
                )
            if component.unit is not None or component.round is not None or component.spread:
                raise ValueError(
                    f"components[{index}]: unit, round and spread belong to the composite metric"
                )
        return self

    def width(self) -> int:
        return sum(component.slots for component in self.components)

    def init(self, dev: SampleState, slot: int) -> None:
        for component in self.components:
            component.init(dev, slot)
            slot += component.slots

    def sources(self) -> set[str]:
        return set().union(*(c.sources() for c in self.components))

    def sample(
        self, dev: SampleState, slot: int, now: float, t: float, dt: float, values: dict[str, Any]
    ) -> Any:
        parts = []
        for component in self.components:
            parts.append(component.sample(dev, slot, now, t, dt, values))
            slot += component.slots
        if self.combine == "sum":
            return math.fsum(parts)
        if self.combine == "product":
            return math.prod(parts)
        return min(parts) if self.combine == "min" else max(parts)


Metric = Annotated[Component | Composite, Field(discriminator="type")]
"""A metric of a device template: one generator, or a composite of several."""
