"""Tumbling windows: aggregates of each (device, metric) over wall-clock-aligned intervals.

A point belongs to the window ``[start, start + width)`` with ``start = floor(ts / width) * width`` (UTC
epoch seconds, so windows line up with minute and hour boundaries across devices and gateways). A window
closes when the *agent clock* handed to ``tick`` reaches ``start + width + lateness``; it is then emitted as
one ``AggregateRecord`` and marked with the highest timestamp it held. Each series keeps at most
``MAX_OPEN_WINDOWS`` windows open. Open windows are scheduled by close time (a heap of distinct close times,
each with the windows that close then), so ``tick`` costs what it closes, not what is open.

Aggregates: ``count`` (an int), ``sum`` and ``mean`` (a plain running sum in arrival order, so ``mean``
equals ``sum(values) / len(values)`` computed in that order), ``min``, ``max``, ``first`` and ``last`` (by
arrival order), ``stddev`` (population, Welford's algorithm) and percentiles ``pNN`` (linear interpolation
between closest ranks, numpy's default; exact up to ``max_samples`` values, a deterministic reservoir sample
beyond). Booleans count as 0/1. A window that saw any string emits only ``count``, ``first`` and ``last``.
None and NaN are ignored.
"""

from __future__ import annotations

import heapq
import math
import re
import zlib
from array import array
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.pipeline.base import RecordSink, StepContext
from edge_agent.pipeline.step_config import StepModel
from fieldline.durations import Duration
from fieldline.wire import AggregateRecord, MetricValue

AGGREGATES = ("mean", "min", "max", "first", "last", "count", "sum", "stddev")
"""Aggregate names besides percentiles, which are written ``p50``, ``p95``, ``p99.9``."""

TEXT_AGGREGATES = frozenset({"count", "first", "last"})
"""What a window that saw a string value emits (the others are omitted)."""

MAX_OPEN_WINDOWS = 4
"""Open windows per series; a point that would open one more (far in the future) is dropped."""

MAX_SERIES = 100_000
"""Series with open windows per rule; a point of a new series beyond that is dropped (``too_many_series``)."""

_PERCENTILE = re.compile(r"p(100|\d{1,2}(?:\.\d+)?)")
_DAY_MS = 86_400_000
_INF = math.inf
_MASK64 = (1 << 64) - 1


class WindowConfig(StepModel):
    """``type: window`` — tumbling windows of ``width``, closed ``lateness`` after their end.

    ``lateness`` defaults to 5 s, or to ``width`` when that is shorter.
    """

    type: Literal["window"] = "window"
    metrics: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    width: Duration
    lateness: Duration = 5.0
    aggregates: list[str] = Field(default_factory=lambda: ["mean", "min", "max", "count"], min_length=1)
    max_samples: Annotated[int, Field(ge=16, le=65536)] = 1024

    @field_validator("width")
    @classmethod
    def _divides_day(cls, width: float) -> float:
        ms = round(width * 1000)
        if ms <= 0 or abs(ms - width * 1000) > 1e-6 or _DAY_MS % ms:
            raise ValueError(
                "width must be a whole number of milliseconds that divides a day evenly "
                "(such as 1s, 10s, 1m, 5m, 15m, 1h)"
            )
        return width

    @field_validator("aggregates")
    @classmethod
    def _known_aggregates(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in AGGREGATES and not _PERCENTILE.fullmatch(name):
                raise ValueError(
                    f"unknown aggregate {name!r}: use {', '.join(AGGREGATES)} "
                    "or a percentile such as p50, p95, p99.9"
                )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"aggregates listed more than once: {', '.join(dupes)}")
        return names

    @model_validator(mode="after")
    def _lateness_within_width(self) -> WindowConfig:
        if "lateness" not in self.model_fields_set:
            self.lateness = min(self.lateness, self.width)  # the 5 s default shrinks for sub-5 s windows
        elif self.lateness > self.width:
            raise ValueError(f"lateness ({self.lateness:g}s) must not exceed width ({self.width:g}s)")
        return self

    def percentiles(self) -> list[tuple[str, float]]:
        """``(name, q)`` of each percentile aggregate, ``q`` in [0, 1]."""
        return [(n, float(n[1:]) / 100.0) for n in self.aggregates if n[0] == "p"]


# --------------------------------------------------------------------------------------------------- windows


class _Window:
    """One open window of one series: count, running sum, min, max, first, last and the highest timestamp.

    ``prev`` links to the series' next older open window (a series' windows form a list, newest start first).
    ``n == 0`` marks a window already emitted, so stale entries in the close schedule are skipped.
    """

    __slots__ = ("first", "hi", "key", "last", "lo", "max_ts", "n", "prev", "start", "text", "total")

    def __init__(
        self, key: tuple[str, str], start: float, ts: float, value: MetricValue, x: float | None
    ) -> None:
        self.key = key
        self.start = start
        self.prev: _Window | None = None
        self.n = 1
        self.max_ts = ts
        if x is None:
            self.text = True
            self.first = self.last = value
            self.total = 0.0
            self.lo, self.hi = _INF, -_INF
        else:
            self.text = False
            self.first = self.last = x
            self.total = 0.0 + x  # what sum() does: start from 0 and add in arrival order
            self.lo = self.hi = x

    def add(self, x: float, ts: float) -> None:
        self.n += 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        self.last = x
        if ts > self.max_ts:
            self.max_ts = ts

    def add_text(self, value: MetricValue, ts: float) -> None:
        self.n += 1
        self.text = True
        self.last = value
        if ts > self.max_ts:
            self.max_ts = ts


