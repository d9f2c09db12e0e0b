"""Faults a simulated device injects, by probability per reading or on a schedule.

Each fault has a ``type:`` and either ``probability`` (checked at every reading, with the device's own random
source) or ``schedule`` (``at`` a moment, then ``every`` a period, for ``times`` occurrences; an occurrence
with a ``duration`` applies to every reading inside ``[time, time + duration)``, one without applies to the
first reading at or after its time).

=================  ==========================================================================================
type               what the device does
=================  ==========================================================================================
outlier            a numeric metric off by ``magnitude`` (up or down at random)
null               a metric sent as null
stuck              metrics repeat their value for ``readings`` readings or for ``duration``
dropout            the device vanishes (abrupt disconnect: the broker publishes its last will) for ``offline``
duplicate          the same message sent twice
out_of_order       a timestamp ``lag`` seconds in the past
truncated_json     a JSON document cut short
wrong_type         a metric sent as a map
invalid_cbor       bytes that are not CBOR
oversize           a well-formed message of at least ``size`` bytes (default one byte over 64 KiB)
reconnect_storm    every device of the template disconnects and reconnects at the scheduled moment
=================  ==========================================================================================

A scheduled dropout or reconnect storm happens at its exact time (the device is woken for it); every other
fault changes a reading. Faults are counted per type in the device's counters.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from device_sim.generators import At, TimePoint
from fieldline.durations import Duration, Size

#: Faults that change how the reading is encoded (at most one applies to a message).
ENCODING_FAULTS = ("truncated_json", "wrong_type", "invalid_cbor", "oversize")
#: Faults that act on the connection rather than on a reading.
CONNECTION_FAULTS = ("dropout", "reconnect_storm")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Schedule(_Model):
    """Occurrences at ``at``, ``at + every``, ``at + 2 every`` …, ``times`` of them (unbounded with ``every``)."""

    at: TimePoint = Field(default_factory=lambda: At(0))
    every: Duration | None = Field(None, gt=0)
    times: int | None = Field(None, ge=1)
    duration: Duration = 0.0

    @model_validator(mode="after")
    def _repeat(self) -> Schedule:
        if self.times is not None and self.times > 1 and self.every is None:
            raise ValueError("times above 1 needs every")
        if self.every is not None and self.duration > self.every:
            raise ValueError("duration must not be longer than every")
        return self

    def occurrence(self, start: float, index: int) -> float | None:
        """Time of occurrence ``index`` (from 0), None past the last one."""
        if index > 0 and (self.every is None or (self.times is not None and index >= self.times)):
            return None
        return self.at.resolve(start) + index * (self.every or 0.0)

    def first_from(self, start: float) -> int:
        """Index of the first occurrence at or after ``start`` (an absolute ``at`` may lie before the run)."""
        first = self.at.resolve(start)
        if first >= start or self.every is None:
            return 0 if first >= start else 1
        index = math.ceil((start - first) / self.every)
        return index if self.times is None else min(index, self.times)

    def current(self, start: float, now: float) -> int | None:
        """Index of the latest occurrence at or before ``now``, None before the first."""
        first = self.at.resolve(start)
        if now < first:
            return None
        if self.every is None:
            return 0
        index = math.floor((now - first) / self.every)
        if self.times is not None:
            index = min(index, self.times - 1)
        return index


class _Fault(_Model):
    probability: float | None = Field(None, gt=0, le=1)
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _trigger(self) -> _Fault:
        if (self.probability is None) == (self.schedule is None):
            raise ValueError("give either probability or schedule")
        return self

    def metric_names(self) -> list[str]:
        return list(getattr(self, "metrics", []))


class Outlier(_Fault):
    type: Literal["outlier"]
    magnitude: float = Field(gt=0)
    metrics: list[str] = []


class Null(_Fault):
    type: Literal["null"]
    metrics: list[str] = []


class Stuck(_Fault):
    type: Literal["stuck"]
    metrics: list[str] = []
    readings: int | None = Field(None, ge=1)
    duration: Duration | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _length(self) -> Stuck:
        if self.readings is None and self.duration is None:
            self.readings = 10
        elif self.readings is not None and self.duration is not None:
            raise ValueError("give readings or duration, not both")
        return self


class Dropout(_Fault):
    type: Literal["dropout"]
    offline: Duration = Field(60.0, gt=0)


class Duplicate(_Fault):
    type: Literal["duplicate"]


class OutOfOrder(_Fault):
    type: Literal["out_of_order"]
    lag: Duration = Field(60.0, gt=0)


class TruncatedJson(_Fault):
    type: Literal["truncated_json"]


class WrongType(_Fault):
    type: Literal["wrong_type"]
    metrics: list[str] = []


class InvalidCbor(_Fault):
    type: Literal["invalid_cbor"]


class Oversize(_Fault):
    type: Literal["oversize"]
    size: Size = Field(65537, ge=1)


class ReconnectStorm(_Fault):
    type: Literal["reconnect_storm"]

    @model_validator(mode="after")
    def _scheduled(self) -> ReconnectStorm:
        if self.schedule is None:
            raise ValueError("a reconnect storm needs a schedule (every device of the template at once)")
        return self


def _null_tag(value: Any) -> Any:
    """YAML reads an unquoted ``type: null`` as no type at all: that is the ``null`` fault."""
    if isinstance(value, dict) and "type" in value and value["type"] is None:
        return {**value, "type": "null"}
    return value


Fault = Annotated[
    Outlier
    | Null
    | Stuck
    | Dropout
    | Duplicate
    | OutOfOrder
    | TruncatedJson
    | WrongType
    | InvalidCbor
    | Oversize
    | ReconnectStorm,
    Field(discriminator="type"),
    BeforeValidator(_null_tag),
]


class FaultState:
    """One device's progress through its template's faults: the next occurrence of each scheduled fault not yet
    used, and a stuck episode in progress."""

    __slots__ = ("pending", "stuck_readings", "stuck_until", "stuck_values")

    def __init__(self, count: int) -> None:
        self.pending = [0] * count
        self.stuck_values: dict[str, Any] | None = None
        self.stuck_readings = 0
        self.stuck_until = 0.0


class FaultPlan:
    """A template's faults, split by what they act on; shared by every device of the template."""

    __slots__ = ("connection", "faults", "reading", "scheduled")

    def __init__(self, faults: list[Any]) -> None:
        self.faults: list[Any] = faults
        self.reading = [(i, f) for i, f in enumerate(faults) if f.type not in CONNECTION_FAULTS]
        self.connection = [(i, f) for i, f in enumerate(faults) if f.type in CONNECTION_FAULTS]
        self.scheduled = any(f.schedule is not None for f in faults)

    def begin(self, state: FaultState, start: float) -> None:
        """A run starts at ``start``: occurrences before it are not played."""
        for index, fault in enumerate(self.faults):
            if fault.schedule is not None:
                state.pending[index] = fault.schedule.first_from(start)

    def next_connection_event(self, state: FaultState, start: float) -> float | None:
        """Time of the next scheduled dropout or storm not yet used."""
        best: float | None = None
        for index, fault in self.connection:
            if fault.schedule is not None:
                when = fault.schedule.occurrence(start, state.pending[index])
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def due_connection(self, state: FaultState, start: float, now: float) -> list[Any]:
        """Scheduled dropouts and storms due at ``now``; each occurrence is returned once (missed ones are
        skipped, not replayed)."""
        due = []
        for index, fault in self.connection:
            schedule = fault.schedule
            if schedule is None:
                continue
            current = schedule.current(start, now)
            if current is not None and current >= state.pending[index]:
                state.pending[index] = current + 1
                due.append(fault)
        return due

    def fires(
        self, index: int, fault: Any, state: FaultState | None, rng: Any, start: float, now: float
    ) -> bool:
        """Whether a reading fault applies to the reading at ``now``."""
        if fault.probability is not None:
            return rng.random() < fault.probability
        assert state is not None
        schedule: Schedule = fault.schedule
        current = schedule.current(start, now)
        if current is None:
            return False
        begin = schedule.occurrence(start, current)
        assert begin is not None
        if schedule.duration > 0:
            return now < begin + schedule.duration
        if current >= state.pending[index]:
            state.pending[index] = current + 1
            return True
        return False
