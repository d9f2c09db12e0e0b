"""Pipelines per device selector: cleaning steps in order, then the downsampler.

The first pipeline whose ``match`` selects a device handles it; a device no pipeline selects passes through raw
with no cleaning. An optional ``tap`` (the agent's automation) sees every cleaned point before it is downsampled.
Selectors match the device id against glob patterns and/or the device type (from the
``devices:`` section of the agent configuration or the ``type`` attribute of the device's retained state).
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

from pydantic import Field

from edge_agent.pipeline.base import DropCounter, RecordSink, StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from edge_agent.pipeline.step_config import StepModel
from edge_agent.pipeline.steps import CleaningStepConfig
from fieldline.wire import Point, RawRecord

MAX_ROUTE_CACHE = 100_000

Tap = Callable[[Point], None]


class Selector(StepModel):
    """Which devices a pipeline handles: ids matching any glob, or types in the list (either selects)."""

    ids: list[str] = []
    types: list[str] = []

    def selects(self, device_id: str, device_type: str | None) -> bool:
        if not self.ids and not self.types:
            return True
        if device_type is not None and device_type in self.types:
            return True
        return any(fnmatchcase(device_id, pattern) for pattern in self.ids)


class PipelineConfig(StepModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    match: Selector = Selector()
    steps: list[CleaningStepConfig] = []
    downsample: list[DownsampleConfig] = []


class Pipeline:
    """One configured pipeline; ``process`` runs a point through it and returns the cleaned point when the
    downsampler holds it (it must be journaled), else None."""

    __slots__ = ("ctx", "downsampler", "name", "steps", "tap")

    def __init__(self, config: PipelineConfig, sink: RecordSink, count_drop: DropCounter) -> None:
        self.name = config.name
        self.ctx = StepContext(sink, count_drop)
        self.steps = [step.build() for step in config.steps]
        self.downsampler = Downsampler(list(config.downsample), sink, self.ctx)
        self.tap: Tap | None = None

    def process(self, point: Point, now: float) -> Point | None:
        ctx = self.ctx
        for step in self.steps:
            result = step.apply(point, ctx)
            if result is None:
                return None
            point = result
        if not point.metrics:
            ctx.drop("pipeline", "no_metrics_left")
            return None
        if self.tap is not None:
            self.tap(point)
        return point if self.downsampler.add(point, now) else None


class _PassThrough:
    """The route of devices no pipeline selects: everything goes up raw."""

    name = "passthrough"

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self.tap: Tap | None = None

    def process(self, point: Point, now: float) -> Point | None:
        if self.tap is not None:
            self.tap(point)
        self.sink.emit(RawRecord(point.device_id, point.ts, point.metrics))
        return None  # nothing held: no journal needed


class PipelineRouter:
    """Routes each device to its pipeline and drives timers, flush and replay across all pipelines."""

    def __init__(
        self,
        configs: list[PipelineConfig],
        sink: RecordSink,
        count_drop: DropCounter,
        device_type: Callable[[str], str | None],
    ) -> None:
        self.pipelines = [Pipeline(c, sink, count_drop) for c in configs]
        self._configs = configs
        self._passthrough = _PassThrough(sink)
        self._device_type = device_type
        self._routes: dict[str, Pipeline | _PassThrough] = {}

    def route(self, device_id: str) -> Pipeline | _PassThrough:
        route = self._routes.get(device_id)
        if route is None:
            device_type = self._device_type(device_id)
            route = next(
                (
                    p
                    for p, c in zip(self.pipelines, self._configs, strict=True)
                    if c.match.selects(device_id, device_type)
                ),
                self._passthrough,
            )
            if len(self._routes) >= MAX_ROUTE_CACHE:
                self._routes.clear()
            self._routes[device_id] = route
        return route

    def set_tap(self, tap: Tap | None) -> None:
        """Show every cleaned point to ``tap`` before it is downsampled (None: stop)."""
        for route in (*self.pipelines, self._passthrough):
            route.tap = tap

    def forget_route(self, device_id: str) -> None:
        """Re-resolve the device's pipeline (its type changed)."""
        self._routes.pop(device_id, None)

    def process(self, point: Point, now: float) -> Point | None:
        """Run ``point`` through its pipeline; returns the cleaned point when it must be journaled."""
        route = self._routes.get(point.device_id)
        if route is None:
            route = self.route(point.device_id)
        return route.process(point, now)

    def replay(self, point: Point, now: float) -> None:
        route = self.route(point.device_id)
        if isinstance(route, Pipeline):
            route.downsampler.add(point, now, replay=True)

    def restore_marks(self, marks: dict[tuple[str, str], float]) -> None:
        for pipeline in self.pipelines:
            pipeline.downsampler.restore_marks(marks)

    def tick(self, now: float) -> None:
        for pipeline in self.pipelines:
            pipeline.downsampler.tick(now)

    def flush(self, now: float) -> None:
        for pipeline in self.pipelines:
            pipeline.downsampler.flush(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for p in self.pipelines if (d := p.downsampler.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    @property
    def hold_horizon(self) -> float:
        return max((p.downsampler.hold_horizon for p in self.pipelines), default=0.0)
