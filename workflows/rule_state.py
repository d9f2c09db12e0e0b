"""What a rule remembers about one device, the bounded table that holds it, and its durable record.

A rule keeps a ``DeviceState`` only for devices where it has something to remember: a pending ``for``, a fired
alert, a running cooldown, a sequence in progress, a watchdog (``absence``) or a series (``rate``, ``window``).
A plain threshold rule over a device whose value is normal holds nothing. Each rule's states live in a
``DeviceTable`` that keeps at most ``limit`` devices and evicts the least recently active one beyond that.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from workflows.events import Event


class DeviceState:
    """One (rule, device) pair. Times are engine-clock epoch seconds."""

    __slots__ = (
        "cooldown_until",
        "deadline",
        "event",
        "extras",
        "fired",
        "last_seen",
        "saved_seen",
        "scheduled",
        "series",
        "since",
        "started",
        "step",
    )

    def __init__(self) -> None:
        self.fired = False
        self.since: float | None = None
        """When the condition started to hold (``for``)."""
        self.deadline: float | None = None
        """When this state's timer is due: end of a ``for``, of a watchdog, of a sequence window."""
        self.scheduled: float | None = None
        """The deadline of the timer entry currently queued for this state (entries are never removed)."""
        self.cooldown_until = 0.0
        self.last_seen: float | None = None
        self.saved_seen: float | None = None
        """``last_seen`` as last written to the store (the watchdog is persisted with some slack)."""
        self.step = 0
        self.started: float | None = None
        self.event: Event | None = None
        """The latest event that concerned the rule, to rebuild the scope of a timer's firing."""
        self.extras: dict[str, Any] | None = None
        """What ``rate``/``window`` added to the scope at the latest evaluation."""
        self.series: tuple[float, float] | WindowSeries | None = None

    def idle(self, now: float) -> bool:
        """Nothing worth remembering: the state can be dropped."""
        return (
            not self.fired
            and self.since is None
            and self.cooldown_until <= now
            and self.started is None
            and self.last_seen is None
            and self.series is None
        )

    def checkpoint(self, with_event: bool) -> dict[str, Any]:
        """The durable record of this state (marks ``last_seen`` as saved)."""
        out: dict[str, Any] = {}
        if self.fired:
            out["fired"] = True
        if self.since is not None:
            out["since"] = self.since
        if self.deadline is not None:
            out["deadline"] = self.deadline
        if self.cooldown_until:
            out["cooldown_until"] = self.cooldown_until
        if self.last_seen is not None:
            out["last_seen"] = self.saved_seen = self.last_seen
        if self.started is not None:
            out["sequence"] = [self.step, self.started]
        if with_event and self.event is not None:
            out["event"] = self.event.as_dict()
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DeviceState:
        state = cls()
        state.fired = bool(record.get("fired", False))
        state.since = record.get("since")
        state.deadline = record.get("deadline")
        state.cooldown_until = float(record.get("cooldown_until", 0.0))
        state.last_seen = state.saved_seen = record.get("last_seen")
        if "sequence" in record:
            state.step, state.started = int(record["sequence"][0]), float(record["sequence"][1])
        if "event" in record:
            state.event = Event.from_dict(record["event"])
        return state


class DeviceTable:
    """The states of one rule by device key, least recently active first; at most ``limit`` of them."""

    __slots__ = ("limit", "states")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.states: OrderedDict[str, DeviceState] = OrderedDict()

    def __len__(self) -> int:
        return len(self.states)

    def get(self, key: str) -> DeviceState | None:
        return self.states.get(key)

    def touch(self, key: str) -> DeviceState | None:
        """The state of ``key``, marked as the most recently active."""
        state = self.states.get(key)
        if state is not None:
            self.states.move_to_end(key)
        return state

    def add(self, key: str, state: DeviceState) -> str | None:
        """Insert a state; returns the key evicted to stay within ``limit``, if any."""
        self.states[key] = state
        if len(self.states) > self.limit:
            return self.states.popitem(last=False)[0]
        return None

    def remove(self, key: str) -> None:
        self.states.pop(key, None)


class WindowSeries:
    """Samples of one device over a sliding time window, aggregated incrementally.

    Samples are kept in arrival order, at most ``max_samples`` (the oldest is dropped beyond that). The window
    ends at the newest timestamp seen; a late sample already outside it is ignored. ``avg``/``sum`` keep a
    running total, ``min``/``max`` a monotonic queue, so each sample costs O(1) amortised.
    """

    __slots__ = ("agg", "duration", "first", "max_samples", "mono", "newest", "times", "total", "values")

    def __init__(self, agg: str, duration: float, max_samples: int) -> None:
        self.agg = agg
        self.duration = duration
        self.max_samples = max_samples
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()
        self.mono: deque[tuple[int, float]] | None = deque() if agg in ("min", "max") else None
        """(arrival number, value), values decreasing (``max``) or increasing (``min``); only for min/max."""
        self.first = 0
        """Arrival number of ``values[0]``."""
        self.total = 0.0
        self.newest = float("-inf")

    def add(self, ts: float, value: float) -> bool:
        """Add a sample; returns True when the sample cap pushed an old one out early."""
        if ts > self.newest:
            self.newest = ts
        cutoff = self.newest - self.duration
        if ts <= cutoff:
            return False
        times, values = self.times, self.values
        number = self.first + len(values)
        times.append(ts)
        values.append(value)
        agg = self.agg
        if agg == "avg" or agg == "sum":
            self.total += value
        elif (mono := self.mono) is not None:
            if agg == "max":
                while mono and mono[-1][1] <= value:
                    mono.pop()
            else:
                while mono and mono[-1][1] >= value:
                    mono.pop()
            mono.append((number, value))
        overflow = len(values) > self.max_samples
        while times and (times[0] <= cutoff or len(values) > self.max_samples):
            times.popleft()
            self._drop(values.popleft())
        return overflow

    def _drop(self, value: float) -> None:
        self.first += 1
        if self.agg == "avg" or self.agg == "sum":
            self.total = self.total - value if self.values else 0.0
        elif self.mono and self.mono[0][0] < self.first:
            self.mono.popleft()

    @property
    def count(self) -> int:
        return len(self.values)

    def aggregate(self) -> float | int:
        """The window's ``agg`` (the caller never asks on an empty window)."""
        agg = self.agg
        if agg == "count":
            return len(self.values)
        if agg == "sum":
            return self.total
        if agg == "avg":
            return self.total / len(self.values)
        assert self.mono is not None
        return self.mono[0][1]
