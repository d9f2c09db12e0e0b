"""Stream-quality steps: ``dedupe`` (repeated points), ``stuck`` (frozen sensors) and ``rate_limit``.

All three judge by the point's own timestamp, never by arrival time, so replaying the same data behaves the
same. Their state is bounded per device (``series_state``); the ``outlier`` step lives in ``outlier.py``.
"""

from __future__ import annotations

from array import array
from typing import Literal

from pydantic import Field

from edge_agent.pipeline.base import StepContext
from edge_agent.pipeline.series_state import DeviceTable, add_series
from edge_agent.pipeline.step_config import MetricGlobList, MetricGlobs, Number, StepModel
from fieldline.durations import Duration
from fieldline.wire import Point

# --------------------------------------------------------------------------------------------------- dedupe


class DedupeConfig(StepModel):
    """Drop a point whose timestamp was already seen for its device among the last ``window`` timestamps."""

    type: Literal["dedupe"]
    window: int = Field(64, ge=1, le=4096)

    def build(self) -> DedupeStep:
        return DedupeStep(self)


class _Seen:
    """A device's last ``window`` timestamps: a ring of 8-byte floats, and the newest timestamp ever seen."""

    __slots__ = ("newest", "pos", "recent")

    def __init__(self, ts: float) -> None:
        self.newest = ts
        self.recent = array("d", (ts,))
        self.pos = 0

    def add(self, ts: float, window: int) -> None:
        recent = self.recent
        if len(recent) < window:
            recent.append(ts)
        else:
            recent[self.pos] = ts
            self.pos = (self.pos + 1) % window


class DedupeStep:
    """Drop reason: ``duplicate`` (the whole point). A timestamp newer than any seen is never searched for."""

    __slots__ = ("_devices", "_window", "name")

    def __init__(self, config: DedupeConfig) -> None:
        self.name = "dedupe"
        self._window = config.window
        self._devices: DeviceTable[_Seen] = DeviceTable()

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        ts = point.ts
        seen = self._devices.get(point.device_id)
        if seen is None:
            self._devices.add(point.device_id, _Seen(ts))
            return point
        if ts > seen.newest:
            seen.newest = ts
        elif ts in seen.recent:
            ctx.drop(self.name, "duplicate")
            return None
        seen.add(ts, self._window)
        return point


# --------------------------------------------------------------------------------------------------- stuck


class StuckConfig(StepModel):
    """Flag (and optionally drop) a metric that repeats the same reading ``count`` times in a row."""

    type: Literal["stuck"]
    metrics: MetricGlobList = ["*"]
    count: int = Field(10, ge=2)
    tolerance: Number = Field(0.0, ge=0)
    min_duration: Duration = 0.0
    action: Literal["flag", "drop"] = "flag"
    clear_flag: bool = True

    def build(self) -> StuckStep:
        return StuckStep(self)


class _Run:
    __slots__ = ("count", "ref", "start", "stuck")

    def __init__(self, ref: float, start: float) -> None:
        self.ref = ref
        self.start = start
        self.count = 1
        self.stuck = False


