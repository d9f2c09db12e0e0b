"""How stored samples become answers; the same code for every backend, so that they answer alike.

A backend hands over, for each series a query reads, either per-bucket ``Stats`` (count, sum, min, max and the
last sample) or the samples themselves; the functions here pick the series a query needs (``plan``) and
combine a metric's raw samples with its window components bucket by bucket (``evaluate``):

===========  ======================================================================================
``count``    raw samples + Σ ``@count`` of the windows (a window without ``count`` counts as one value)
``sum``      raw sum + Σ ``@sum`` (``@sum`` is the edge's sum, or mean * count when only those were sent)
``mean``     sum / count over the above; a bucket holding exactly one window and no raw sample answers
             that window's ``@mean`` itself, so a 1-minute mean of 60 s windows is the edge's mean
``min/max``  over raw samples and the windows' ``@min``/``@max`` (``@mean`` when a window has none)
``last``     the newest of the raw samples and the windows' ``@last`` (``@mean`` when absent), by timestamp
``p95``      from raw samples (exact, numpy's linear method); windows contribute their ``@p95``; parts are
             averaged weighted by count (exact when the bucket holds one part, approximate otherwise)
===========  ======================================================================================
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloud_core.tsdb.model import (
    COMPONENTS,
    DERIVED_SUM,
    SEPARATOR,
    Aggregation,
    Latest,
    Query,
    Values,
    base_metric,
)


@dataclass(slots=True)
class Stats:
    """One series in one bucket: how many samples, their sum, min, max, and the newest one."""

    count: int
    sum: float
    min: float
    max: float
    last_ts: int
    last: float


SeriesStats = dict[int, Stats]
"""Stats of one series by bucket start."""


class Samples:
    """The samples of one series in time order, unique by timestamp."""

    __slots__ = ("ts", "values")

    def __init__(self, ts: list[int], values: list[float]) -> None:
        self.ts = ts
        self.values = values


def stats_by_bucket(samples: Samples, every: int) -> SeriesStats:
    """Bucket ``samples`` (time order) into ``[t, t + every)`` with ``t`` a multiple of ``every``; each bucket's
    values are summed left to right in time order."""
    ts, values = samples.ts, samples.values
    out: SeriesStats = {}
    i, n = 0, len(ts)
    while i < n:
        bucket = ts[i] - ts[i] % every
        j = bisect_left(ts, bucket + every, i)
        part = values[i:j]
        out[bucket] = Stats(j - i, sum(part), min(part), max(part), ts[j - 1], part[-1])
        i = j
    return out


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linear between closest ranks (numpy's default method, as
    the edge computes its window percentiles)."""
    h = (len(ordered) - 1) * q
    i = int(h)
    if i + 1 >= len(ordered):
        return ordered[-1]
    a, b = ordered[i], ordered[i + 1]
    t = h - i
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def plan(available: Iterable[str], metrics: Sequence[str] | None, agg: Aggregation) -> dict[str, list[str]]:
    """For each metric answered, the stored series it reads, among ``available``. ``metrics`` None answers
    every metric that has a series; a name with ``@`` (``temperature@stddev``) reads that series alone."""
    names = set(available)
    wanted = sorted({base_metric(n) for n in names}) if metrics is None else metrics
    out: dict[str, list[str]] = {}
    for metric in wanted:
        if SEPARATOR in metric:
            out[metric] = [metric] if metric in names else []
        else:
            candidates = (metric, *(f"{metric}{SEPARATOR}{c}" for c in COMPONENTS[agg]))
            out[metric] = [n for n in candidates if n in names]
    return out


def wanted_names(metrics: Sequence[str], agg: Aggregation) -> list[str]:
    """Every series name ``metrics`` may read with ``agg`` (``latest`` reads what ``last`` reads)."""
    components = COMPONENTS[agg]
    names: list[str] = []
    for metric in metrics:
        names.append(metric)
        if SEPARATOR not in metric:
            names.extend(f"{metric}{SEPARATOR}{c}" for c in components)
    return names


def _direct(agg: Aggregation, s: Stats | None) -> float | None:
    if s is None:
        return None
    if agg is Aggregation.MEAN:
        return s.sum / s.count
    if agg is Aggregation.MIN:
        return s.min
    if agg is Aggregation.MAX:
        return s.max
    if agg is Aggregation.SUM:
        return s.sum
    if agg is Aggregation.COUNT:
        return float(s.count)
    return s.last