class _MomentWindow(_Window):
    """Adds the running mean and sum of squared deviations (Welford) for ``stddev``."""

    __slots__ = ("m2", "mean")

    def __init__(
        self, key: tuple[str, str], start: float, ts: float, value: MetricValue, x: float | None
    ) -> None:
        super().__init__(key, start, ts, value, x)
        self.mean = 0.0 if x is None else x
        self.m2 = 0.0

    def add(self, x: float, ts: float) -> None:
        n = self.n = self.n + 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        self.last = x
        if ts > self.max_ts:
            self.max_ts = ts
        delta = x - self.mean
        self.mean += delta / n
        self.m2 += delta * (x - self.mean)


class _SampleWindow(_MomentWindow):
    """Adds the values themselves for percentiles: all of them up to ``cap``, then a reservoir sample.

    Beyond ``cap`` values, Algorithm R keeps a uniform sample of ``cap``; its random indexes come from a
    splitmix64 generator seeded by the series and window start, so the same input gives the same percentiles.
    """

    __slots__ = ("cap", "rng", "samples")

    def __init__(
        self, key: tuple[str, str], start: float, ts: float, value: MetricValue, x: float | None, cap: int
    ) -> None:
        super().__init__(key, start, ts, value, x)
        self.cap = cap
        self.rng = -1
        self.samples = array("d") if x is None else array("d", (x,))

    def add(self, x: float, ts: float) -> None:
        n = self.n = self.n + 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        self.last = x
        if ts > self.max_ts:
            self.max_ts = ts
        delta = x - self.mean
        self.mean += delta / n
        self.m2 += delta * (x - self.mean)
        samples = self.samples
        if len(samples) < self.cap:
            samples.append(x)
            return
        state = self.rng
        if state < 0:
            state = zlib.crc32(f"{self.key[0]}\0{self.key[1]}\0{self.start!r}".encode())
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        self.rng = state
        j = ((z ^ (z >> 31)) * n) >> 64  # uniform in [0, n)
        if j < self.cap:
            samples[j] = x


