"""The downsampling stage: per metric, the first matching rule decides how a value goes up.

A pipeline's ``downsample:`` is a list of rules (``type: raw | window | deadband | swinging_door``), each
with ``metrics`` globs (``fnmatchcase``, default ``["*"]``). For each metric name the *first* rule whose
globs match decides; a metric no rule matches passes through raw. The rule of a metric name is resolved once
and cached.

Values that go up unaggregated (raw rules, deadband reports, swinging-door archives, values a rule passes
on) are combined per ``(device, ts)`` into one ``RawRecord``; window aggregates go up as one
``AggregateRecord`` per window. Window and swinging-door rules hold data that no output represents yet: the
agent journals the points that feed them (``needs_journal``), keeps them for ``hold_horizon`` and, after a
crash, replays them with ``add(..., replay=True)``; the marks (``restore_marks``) say what was already
emitted. See ``docs/pipeline-downsampling.md``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Literal, Protocol

from pydantic import Field

from edge_agent.pipeline.base import RecordSink, StepContext
from edge_agent.pipeline.deadband import DeadbandConfig, DeadbandFilter
from edge_agent.pipeline.step_config import StepModel
from edge_agent.pipeline.swinging_door import SwingingDoorCompressor, SwingingDoorConfig
from edge_agent.pipeline.window import WindowAggregator, WindowConfig
from fieldline.wire import MetricValue, Point, RawRecord

MAX_CACHED_NAMES = 4096
"""Metric names whose rule is cached; the cache starts over when a device invents more names than this."""

HOLD_MARGIN = 30.0
"""Seconds added to the longest hold of the journaled rules (device clocks slightly ahead, a late tick)."""

Emitted = tuple[str, float, str, MetricValue]
"""``(device_id, ts, metric, value)`` a rule emits raw apart from the point being added (an archive of an
earlier point, a heartbeat); the dispatcher groups them into records per ``(device_id, ts)``."""


class RawConfig(StepModel):
    """``type: raw`` — the matched metrics go up unaggregated (e.g. to exempt them from a catch-all rule)."""

    type: Literal["raw"] = "raw"
    metrics: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


DownsampleConfig = Annotated[
    RawConfig | WindowConfig | DeadbandConfig | SwingingDoorConfig, Field(discriminator="type")
]


class DownsampleRule(Protocol):
    """What a built rule offers the dispatcher (window, deadband and swinging-door rules)."""

    journaled: bool
    """True when the rule holds values that no output represents yet (they must be journaled)."""

    @property
    def hold_horizon(self) -> float: ...

    def add(
        self,
        device: str,
        metric: str,
        ts: float,
        value: MetricValue,
        now: float,
        replay: bool,
        out: list[Emitted],
    ) -> bool:
        """Consume one value; True when it goes up as is in the point's raw record."""

    def seed(self, device: str, metric: str, ts: float, value: MetricValue) -> None:
        """Replay met the value at exactly the series' mark (already emitted): restore state from it."""

    def tick(self, now: float, out: list[Emitted]) -> None: ...

    def flush(self, now: float, out: list[Emitted]) -> None: ...

    def next_deadline(self) -> float | None: ...

    def stats(self) -> dict[str, int]: ...


_UNRESOLVED = object()


def build_rule(
    config: WindowConfig | DeadbandConfig | SwingingDoorConfig, sink: RecordSink, ctx: StepContext
) -> DownsampleRule:
    """The runtime object of one non-raw rule."""
    if isinstance(config, WindowConfig):
        return WindowAggregator(config, sink, ctx)
    if isinstance(config, DeadbandConfig):
        return DeadbandFilter(config, sink, ctx)
    return SwingingDoorCompressor(config, sink, ctx)


