"""Swinging-door compression: keep the points a straight-line reconstruction needs, within ``max_error``.

Each series has an *anchor* (its last archived point) and a *pending* point (the latest one, not archived
yet). The points in between are discarded but constrain the slopes a line from the anchor may take: for a
point ``(t, v)`` the line must pass within ``max_error`` (E) of it, so its slope lies in ``[(v - a - E) / (t
- ta), (v - a + E) / (t - ta)]``; the intersection of those intervals is the *door*. A new point extends the
segment when the straight line from the anchor to it has a slope inside the door; otherwise the pending
point is archived and becomes the anchor. Interpolating linearly between consecutive archived points
therefore stays within ``max_error`` of every discarded point.

This is the classic OSIsoft swinging door with its test tightened: the classic test only asks that the doors
are still open (some line through the anchor fits every point), which lets a segment end on a point whose
straight line from the anchor misses an earlier point by more than ``max_error``.

A segment never spans more than ``max_interval`` of point time: a point that would stretch it further
archives the pending point first, a point arriving ``max_interval`` or more after the anchor is archived
itself, and ``tick`` archives the pending point once the agent clock is ``max_interval`` past the anchor.
Only ints and floats are compressed; booleans and strings pass through raw. A point not newer than the
previous one of its series is dropped (``out_of_order``).
"""

from __future__ import annotations

import heapq
import math
from itertools import islice
from typing import Annotated, Literal

from pydantic import Field

from edge_agent.pipeline.base import RecordSink, StepContext
from edge_agent.pipeline.step_config import StepModel
from fieldline.durations import Duration
from fieldline.wire import MetricValue

MAX_SERIES = 100_000
"""Series tracked per rule; beyond that the longest-tracked eighth is archived and forgotten."""

_INF = math.inf


class SwingingDoorConfig(StepModel):
    """``type: swinging_door`` — archive the points a linear reconstruction within ``max_error`` needs."""

    type: Literal["swinging_door"] = "swinging_door"
    metrics: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    max_error: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    max_interval: Annotated[Duration, Field(gt=0)] = 600.0


class _Segment:
    """A series' anchor (last archived point), pending point (``p_ts`` None if none), door and schedule."""

    __slots__ = ("a_ts", "a_v", "due", "hi", "lo", "p_ts", "p_value")

    def __init__(self, ts: float, v: float) -> None:
        self.a_ts = ts
        self.a_v = v
        self.p_ts: float | None = None
        self.p_value: MetricValue = None
        self.lo = -_INF
        self.hi = _INF
        self.due = 0.0  # the deadline this series has in the interval heap, 0.0 when none


class SwingingDoorCompressor:
    """The series state of one ``type: swinging_door`` rule."""

    journaled = True

    __slots__ = ("_ctx", "_heap", "_sink", "_state", "evicted", "max_error", "max_interval")

    def __init__(self, config: SwingingDoorConfig, sink: RecordSink, ctx: StepContext) -> None:
        self.max_error = config.max_error
        self.max_interval = config.max_interval
        self._sink = sink
        self._ctx = ctx
        self._state: dict[tuple[str, str], _Segment] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []  # (interval deadline, series), one per series
        self.evicted = 0

    @property
    def hold_horizon(self) -> float:
        return self.max_interval

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
        """True when ``value`` goes up at ``ts`` in the point's raw record (archived, or not numeric).

        Archiving the pending point (an earlier timestamp) appends it to ``out``. Archives are marked.
        """
        kind = type(value)
        if kind is float:
            if value != value:
                self._ctx.drop("swinging_door", "nan")
                return False
            v: float = value  # type: ignore[assignment]
        elif kind is int:
            v = float(value)  # type: ignore[arg-type]
        elif value is None:
            return False
        else:
            return not replay  # booleans and strings pass raw; on replay they went up already
        key = (device, metric)
        s = self._state.get(key)
        if s is None:
            if len(self._state) >= MAX_SERIES:
                self._evict(out)
            self._state[key] = _Segment(ts, v)
            self._sink.mark(device, metric, ts)
            return True
        p_ts = s.p_ts
        if p_ts is None:
            if ts <= s.a_ts:
                self._ctx.drop("swinging_door", "out_of_order")
                return False
        else:
            if ts <= p_ts:
                self._ctx.drop("swinging_door", "out_of_order")
                return False
            a_ts = s.a_ts
            if ts <= a_ts + self.max_interval:
                # the pending point becomes a discarded one: narrow the door by it
                e = self.max_error
                dt = p_ts - a_ts
                dv = float(s.p_value) - s.a_v  # type: ignore[arg-type]
                lo = (dv - e) / dt
                hi = (dv + e) / dt
                if lo < s.lo:
                    lo = s.lo
                if hi > s.hi:
                    hi = s.hi
                slope = (v - s.a_v) / (ts - a_ts)
                if lo <= slope <= hi:
                    s.lo = lo
                    s.hi = hi
                    s.p_ts = ts
                    s.p_value = value
                    return False
            self._archive_pending(key, s, out)
        if ts >= s.a_ts + self.max_interval:
            s.a_ts = ts
            s.a_v = v
            self._sink.mark(device, metric, ts)
            return True
        s.p_ts = ts
        s.p_value = value
        if not s.due:
            s.due = s.a_ts + self.max_interval
            heapq.heappush(self._heap, (s.due, key))
        return False

    def tick(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Archive pending points of series whose anchor is ``max_interval`` or more before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            s = self._state.get(key)
            if s is None or s.due != due:
                continue  # forgotten series, or an entry superseded by a later one
            s.due = 0.0
            if s.p_ts is None:
                continue
            if s.a_ts + self.max_interval <= now:
                self._archive_pending(key, s, out)
            else:  # archived since: the deadline moved with the anchor
                s.due = s.a_ts + self.max_interval
                heapq.heappush(heap, (s.due, key))

    def flush(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Archive every pending point (shutdown: nothing stays held)."""
        for key, s in self._state.items():
            if s.p_ts is not None:
                self._archive_pending(key, s, out)
            s.due = 0.0
        self._heap.clear()

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def seed(self, device: str, metric: str, ts: float, value: MetricValue) -> None:
        """Replay met the series' last archived point (its mark): resume from it, emitting nothing."""
        key = (device, metric)
        if key not in self._state and (type(value) is float or type(value) is int) and value == value:
            if len(self._state) >= MAX_SERIES:
                return
            self._state[key] = _Segment(ts, float(value))  # type: ignore[arg-type]

    def stats(self) -> dict[str, int]:
        return {"tracked_series": len(self._state), "evicted_series": self.evicted}

    def _archive_pending(
        self, key: tuple[str, str], s: _Segment, out: list[tuple[str, float, str, MetricValue]]
    ) -> None:
        ts = s.p_ts
        assert ts is not None
        out.append((key[0], ts, key[1], s.p_value))
        self._sink.mark(key[0], key[1], ts)
        s.a_ts = ts
        s.a_v = float(s.p_value)  # type: ignore[arg-type]
        s.p_ts = None
        s.p_value = None
        s.lo = -_INF
        s.hi = _INF

    def _evict(self, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Archive and forget the longest-tracked eighth of the series."""
        state = self._state
        oldest = list(islice(state, max(1, len(state) // 8)))
        for key in oldest:
            s = state.pop(key)
            if s.p_ts is not None:
                self._archive_pending(key, s, out)
        self.evicted += len(oldest)