def _percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linear between closest ranks (numpy's default method)."""
    h = (len(ordered) - 1) * q
    i = int(h)
    if i + 1 >= len(ordered):
        return ordered[-1]
    a, b = ordered[i], ordered[i + 1]
    t = h - i
    # numpy's lerp: interpolate from the nearer end so the result stays monotonic and within [a, b]
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


_VALUES: dict[str, Callable[[Any], Any]] = {
    "mean": lambda w: w.total / w.n,
    "min": lambda w: w.lo,
    "max": lambda w: w.hi,
    "first": lambda w: w.first,
    "last": lambda w: w.last,
    "count": lambda w: w.n,
    "sum": lambda w: w.total,
    "stddev": lambda w: math.sqrt(w.m2 / w.n),
}


# --------------------------------------------------------------------------------------------------- the rule


class WindowAggregator:
    """The windows of one ``type: window`` rule across all series it handles."""

    journaled = True

    __slots__ = (
        "_ctx",
        "_due",
        "_make",
        "_open",
        "_outputs",
        "_series",
        "_sink",
        "_sorted",
        "_times",
        "lateness",
        "open_windows",
        "width",
    )

    def __init__(self, config: WindowConfig, sink: RecordSink, ctx: StepContext) -> None:
        self.width = config.width
        self.lateness = config.lateness
        self._sink = sink
        self._ctx = ctx
        quantiles = dict(config.percentiles())
        # (name, how to read it from a window, or None for a percentile with its q)
        self._outputs = [(name, _VALUES.get(name), quantiles.get(name, 0.0)) for name in config.aggregates]
        self._sorted = bool(quantiles)
        self._make: Callable[[tuple[str, str], float, float, MetricValue, float | None], _Window]
        if quantiles:
            cap = config.max_samples
            self._make = lambda key, start, ts, value, x: _SampleWindow(key, start, ts, value, x, cap)
        elif "stddev" in config.aggregates:
            self._make = _MomentWindow
        else:
            self._make = _Window
        # device -> metric -> newest open window of the series: keyed by the strings the points carry, so that
        # the lookup of each value builds no tuple and hashes nothing new
        self._open: dict[str, dict[str, _Window]] = {}
        self._series = 0  # series with open windows
        self._due: dict[float, list[_Window]] = {}  # close time -> windows closing then
        self._times: list[float] = []  # heap of the close times in _due
        self.open_windows = 0

    @property
    def hold_horizon(self) -> float:
        return self.width + self.lateness

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
        """Add one value to its window; never passes it on (returns False)."""
        kind = type(value)
        if kind is float:
            if value != value:
                self._ctx.drop("window", "nan")
                return False
            x: float | None = value  # type: ignore[assignment]
        elif kind is int or kind is bool:
            x = float(value)  # type: ignore[arg-type]
        elif value is None:
            return False
        else:
            x = None
        width = self.width
        # floor(ts / width) * width, as a float (a C floor where compiled)
        start = (ts / width) // 1.0 * width
        w = self._head(device, metric)
        if w is not None and w.start == start:
            if x is None:
                w.add_text(value, ts)
            else:
                w.add(x, ts)
        else:
            self._add_elsewhere(device, metric, w, start, ts, value, x, now, replay)
        return False

    def _add_elsewhere(
        self,
        device: str,
        metric: str,
        head: _Window | None,
        start: float,
        ts: float,
        value: MetricValue,
        x: float | None,
        now: float,
        replay: bool,
    ) -> None:
        """The value is not for the series' newest window: an older open one, or a new window."""
        count = 0
        node = head
        while node is not None:
            if node.start == start:
                if x is None:
                    node.add_text(value, ts)
                else:
                    node.add(x, ts)
                return
            count += 1
            node = node.prev
        close = start + self.width + self.lateness
        if not replay and now >= close:
            self._ctx.drop("window", "late")
            return
        if count >= MAX_OPEN_WINDOWS:
            count -= self._close_due(head, now)
            head = self._head(device, metric)
            if count >= MAX_OPEN_WINDOWS:
                self._ctx.drop("window", "too_far_ahead")
                return
        if head is None and self._series >= MAX_SERIES:
            self._ctx.drop("window", "too_many_series")
            return
        w = self._make((device, metric), start, ts, value, x)
        if head is None or start > head.start:
            w.prev = head
            self._set_head(device, metric, w)
        else:
            node = head
            while node.prev is not None and node.prev.start > start:
                node = node.prev
            w.prev = node.prev
            node.prev = w
        bucket = self._due.get(close)
        if bucket is None:
            self._due[close] = [w]
            heapq.heappush(self._times, close)
        else:
            bucket.append(w)
        self.open_windows += 1

    def _head(self, device: str, metric: str) -> _Window | None:
        series = self._open.get(device)
        return None if series is None else series.get(metric)

    def _set_head(self, device: str, metric: str, w: _Window | None) -> None:
        """Make ``w`` the series' newest open window (None: the series has none left)."""
        series = self._open.get(device)
        if w is not None:
            if series is None:
                series = self._open[device] = {}
            if metric not in series:
                self._series += 1
            series[metric] = w
        elif series is not None and series.pop(metric, None) is not None:
            self._series -= 1
            if not series:
                del self._open[device]

    def _close_due(self, head: _Window | None, now: float) -> int:
        """Close the series' windows (newest first from ``head``) whose close time has passed (before ``tick``
        got to them)."""
        closed = 0
        node = head
        while node is not None:
            older = node.prev
            if node.start + self.width + self.lateness <= now:
                self._close(node, partial=False)
                closed += 1
            node = older
        return closed

    def tick(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Emit every window whose close time is at or before ``now``."""
        times = self._times
        while times and times[0] <= now:
            for w in self._due.pop(heapq.heappop(times)):
                if w.n:
                    self._close(w, partial=False)

    def flush(self, now: float, out: list[tuple[str, float, str, MetricValue]]) -> None:
        """Emit windows due at ``now`` normally, and every other open window as ``partial``."""
        self.tick(now, out)
        for series in self._open.values():
            for head in series.values():
                chain = []
                node: _Window | None = head
                while node is not None:
                    chain.append(node)
                    node = node.prev
                for w in reversed(chain):
                    self._emit(w, partial=True)
        self._open.clear()
        self._series = 0
        self._due.clear()
        self._times.clear()
        self.open_windows = 0

    def next_deadline(self) -> float | None:
        return self._times[0] if self._times else None

    def seed(self, device: str, metric: str, ts: float, value: MetricValue) -> None:
        """Replay of a value already emitted: nothing to restore."""

    def stats(self) -> dict[str, int]:
        return {"open_windows": self.open_windows, "tracked_series": self._series}

    def _close(self, w: _Window, *, partial: bool) -> None:
        device, metric = w.key
        head = self._open[device][metric]
        if head is w:
            self._set_head(device, metric, w.prev)
        else:
            while head.prev is not w:
                head = head.prev  # type: ignore[assignment]
            head.prev = w.prev
        self._emit(w, partial=partial)

    def _emit(self, w: _Window, *, partial: bool) -> None:
        device, metric = w.key
        values: dict[str, Any] = {}
        if w.text:
            for name, get, _ in self._outputs:
                if get is not None and name in TEXT_AGGREGATES:
                    values[name] = get(w)
        else:
            ordered: list[float] = sorted(w.samples) if self._sorted else []  # type: ignore[attr-defined]
            for name, get, q in self._outputs:
                values[name] = _percentile(ordered, q) if get is None else get(w)
        self._sink.emit(AggregateRecord(device, metric, w.start, self.width, values, partial))
        self._sink.mark(device, metric, w.max_ts)
        w.n = 0
        w.prev = None
        self.open_windows -= 1
