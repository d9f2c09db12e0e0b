"""The ``outlier`` step: judge each numeric reading against a rolling window of that device's metric.

Two methods:

- ``hampel``: outlier when ``|x - median| > threshold * 1.4826 * MAD`` (MAD: median absolute deviation from
  the median, so 1.4826 * MAD estimates the standard deviation of normal data). When more than half the
  window is one value the MAD is 0; the scale then falls back to ``1.2533 * mean absolute deviation`` from the
  median. The window is kept sorted incrementally (a binary search, then only the values between the old and
  the new value's places move by one) beside a ring buffer in arrival order, both ``array('d')`` buffers of
  the window's size; the median is read off the sorted copy and the MAD found by a binary search in
  O(log window) steps. Most values of a full window skip both: they fall inside a
  *sure band* that is provably within the limit for the next few values (``HampelWindow``), and the verdicts
  stay exactly those of the definition.
- ``zscore``: outlier when ``|x - mean| > threshold * stddev`` (population stddev of the window). Mean and
  variance are updated incrementally for each value in and out (Welford-style) and recomputed exactly every
  ``window`` updates, so floating-point drift cannot accumulate.

In both, a value also has to deviate by more than ``min_deviation`` to be an outlier (quantised sensors),
and nothing is judged until the window holds ``min_samples`` values. Outliers do not enter the window, so one
spike cannot widen the limits for the next. But ``max_consecutive`` outliers in a row mean the level moved (a
setpoint change, a sensor swapped): that value is accepted, the window restarts from the run of rejected
values, and a ``level_shift`` flag is emitted. Non-numeric, boolean, NaN and infinite values pass untouched.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from math import nextafter, sqrt
from operator import sub
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.pipeline.base import StepContext
from edge_agent.pipeline.series_state import MAX_DEVICES, add_series
from edge_agent.pipeline.step_config import MetricGlobList, MetricGlobs, Number, StepModel
from fieldline.wire import Point

try:
    import cython  # resolved when setup.py compiles this module (types in outlier.pxd)

    COMPILED: bool = cython.compiled
except ImportError:  # plain Python, without Cython installed
    COMPILED = False

MAX_WINDOW = 1024
MAD_TO_STDDEV = 1.4826
MEAN_AD_TO_STDDEV = 1.2533
INF = float("inf")
_MARGIN = 2.0**-40


class OutlierConfig(StepModel):
    """Detect outliers per device and metric with a rolling Hampel filter or z-score."""

    type: Literal["outlier"]
    metrics: MetricGlobList = ["*"]
    method: Literal["hampel", "zscore"] = "hampel"
    window: int = Field(30, ge=3, le=MAX_WINDOW)
    threshold: Number = Field(3.0, gt=0)
    min_samples: int | None = Field(None, ge=3)
    max_consecutive: int | None = Field(None, ge=2)
    min_deviation: Number = Field(0.0, ge=0)
    action: Literal["drop", "flag", "replace"] = "drop"

    @model_validator(mode="after")
    def _within_window(self) -> OutlierConfig:
        if self.min_samples is not None and self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) cannot exceed window ({self.window})")
        if self.max_consecutive is not None and self.max_consecutive > self.window:
            raise ValueError(f"max_consecutive ({self.max_consecutive}) cannot exceed window ({self.window})")
        return self

    @property
    def effective_min_samples(self) -> int:
        """``min_samples``, by default half the window (at least 3)."""
        return self.min_samples if self.min_samples is not None else max(3, self.window // 2)

    @property
    def effective_max_consecutive(self) -> int:
        """``max_consecutive``, by default a third of the window (at least 2)."""
        return self.max_consecutive if self.max_consecutive is not None else max(2, self.window // 3)

    def build(self) -> OutlierStep:
        return OutlierStep(self)


class _Params:
    """The step's settings, shared by all its windows."""

    __slots__ = ("band_updates", "max_consecutive", "min_deviation", "min_samples", "threshold", "window")

    def __init__(self, config: OutlierConfig) -> None:
        self.window = config.window
        self.band_updates = max(1, config.window // 10)  # adds a Hampel sure band stays valid for
        self.threshold = config.threshold
        self.min_samples = config.effective_min_samples
        self.max_consecutive = config.effective_max_consecutive
        self.min_deviation = config.min_deviation


def position(ordered: array, n: int, x: float) -> int:
    """Where ``x`` goes in the sorted ``ordered[:n]`` (``bisect_left``). Compiled (``outlier.pxd``), a loop over C
    doubles in the buffer, several times faster than ``bisect``, which boxes every value it reads."""
    if not COMPILED:
        return bisect_left(ordered, x, 0, n)
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if ordered[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def replace_sorted(ordered: array, n: int, old: float, x: float) -> None:
    """Replace one ``old`` in the sorted ``ordered[:n]`` with ``x``, keeping it sorted."""
    move_into_place(ordered, position(ordered, n, old), position(ordered, n, x), x)


def move_into_place(ordered: array, i: int, j: int, x: float) -> None:
    """Vacate ``ordered[i]`` and put ``x`` where ``position`` says it goes (``j``, found with ``ordered[i]``
    still there): only the values between the two places move, by one. ``i == n`` (a free slot after the
    sorted values) inserts ``x``."""
    if not COMPILED:
        if j > i:
            ordered[i : j - 1] = ordered[i + 1 : j]
            ordered[j - 1] = x
        else:
            ordered[j + 1 : i + 1] = ordered[j:i]
            ordered[j] = x
        return
    if j > i:
        while i < j - 1:
            ordered[i] = ordered[i + 1]
            i += 1
        ordered[j - 1] = x
    else:
        while i > j:
            ordered[i] = ordered[i - 1]
            i -= 1
        ordered[j] = x


def shortest_span(ordered: array, n: int, run: int) -> float:
    """The smallest ``ordered[i + run - 1] - ordered[i]`` in ``ordered[:n]``: the shortest span of ``run``
    consecutive values."""
    if not COMPILED:
        return min(map(sub, ordered[run - 1 : n], ordered[: n - run + 1]))
    best = INF
    for i in range(n - run + 1):
        span = ordered[i + run - 1] - ordered[i]
        if span < best:
            best = span
    return best


def median_and_mad(ordered: Sequence[float], n: int) -> tuple[float, float]:
    """Median and median absolute deviation (MAD) of the sorted, non-empty ``ordered[:n]``, in O(log n).

    The ``size`` values closest to the median are contiguous in sorted order; a binary search finds where that
    run starts (as in "find the k closest elements"), and the run's farther end is the ``size``-th smallest
    deviation. For an even count the MAD also needs the next deviation: the nearer of the run's neighbours.
    """
    half = n // 2
    odd = n & 1
    median = ordered[half] if odd else (ordered[half - 1] + ordered[half]) / 2
    size = half + 1 if odd else half
    lo, hi = 0, n - size
    while lo < hi:
        mid = (lo + hi) // 2
        if median - ordered[mid] > ordered[mid + size] - median:
            lo = mid + 1
        else:
            hi = mid
    deviation = max(median - ordered[lo], ordered[lo + size - 1] - median)
    if odd:
        return median, deviation
    below = median - ordered[lo - 1] if lo > 0 else INF
    above = ordered[lo + size] - median if lo + size < n else INF
    return median, (deviation + min(below, above)) / 2


class SeriesWindow:
    """The rolling window of one series as the outlier step uses it (``HampelWindow``, ``ZScoreWindow``).

    While ``credit`` is positive, any value in ``[lo, hi]`` is known not to be an outlier without calling
    ``outlier``; ``rejected`` holds the current run of rejected values (None: no run).
    """

    __slots__ = ("credit", "hi", "lo", "rejected")

    def __init__(self) -> None:
        self.credit = 0
        self.lo = self.hi = 0.0
        self.rejected: list[float] | None = None

    def outlier(self, x: float) -> bool:
        """Whether ``x`` is an outlier of the current window."""
        raise NotImplementedError

    def add(self, x: float) -> None:
        """Accept ``x`` into the window."""
        raise NotImplementedError


class HampelWindow(SeriesWindow):
    """The last ``window`` accepted values of one series: a ring in arrival order and a sorted copy.

    Both are ``array('d')`` buffers of ``window`` values allocated once, ``count`` of them in use (compiled,
    typed memoryviews: every search and shift is a C loop). Besides the exact limit of the current content
    (``center``, ``limit``), a full window keeps a *sure band* ``[lo, hi]`` that stays valid for ``credit - 1``
    more ``add`` calls: any value inside it is within the exact Hampel limit of every window those adds can
    produce, so it is accepted without recomputing the median and MAD (see ``_sure_band``). When the credit is
    spent, the next judgement computes a new band first (it costs less than the median and MAD); only a value
    outside the band takes the exact path.
    """

    __slots__ = ("center", "count", "limit", "ordered", "params", "pos", "ring")

    def __init__(self, params: _Params) -> None:
        super().__init__()  # credit > 0: [lo, hi] is a sure band for that many judgements (one per add between)
        self.params = params
        self.ring = array("d", bytes(8 * params.window))
        self.ordered = array("d", bytes(8 * params.window))
        self.count = 0
        self.pos = 0
        self.limit = -1.0  # < 0: stale, recomputed before the next judgement
        self.center = 0.0

    def values(self) -> list[float]:
        """The window's values, oldest first."""
        ring = list(self.ring[: self.count])
        return ring[self.pos :] + ring[: self.pos]

    def sorted_values(self) -> list[float]:
        """The window's values in ascending order."""
        return list(self.ordered[: self.count])

    def outlier(self, x: float) -> bool:
        """Whether ``x`` is an outlier (never while the window holds fewer than ``min_samples`` values).

        The caller may skip this for a value in the sure band (``credit and lo <= x <= hi``): it is not one.
        """
        if self.limit < 0:
            n = self.count
            if n < self.params.min_samples:
                return False
            if not self.credit and n == self.params.window:
                self._sure_band()  # cheaper than the exact limit, and valid for the next values too
                if self.credit and self.lo <= x <= self.hi:
                    return False
            ordered = self.ordered
            median, mad = median_and_mad(ordered, n)
            if mad > 0:
                scale = MAD_TO_STDDEV * mad
            else:
                split = position(ordered, n, median)
                below = sum(ordered[:split])
                above = sum(ordered[split:n])
                scale = MEAN_AD_TO_STDDEV * (above - below + median * (2 * split - n)) / n
            self.center = median
            self.limit = max(self.params.threshold * scale, self.params.min_deviation)
        return abs(x - self.center) > self.limit

    def _sure_band(self) -> None:
        """Compute ``[lo, hi]``: values certainly within the limit for the next ``updates`` adds.

        Each add to a full window removes one value and inserts one, so after ``k`` adds the ``i``-th smallest
        value lies between the ``i-k``-th and ``i+k``-th of now: the median stays within ``[a, b]`` (the
        order statistics ``k`` ranks around today's middle ones). The MAD is at least half the shortest span
        of ``size - k`` consecutive values of now (``size``: the rank of the MAD among the deviations): at
        least ``size`` values lie within ``MAD`` of the median, at most ``k`` of them are new. So the limit
        is at least ``bound`` (the same formula on that MAD), and a value ``x`` with ``b - bound <= x <= a +
        bound`` is within the limit of every median in ``[a, b]``. A margin of ``2**-40`` (relative) and the
        outward rounding of the band edges absorb floating-point rounding; values near an edge simply take
        the exact path.
        """
        self.credit = 0
        params = self.params
        ordered = self.ordered
        n = self.count
        k = params.band_updates
        half = n // 2
        odd = n & 1
        first = half - k - (1 - odd)
        last = half + k
        run = (half + 1 if odd else half) - k
        if first < 0 or last >= n or run < 2:
            return
        span = shortest_span(ordered, n, run)
        a, b = ordered[first], ordered[last]
        bound = max(params.threshold * (MAD_TO_STDDEV * (span / 2)), params.min_deviation)
        bound = bound * (1 - _MARGIN) - (abs(a) + abs(b)) * _MARGIN
        lo = nextafter(b - bound, INF)
        hi = nextafter(a + bound, -INF)
        if lo <= hi:
            self.lo, self.hi = lo, hi
            self.credit = k + 1

    def add(self, x: float) -> None:
        n = self.count
        if n < self.params.window:
            self.ring[n] = x
            move_into_place(self.ordered, n, position(self.ordered, n, x), x)  # into the free slot n
            self.count = n + 1
        else:
            pos = self.pos
            replace_sorted(self.ordered, n, self.ring[pos], x)
            self.ring[pos] = x
            self.pos = pos + 1 if pos + 1 < n else 0
        self.limit = -1.0
        if self.credit:
            self.credit -= 1

    def restart(self, values: list[float]) -> None:
        """Replace the window's content with ``values`` (oldest first; at most ``window`` of them)."""
        n = len(values)
        ordered = sorted(values)
        for i in range(n):
            self.ring[i] = values[i]
            self.ordered[i] = ordered[i]
        self.count = n
        self.pos = 0
        self.limit = -1.0
        self.credit = 0


class ZScoreWindow(SeriesWindow):
    """The last ``window`` accepted values of one series, their running mean and sum of squared deviations.
    It keeps no sure band (``credit`` stays 0): every value is judged."""

    __slots__ = ("mean", "params", "pos", "ring", "sq_dev", "updates")

    def __init__(self, params: _Params) -> None:
        super().__init__()
        self.params = params
        self.ring = array("d")
        self.pos = 0
        self.mean = 0.0
        self.sq_dev = 0.0
        self.updates = 0

    @property
    def center(self) -> float:
        return self.mean

    def outlier(self, x: float) -> bool:
        """Whether ``x`` is an outlier (never while the window holds fewer than ``min_samples`` values)."""
        n = len(self.ring)
        params = self.params
        if n < params.min_samples:
            return False
        deviation = abs(x - self.mean)
        stddev = sqrt(max(self.sq_dev, 0.0) / n)
        return deviation > params.threshold * stddev and deviation > params.min_deviation

    def add(self, x: float) -> None:
        ring = self.ring
        mean = self.mean
        if len(ring) < self.params.window:
            ring.append(x)
            delta = x - mean
            self.mean = mean + delta / len(ring)
            self.sq_dev += delta * (x - self.mean)
            return
        pos = self.pos
        old = ring[pos]
        ring[pos] = x
        self.pos = (pos + 1) % len(ring)
        self.updates += 1
        if self.updates >= len(ring):
            self._recompute()
        else:
            self.mean = mean + (x - old) / len(ring)
            self.sq_dev += (x - old) * (x - self.mean + old - mean)

    def restart(self, values: list[float]) -> None:
        """Replace the window's content with ``values`` (oldest first)."""
        self.ring = array("d", values)
        self.pos = 0
        self._recompute()

    def _recompute(self) -> None:
        ring = self.ring
        mean = sum(ring) / len(ring)
        self.mean = mean
        self.sq_dev = sum((v - mean) * (v - mean) for v in ring)
        self.updates = 0


class OutlierStep:
    """Drop reason: ``outlier`` (actions ``drop`` and ``replace``). Flags: ``outlier`` (action ``flag``),
    ``level_shift`` (the window restarted after ``max_consecutive`` outliers in a row)."""

    __slots__ = ("_action", "_devices", "_params", "_selects", "_window_type", "name")

    def __init__(self, config: OutlierConfig) -> None:
        self.name = "outlier"
        self._selects = MetricGlobs(config.metrics)
        self._params = _Params(config)
        self._window_type = HampelWindow if config.method == "hampel" else ZScoreWindow
        self._action = config.action
        # a plain dict (not a DeviceTable), bounded the same way by add_series: compiled, read with C lookups
        self._devices: dict[str, dict[str, SeriesWindow]] = {}

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        selects = self._selects
        device_id = point.device_id
        windows = self._devices.get(device_id)
        if windows is None:
            windows = add_series(self._devices, device_id, {}, MAX_DEVICES)
        removed: list[str] | None = None
        for metric, value in metrics.items():
            kind = type(value)
            if kind is float:
                x: float = value  # type: ignore[assignment]
            elif kind is int:
                try:
                    x = float(value)  # type: ignore[arg-type]
                except OverflowError:
                    continue
            else:
                continue
            if x - x != 0.0:  # NaN or infinite
                continue
            window = windows.get(metric)
            if window is None:
                if not selects(metric):
                    continue
                window = add_series(windows, metric, self._window_type(self._params))
            if (window.credit and window.lo <= x <= window.hi) or not window.outlier(x):
                window.rejected = None
                window.add(x)
                continue
            rejected = window.rejected
            if rejected is None:
                rejected = window.rejected = []
            rejected.append(x)
            if len(rejected) >= self._params.max_consecutive:
                window.rejected = None
                window.restart(rejected)
                detail = f"{len(rejected)} outliers in a row: window restarted around {x:g}"
                ctx.flag(device_id, metric, point.ts, "level_shift", detail)
            elif self._action == "flag":
                detail = f"{x:g} deviates from {window.center:g} by more than the limit"
                ctx.flag(device_id, metric, point.ts, "outlier", detail)
            elif self._action == "replace":
                metrics[metric] = window.center
                ctx.drop(self.name, "outlier")
            else:
                if removed is None:
                    removed = [metric]
                else:
                    removed.append(metric)
                ctx.drop(self.name, "outlier")
        if removed is not None:
            for metric in removed:
                del metrics[metric]
        return point