class StuckStep:
    """Flags: ``stuck`` once per run, ``stuck_cleared`` when the value moves (with ``clear_flag``).

    A reading repeats the run when it is within ``tolerance`` of the run's first reading (not of the
    previous one, so a slow drift is never taken for a stuck sensor). The run is stuck at its ``count``-th
    reading, once it also spans ``min_duration`` of point time. With ``action: drop`` the stuck readings from
    that one on are removed (reason ``stuck``). Only numbers are judged; booleans, strings and nulls pass.
    """

    __slots__ = (
        "_clear_flag", "_count", "_devices", "_drop", "_min_duration", "_selects", "_tolerance", "name",
    )  # fmt: skip

    def __init__(self, config: StuckConfig) -> None:
        self.name = "stuck"
        self._selects = MetricGlobs(config.metrics)
        self._count = config.count
        self._tolerance = config.tolerance
        self._min_duration = config.min_duration
        self._drop = config.action == "drop"
        self._clear_flag = config.clear_flag
        self._devices: DeviceTable[dict[str, _Run]] = DeviceTable()

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        device_id = point.device_id
        ts = point.ts
        runs = self._devices.get(device_id)
        if runs is None:
            runs = self._devices.add(device_id, {})
        removed: list[str] | None = None
        for metric, value in metrics.items():
            kind = type(value)
            if (kind is not float and kind is not int) or not selects(metric):
                continue
            run = runs.get(metric)
            if run is None:
                add_series(runs, metric, _Run(value, ts))  # type: ignore[arg-type]
                continue
            try:
                same = abs(value - run.ref) <= self._tolerance  # type: ignore[operator]
            except OverflowError:  # an int too large for a float against a float reference
                same = False
            if not same:
                if run.stuck and self._clear_flag:
                    detail = f"changed to {value!r} after {run.count} readings of {run.ref!r}"
                    ctx.flag(device_id, metric, ts, "stuck_cleared", detail)
                run.ref = value  # type: ignore[assignment]
                run.start = ts
                run.count = 1
                run.stuck = False
                continue
            run.count += 1
            if not run.stuck:
                if run.count < self._count or (self._min_duration and ts - run.start < self._min_duration):
                    continue
                run.stuck = True
                detail = f"{run.count} readings of {run.ref!r} since ts {run.start!r}"
                ctx.flag(device_id, metric, ts, "stuck", detail)
            if self._drop:
                if removed is None:
                    removed = [metric]
                else:
                    removed.append(metric)
        if removed is not None:
            for metric in removed:
                del metrics[metric]
            ctx.drop(self.name, "stuck", len(removed))
        return point


# ------------------------------------------------------------------------------------------------ rate_limit


class RateLimitConfig(StepModel):
    """At most one point per device per ``interval`` of point time; with ``metrics``, one value per metric."""

    type: Literal["rate_limit"]
    interval: Duration = Field(gt=0)
    metrics: MetricGlobList | None = None

    def build(self) -> RateLimitStep | MetricRateLimitStep:
        return RateLimitStep(self) if self.metrics is None else MetricRateLimitStep(self)


class RateLimitStep:
    """Whole points, per device. Drop reason: ``rate_limited``.

    A point is kept when its timestamp is at least ``interval`` after the last kept one. A point older than
    the last kept one by more than ``interval`` is taken for a device clock reset: kept, and spacing restarts
    from it.
    """

    __slots__ = ("_devices", "_interval", "name")

    def __init__(self, config: RateLimitConfig) -> None:
        self.name = "rate_limit"
        self._interval = config.interval
        self._devices: DeviceTable[float] = DeviceTable()

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        ts = point.ts
        last = self._devices.get(point.device_id)
        if last is None:
            self._devices.add(point.device_id, ts)
        elif ts - last >= self._interval or last - ts > self._interval:
            self._devices[point.device_id] = ts
        else:
            ctx.drop(self.name, "rate_limited")
            return None
        return point


class MetricRateLimitStep:
    """Per device and metric, for the selected metrics; others pass. Drop reason: ``rate_limited``."""

    __slots__ = ("_devices", "_interval", "_selects", "name")

    def __init__(self, config: RateLimitConfig) -> None:
        self.name = "rate_limit"
        self._interval = config.interval
        self._selects = MetricGlobs(config.metrics or ())
        self._devices: DeviceTable[dict[str, float]] = DeviceTable()

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        interval = self._interval
        ts = point.ts
        kept = self._devices.get(point.device_id)
        if kept is None:
            kept = self._devices.add(point.device_id, {})
        removed: list[str] | None = None
        for metric in metrics:
            if not selects(metric):
                continue
            last = kept.get(metric)
            if last is None:
                add_series(kept, metric, ts)
            elif ts - last >= interval or last - ts > interval:
                kept[metric] = ts
            elif removed is None:
                removed = [metric]
            else:
                removed.append(metric)
        if removed is not None:
            for metric in removed:
                del metrics[metric]
            ctx.drop(self.name, "rate_limited", len(removed))
        return point
