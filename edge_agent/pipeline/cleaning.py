"""Value cleaning steps: ``range``, ``nulls``, ``rename`` and ``drop``.

Each step has a pydantic configuration (``type:`` discriminated in ``steps.py``) whose ``build()`` returns
the step. Steps change ``point.metrics`` in place and count every value they remove with
``StepContext.drop``. Booleans are never numbers here (``type(v) is bool`` is checked before ``int``), and
``None`` values are left to the ``nulls`` step by every other step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.pipeline.base import StepContext
from edge_agent.pipeline.series_state import DeviceTable, add_series
from edge_agent.pipeline.step_config import (
    GlobMap,
    MetricGlobList,
    MetricGlobs,
    MetricName,
    Number,
    StepModel,
    is_glob,
)
from fieldline.durations import Duration
from fieldline.wire import MetricValue, Point

# --------------------------------------------------------------------------------------------------- range

RangeAction = Literal["drop", "clamp", "null", "replace"]
_DROP, _CLAMP, _NULL, _REPLACE = range(4)
_ACTION_CODES = {"drop": _DROP, "clamp": _CLAMP, "null": _NULL, "replace": _REPLACE}


class Limit(StepModel):
    """Bounds of one metric (or glob); ``action`` and ``value`` override the step's."""

    min: Number | None = None
    max: Number | None = None
    action: RangeAction | None = None
    value: Number | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("a limit needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


class RangeConfig(StepModel):
    """Keep numeric metrics within limits; out-of-range values are dropped, clamped, nulled or replaced."""

    type: Literal["range"]
    limits: dict[MetricName, Limit] = Field(min_length=1)
    action: RangeAction = "drop"
    value: Number | None = None

    @model_validator(mode="after")
    def _replacements(self) -> RangeConfig:
        replacing = False
        for metric, limit in self.limits.items():
            action = limit.action or self.action
            if action == "replace":
                replacing = True
                if limit.value is None and self.value is None:
                    raise ValueError(f"limits.{metric}: action replace needs a value (on the limit or step)")
            elif limit.value is not None:
                raise ValueError(f"limits.{metric}: value is only used with action: replace, not {action}")
        if self.value is not None and not replacing:
            raise ValueError("value is only used with action: replace, and no limit replaces")
        return self

    def build(self) -> RangeStep:
        return RangeStep(self)


class _Bound:
    __slots__ = ("action", "hi", "lo", "value")

    def __init__(self, limit: Limit, action: RangeAction, value: float | None) -> None:
        self.lo = limit.min if limit.min is not None else float("-inf")
        self.hi = limit.max if limit.max is not None else float("inf")
        self.action = _ACTION_CODES[limit.action or action]
        self.value = limit.value if limit.value is not None else value


class RangeStep:
    """Drop reasons: ``below_min``, ``above_max`` (every out-of-range value, whatever the action) and
    ``not_numeric`` (a limited metric holding a string, a boolean or NaN: always removed)."""

    __slots__ = ("_limits", "name")

    def __init__(self, config: RangeConfig) -> None:
        self.name = "range"
        self._limits = GlobMap(
            (metric, _Bound(limit, config.action, config.value)) for metric, limit in config.limits.items()
        )

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        limits = self._limits
        removed: list[str] | None = None
        for metric, value in metrics.items():
            bound = limits.get(metric)
            if bound is None:
                continue
            kind = type(value)
            if kind is float or kind is int:
                if value < bound.lo:  # type: ignore[operator]
                    reason, action, edge = "below_min", bound.action, bound.lo
                elif value > bound.hi:  # type: ignore[operator]
                    reason, action, edge = "above_max", bound.action, bound.hi
                elif value == value:  # not NaN: in range
                    continue
                else:
                    reason, action, edge = "not_numeric", _DROP, 0.0
            elif value is None:
                continue
            else:
                reason, action, edge = "not_numeric", _DROP, 0.0
            ctx.drop(self.name, reason)
            if action == _DROP:
                if removed is None:
                    removed = [metric]
                else:
                    removed.append(metric)
            elif action == _CLAMP:
                metrics[metric] = edge
            elif action == _NULL:
                metrics[metric] = None
            else:
                metrics[metric] = bound.value
        if removed is not None:
            for metric in removed:
                del metrics[metric]
        return point


# --------------------------------------------------------------------------------------------------- nulls

FillValue = bool | int | float | str


class NullsConfig(StepModel):
    """What to do with metrics whose value is null: drop them, fill a constant, or repeat the last value."""

    type: Literal["nulls"]
    metrics: MetricGlobList = ["*"]
    action: Literal["drop", "fill", "last"] = "drop"
    value: FillValue | None = None
    max_age: Duration | None = None

    @model_validator(mode="after")
    def _options(self) -> NullsConfig:
        if self.action == "fill" and self.value is None:
            raise ValueError("action fill needs a value")
        if self.action != "fill" and self.value is not None:
            raise ValueError(f"value is only used with action: fill (action is {self.action})")
        if self.max_age is not None:
            if self.action != "last":
                raise ValueError(f"max_age is only used with action: last (action is {self.action})")
            if self.max_age <= 0:
                raise ValueError("max_age must be greater than zero")
        return self

    def build(self) -> NullsDropStep | NullsFillStep | NullsLastStep:
        if self.action == "drop":
            return NullsDropStep(self)
        if self.action == "fill":
            return NullsFillStep(self)
        return NullsLastStep(self)


class NullsDropStep:
    """``action: drop``: null values of the selected metrics are removed (reason ``null``)."""

    __slots__ = ("_selects", "name")

    def __init__(self, config: NullsConfig) -> None:
        self.name = "nulls"
        self._selects = MetricGlobs(config.metrics)

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        removed = [metric for metric, value in metrics.items() if value is None and selects(metric)]
        if removed:
            for metric in removed:
                del metrics[metric]
            ctx.drop(self.name, "null", len(removed))
        return point


class NullsFillStep:
    """``action: fill``: null values of the selected metrics become ``value``."""

    __slots__ = ("_selects", "_value", "name")

    def __init__(self, config: NullsConfig) -> None:
        self.name = "nulls"
        self._selects = MetricGlobs(config.metrics)
        self._value = config.value

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        for metric, value in metrics.items():
            if value is None and selects(metric):
                metrics[metric] = self._value
        return point


class _Last:
    __slots__ = ("ts", "value")

    def __init__(self, value: MetricValue, ts: float) -> None:
        self.value = value
        self.ts = ts


class NullsLastStep:
    """``action: last``: a null becomes the last non-null value of that device and metric.

    Without one (or with one older than ``max_age`` by point timestamps) the null is removed, with reason
    ``null`` or ``null_stale``. State per device and metric: the last value and its timestamp.
    """

    __slots__ = ("_devices", "_max_age", "_selects", "name")

    def __init__(self, config: NullsConfig) -> None:
        self.name = "nulls"
        self._selects = MetricGlobs(config.metrics)
        self._max_age = config.max_age if config.max_age is not None else float("inf")
        self._devices: DeviceTable[dict[str, _Last]] = DeviceTable()

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        ts = point.ts
        last = self._devices.get(point.device_id)
        if last is None:
            last = self._devices.add(point.device_id, {})
        removed: list[str] | None = None
        for metric, value in metrics.items():
            if not selects(metric):
                continue
            seen = last.get(metric)
            if value is not None:
                if seen is None:
                    add_series(last, metric, _Last(value, ts))
                else:
                    seen.value = value
                    seen.ts = ts
            elif seen is not None and ts - seen.ts <= self._max_age:
                metrics[metric] = seen.value
            else:
                if removed is None:
                    removed = [metric]
                else:
                    removed.append(metric)
                ctx.drop(self.name, "null" if seen is None else "null_stale")
        if removed is not None:
            for metric in removed:
                del metrics[metric]
        return point


# --------------------------------------------------------------------------------------------------- rename


class RenameConfig(StepModel):
    """Rename metrics: ``map: {old_name: new_name}`` (exact names)."""

    type: Literal["rename"]
    map: dict[MetricName, MetricName] = Field(min_length=1)

    @model_validator(mode="after")
    def _static_collisions(self) -> RenameConfig:
        targets: dict[str, str] = {}
        for source, target in self.map.items():
            if is_glob(source) or is_glob(target):
                raise ValueError(f"{source} -> {target}: rename takes exact metric names, not globs")
            if source == target:
                raise ValueError(f"{source} is renamed to itself")
            if target in targets:
                raise ValueError(f"{targets[target]} and {source} are both renamed to {target}")
            if target in self.map:
                raise ValueError(f"{target} is both a rename target and renamed itself; renames do not chain")
            targets[target] = source
        return self

    def build(self) -> RenameStep:
        return RenameStep(self)


class RenameStep:
    """A renamed value replaces a metric the point already has under the new name (that value is dropped,
    reason ``overwritten``)."""

    __slots__ = ("_pairs", "name")

    def __init__(self, config: RenameConfig) -> None:
        self.name = "rename"
        self._pairs = tuple(config.map.items())

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        for source, target in self._pairs:
            if source in metrics:
                if target in metrics:
                    ctx.drop(self.name, "overwritten")
                metrics[target] = metrics.pop(source)
        return point


# --------------------------------------------------------------------------------------------------- drop


class DropConfig(StepModel):
    """Remove metrics by name: ``metrics`` lists what goes, or ``keep`` lists the only ones that stay."""

    type: Literal["drop"]
    metrics: MetricGlobList | None = None
    keep: MetricGlobList | None = None

    @model_validator(mode="after")
    def _one_list(self) -> DropConfig:
        if (self.metrics is None) == (self.keep is None):
            raise ValueError("give exactly one of metrics (what to drop) or keep (what to keep)")
        return self

    def build(self) -> DropStep:
        return DropStep(self)


class DropStep:
    """Drop reason: ``dropped_by_config``."""

    __slots__ = ("_keep", "_selects", "name")

    def __init__(self, config: DropConfig) -> None:
        self.name = "drop"
        self._keep = config.keep is not None
        self._selects = MetricGlobs(config.keep if config.keep is not None else config.metrics or ())

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        keep = self._keep
        removed = [metric for metric in metrics if selects(metric) is not keep]
        if removed:
            for metric in removed:
                del metrics[metric]
            ctx.drop(self.name, "dropped_by_config", len(removed))
        return point