def _combine(agg: Aggregation, raw: Stats | None, win: dict[str, Stats]) -> float | None:
    """One bucket of a metric from its raw stats and its window components' stats (see the module table)."""
    mean = win.get("mean")
    if agg is Aggregation.MIN or agg is Aggregation.MAX:
        part = win.get(agg.value, mean)
        found = [s.min if agg is Aggregation.MIN else s.max for s in (raw, part) if s is not None]
        if not found:
            return None
        return min(found) if agg is Aggregation.MIN else max(found)
    if agg is Aggregation.LAST:
        part = win.get("last", mean)
        if raw is not None and (part is None or raw.last_ts >= part.last_ts):
            return raw.last
        return part.last if part is not None else None
    count = win.get("count")
    n = raw.count if raw is not None else 0
    if agg is Aggregation.COUNT:
        n += int(count.sum) if count is not None else mean.count if mean is not None else 0
        return float(n) if n else None
    total = raw.sum if raw is not None else 0.0
    window_sum = win.get(DERIVED_SUM)
    if window_sum is not None and count is not None:
        n += int(count.sum)
        total += window_sum.sum
    elif mean is not None:
        n += mean.count
        total += mean.sum
    if n == 0:
        return None
    if agg is Aggregation.SUM:
        return total
    if raw is None and mean is not None and mean.count == 1:
        return mean.sum  # the one window's own mean, bit for bit
    return total / n


def evaluate(query: Query, plan: dict[str, list[str]], stats: dict[str, SeriesStats]) -> dict[str, Values]:
    """Each planned metric's value per bucket, from the stats of its series (any aggregation but p95)."""
    agg = query.agg
    buckets = query.buckets
    out: dict[str, Values] = {}
    for metric, names in plan.items():
        if names == [metric]:
            series = stats.get(metric, {})
            out[metric] = [_direct(agg, series.get(b)) for b in buckets]
            continue
        raw = stats.get(metric, {}) if metric in names else {}
        parts = {n.partition(SEPARATOR)[2]: stats.get(n, {}) for n in names if n != metric}
        out[metric] = [
            _combine(agg, raw.get(b), {c: s[b] for c, s in parts.items() if b in s}) for b in buckets
        ]
    return out


def evaluate_p95(query: Query, plan: dict[str, list[str]], samples: dict[str, Samples]) -> dict[str, Values]:
    """Each planned metric's 95th percentile per bucket, from the samples of its series."""
    every = query.every
    out: dict[str, Values] = {}
    for metric, names in plan.items():
        parts: dict[int, list[tuple[float, float]]] = {}
        if metric in names and metric in samples:
            raw: dict[int, list[float]] = {}
            for ts, value in zip(samples[metric].ts, samples[metric].values, strict=True):
                raw.setdefault(ts - ts % every, []).append(value)
            for bucket, values in raw.items():
                values.sort()
                parts.setdefault(bucket, []).append((percentile(values, 0.95), float(len(values))))
        p95 = samples.get(f"{metric}{SEPARATOR}p95")
        if p95 is not None and SEPARATOR not in metric:
            counts = samples.get(f"{metric}{SEPARATOR}count")
            weight = dict(zip(counts.ts, counts.values, strict=True)) if counts is not None else {}
            for ts, value in zip(p95.ts, p95.values, strict=True):
                parts.setdefault(ts - ts % every, []).append((value, weight.get(ts, 1.0)))
        values: Values = []
        for bucket in query.buckets:
            found = parts.get(bucket)
            if not found:
                values.append(None)
            elif len(found) == 1:
                values.append(found[0][0])
            else:
                total = sum(w for _, w in found)
                values.append(sum(v * (w / total) for v, w in found))
        out[metric] = values
    return out


def answer_device(
    query: Query,
    plan: dict[str, list[str]],
    *,
    stats: dict[str, SeriesStats] | None = None,
    samples: dict[str, Samples] | None = None,
) -> dict[str, Values]:
    """One device's part of an answer, from per-bucket stats or from samples (p95 needs samples). When the
    query names no metrics, metrics without a value in the range are left out."""
    if query.agg is Aggregation.P95:
        values = evaluate_p95(query, plan, samples or {})
    else:
        if stats is None:
            stats = {name: stats_by_bucket(s, query.every) for name, s in (samples or {}).items()}
        values = evaluate(query, plan, stats)
    if query.metrics is None:
        values = {m: v for m, v in values.items() if any(x is not None for x in v)}
    return values


def latest_of(plan: dict[str, list[str]], newest: dict[str, Latest]) -> dict[str, Latest]:
    """Each metric's newest value from the newest sample of its series: the raw metric's, or a window's
    ``@last`` (``@mean`` when the windows carry no ``last``), whichever is newer (raw wins a tie)."""
    out: dict[str, Latest] = {}
    for metric, names in plan.items():
        raw = newest.get(metric) if metric in names else None
        part = None
        if SEPARATOR not in metric:
            part = newest.get(f"{metric}{SEPARATOR}last") or newest.get(f"{metric}{SEPARATOR}mean")
        best = raw if raw is not None and (part is None or raw.ts >= part.ts) else part
        if best is not None:
            out[metric] = best
    return out