class Downsampler:
    """Dispatches each metric of each point to its rule and emits what goes up.

    ``now`` is always the agent clock, handed in by the caller: windows close, heartbeats fire and
    swinging-door intervals expire against it; the wall clock is never read here.
    """

    __slots__ = ("_marks", "_out", "_routes", "_rules", "_sink", "rules")

    def __init__(self, rules: list[DownsampleConfig], sink: RecordSink, ctx: StepContext) -> None:
        self._sink = sink
        #: (globs, built rule or None for raw), in configuration order
        self._rules: list[tuple[tuple[str, ...], DownsampleRule | None]] = [
            (tuple(c.metrics), None if isinstance(c, RawConfig) else build_rule(c, sink, ctx)) for c in rules
        ]
        self.rules: list[DownsampleRule] = [
            r for _, r in self._rules if r is not None
        ]  # raw rules build none
        self._routes: dict[str, DownsampleRule | None] = {}
        self._marks: dict[tuple[str, str], float] = {}
        self._out: list[Emitted] = []

    # ------------------------------------------------------------------ input

    def add(self, point: Point, now: float, *, replay: bool = False) -> bool:
        """Feed one cleaned point; ``replay``: re-fed from the crash journal (see ``restore_marks``).

        Returns ``needs_journal(point)``: whether a metric of the point went to a window or swinging-door rule.
        """
        if replay:
            self._replay(point, now)
            return False
        device = point.device_id
        ts = point.ts
        out = self._out
        raw: dict[str, MetricValue] | None = None
        held = False
        for name, value in point.metrics.items():
            rule = self._routes.get(name, _UNRESOLVED)  # a C dict lookup where compiled (downsample.pxd)
            if rule is _UNRESOLVED:
                rule = self._resolve(name)
            if rule is None:
                keep = True
            else:
                keep = rule.add(device, name, ts, value, now, False, out)  # type: ignore[union-attr]
                if rule.journaled:  # type: ignore[union-attr]
                    held = True
            if keep:
                if raw is None:
                    raw = {name: value}
                else:
                    raw[name] = value
        if out:
            self._emit_out(device, ts, raw)
        elif raw is not None:
            self._sink.emit(RawRecord(device, ts, raw))
        return held

    def _replay(self, point: Point, now: float) -> None:
        """Only journaled rules consume replayed values, and only those newer than the series' mark."""
        device = point.device_id
        ts = point.ts
        marks = self._marks
        out = self._out
        raw: dict[str, MetricValue] | None = None
        for name, value in point.metrics.items():
            rule = self._route(name)
            if rule is None or not rule.journaled:
                continue
            mark = marks.get((device, name))
            if mark is not None and ts <= mark:
                if ts == mark:
                    rule.seed(device, name, ts, value)
                continue
            if rule.add(device, name, ts, value, now, True, out):
                if raw is None:
                    raw = {}
                raw[name] = value
        if out:
            self._emit_out(device, ts, raw)
        elif raw is not None:
            self._sink.emit(RawRecord(device, ts, raw))

    def restore_marks(self, marks: dict[tuple[str, str], float]) -> None:
        """Marks persisted before a restart: replayed values at or before them were already emitted.

        The mapping is kept as is (not copied) and only read.
        """
        self._marks = marks

    def needs_journal(self, point: Point) -> bool:
        """True when a metric of ``point`` goes to a window or swinging-door rule (held until emitted)."""
        for name in point.metrics:
            rule = self._route(name)
            if rule is not None and rule.journaled:
                return True
        return False

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Close due windows, report due heartbeats, archive swinging-door points whose interval expired."""
        out = self._out
        for rule in self.rules:
            rule.tick(now, out)
        if out:
            self._emit_out(None, 0.0, None)

    def flush(self, now: float) -> None:
        """Shutdown: emit every open window (``partial`` unless due) and every held point, with marks."""
        out = self._out
        for rule in self.rules:
            rule.flush(now, out)
        if out:
            self._emit_out(None, 0.0, None)

    def next_deadline(self) -> float | None:
        """The earliest agent-clock time at which ``tick`` has work, None when nothing is scheduled."""
        deadlines = [d for rule in self.rules if (d := rule.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    @property
    def hold_horizon(self) -> float:
        """Seconds the agent must keep journaled points: the longest hold of a journaled rule + a margin."""
        holds = [rule.hold_horizon for rule in self.rules if rule.journaled]
        return max(holds) + HOLD_MARGIN if holds else 0.0

    def stats(self) -> dict[str, int]:
        """Open windows, tracked series and evicted series summed over the rules, and cached metric names."""
        total = {"open_windows": 0, "tracked_series": 0, "evicted_series": 0}
        for rule in self.rules:
            for name, n in rule.stats().items():
                total[name] += n
        total["cached_names"] = len(self._routes)
        return total

    # ------------------------------------------------------------------ internals

    def _route(self, name: str) -> DownsampleRule | None:
        rule = self._routes.get(name, _UNRESOLVED)
        return self._resolve(name) if rule is _UNRESOLVED else rule  # type: ignore[return-value]

    def _resolve(self, name: str) -> DownsampleRule | None:
        found = next((rule for globs, rule in self._rules if any(fnmatchcase(name, g) for g in globs)), None)
        if len(self._routes) >= MAX_CACHED_NAMES:
            self._routes.clear()
        self._routes[name] = found
        return found

    def _emit_out(self, device: str | None, ts: float, raw: dict[str, MetricValue] | None) -> None:
        """Emit ``self._out`` grouped by ``(device, ts)``, then the current point's ``raw`` values.

        Values of the current point's ``(device, ts)`` join ``raw``, so each point yields one record.
        """
        groups: dict[tuple[str, float], dict[str, MetricValue]] = {}
        for d, t, name, value in self._out:
            if t == ts and d == device:
                if raw is None:
                    raw = {}
                raw[name] = value
            else:
                metrics = groups.get((d, t))
                if metrics is None:
                    groups[(d, t)] = {name: value}
                else:
                    metrics[name] = value
        self._out.clear()
        emit = self._sink.emit
        for (d, t), metrics in groups.items():
            emit(RawRecord(d, t, metrics))
        if raw:
            emit(RawRecord(device, ts, raw))  # type: ignore[arg-type]
