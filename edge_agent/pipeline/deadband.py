"""Deadband reporting: pass a value on only when it moved far enough from the last one reported.

A numeric value is reported when ``|value - last_reported| > band`` with ``band = max(threshold, percent /
100 * |last_reported|)``; a string or boolean when it differs from the last reported value (or changes
type). The first value of a series is always reported. A value held back by the band is *held*: it is
reported when the next value of the series arrives ``heartbeat`` or more after the last report (that
arriving value is reported), or by ``tick`` once the agent clock passes ``last report + heartbeat`` (the
latest held value is reported at its own timestamp). A heartbeat never invents data: a series that stopped
sending stays silent.
"""

from __future__ import annotations

import heapq
from itertools import islice
from typing import Annotated, Literal

from pydantic import Field

from edge_agent.pipeline.base import RecordSink, StepContext
from edge_agent.pipeline.step_config import StepModel
from fieldline.durations import Duration
from fieldline.wire import MetricValue

MAX_SERIES = 100_000
"""Series tracked per rule; beyond that the longest-tracked eighth is forgotten (their next value is new)."""


class DeadbandConfig(StepModel):
    """``type: deadband`` — report changes larger than ``threshold`` and/or ``percent``, with a heartbeat."""

    type: Literal["deadband"] = "deadband"
    metrics: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    percent: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    heartbeat: Annotated[Duration, Field(gt=0)] = 300.0


class _Reported:
    """The last reported value of a series, the latest held one, and its heartbeat entry in the schedule."""

    __slots__ = ("due", "held", "held_ts", "ts", "value")

    def __init__(self, ts: float, value: MetricValue) -> None:
        self.ts = ts
        self.value = value
        self.held: MetricValue = None
        self.held_ts: float | None = None
        self.due = 0.0  # the deadline this series has in the heartbeat heap, 0.0 when none


class DeadbandFilter:
    """The series state of one ``type: deadband`` rule."""

    journaled = False
    hold_horizon = 0.0

    __slots__ = ("_abs", "_ctx", "_heap", "_rel", "_sink", "_state", "evicted", "heartbeat")

    def __init__(self, config: DeadbandConfig, sink: RecordSink, ctx: StepContext) -> None:
        self._abs = config.threshold or 0.0
        self._rel = (config.percent or 0.0) / 100.0
        self.heartbeat = config.heartbeat
        self._sink = sink
        self._ctx = ctx
        self._state: dict[tuple[str, str], _Reported] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []  # (heartbeat deadline, series), one per series
        self.evicted = 0

    def add(
        self,
        device: str,
        metric: str,
        ts: float,
        value: MetricValue,
        now: float,
        replay: bool,
        out: list[tuple[str, float, str, MetricValue]],
    ) -> bool:
        """True when ``value`` is reported (it goes into the point's raw record, and the series is marked)."""
        kind = type(value)
        if value is None:
            return False
        if kind is float and value != value:
            self._ctx.drop("deadband", "nan")
            return False
        key = (device, metric)
        s = self._state.get(key)
        if s is None:
            if len(self._state) >= MAX_SERIES:
                self._evict()
            self._state[key] = _Reported(ts, value)
            self._sink.mark(device, metric, ts)
            return True
        last = s.value
        lkind = type(last)
        if (kind is float or kind is int) and (lkind is float or lkind is int):
            band = self._rel * abs(last)  # type: ignore[arg-type]
            if band < self._abs:
                band = self._abs
            changed = abs(value - last) > band  # type: ignore[operator]
        else:
            changed = kind is not lkind or value != last
        if changed or ts >= s.ts + self.heartbeat:
            s.value = value
            if ts > s.ts:
                s.ts = ts
            s.held = None
            s.held_ts = None
            self._sink.mark(device, metric, ts)
            return True
        s.held = value
        s.held_ts = ts
        if not s.due:
            s.due = s.ts + self.heartbeat
            heapq.heappush(self._heap, (s.due, key))
        return False

    def tick(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Report held values of series whose last report is ``heartbeat`` or more before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            s = self._state.get(key)
            if s is None or s.due != due:
                continue  # forgotten series, or an entry superseded by a later one
            s.due = 0.0
            if s.held_ts is None:
                continue
            if s.ts + self.heartbeat <= now:
                self._report_held(key, s, out)
            else:  # reported on arrival since: wait for the next heartbeat
                s.due = s.ts + self.heartbeat
                heapq.heappush(heap, (s.due, key))

    def flush(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Report every held value, so the last value seen of each series goes up at shutdown."""
        for key, s in self._state.items():
            if s.held_ts is not None:
                self._report_held(key, s, out)
        self._heap.clear()
        for s in self._state.values():
            s.due = 0.0

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def seed(self, device: str, metric: str, ts: float, value: MetricValue) -> None:
        """Deadband series are not journaled: nothing to restore."""

    def stats(self) -> dict[str, int]:
        return {"tracked_series": len(self._state), "evicted_series": self.evicted}

    def _report_held(
        self, key: tuple[str, str], s: _Reported, out: list[tuple[str, float, str, MetricValue]]
    ) -> None:
        ts = s.held_ts
        assert ts is not None
        out.append((key[0], ts, key[1], s.held))
        self._sink.mark(key[0], key[1], ts)
        s.value = s.held
        if ts > s.ts:
            s.ts = ts
        s.held = None
        s.held_ts = None

    def _evict(self) -> None:
        """Forget the longest-tracked eighth of the series (in one go, so eviction stays cheap per series)."""
        state = self._state
        oldest = list(islice(state, max(1, len(state) // 8)))
        for key in oldest:
            del state[key]
        self.evicted += len(oldest)
