"""Telemetry as the stores hold it: points, series names, queries and their answers.

A **point** is one device's numeric values at one instant (epoch milliseconds). A **series** is one
``(device, name)``; its samples are unique by timestamp. Raw metrics are stored under their own name
(``temperature``); an edge window (``AggregateRecord``) is stored as **component series** named
``<metric>@<aggregate>`` (``temperature@mean``, ``temperature@count``, ``temperature@max``, ...) stamped at the
window start, one sample per window. ``@`` cannot occur in a metric name (``fieldline.payloads.NAME_PATTERN``),
so the two never collide. Queries combine a metric's raw samples and its windows (``cloud_core.tsdb.aggregate``),
so ``mean``, ``min``, ``max``, ``count``, ``sum`` and ``last`` stay right on edge-aggregated data.

Only numbers are stored. ``points_from_batch`` turns booleans into 0/1 and skips (and counts) strings, nulls,
non-finite numbers, names that do not match the metric name pattern and integers too large for a float.
``rows_from_batch`` is the same pass yielding plain tuples, for writers that encode each point at once.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, cast

from fieldline.payloads import NAME_PATTERN
from fieldline.wire import AggregateRecord, Batch, RawRecord, RecordKind

SEPARATOR = "@"
"""Between a metric and the aggregate of its window component series (``temperature@mean``)."""

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

#: Component series a window writes besides the aggregates it carries: ``sum`` when the edge sent ``mean`` and
#: ``count`` only (mean * count), so that means over several windows weigh each window by its count.
DERIVED_SUM = "sum"

#: Longest span of one query in buckets; the CSV export asks for longer spans piece by piece.
MAX_BUCKETS = 100_000


class Aggregation(StrEnum):
    """How the samples of one bucket become one value."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    LAST = "last"
    P95 = "p95"


#: Window components each aggregation reads (besides the raw metric itself).
COMPONENTS: dict[Aggregation, tuple[str, ...]] = {
    Aggregation.MEAN: ("mean", "count", "sum"),
    Aggregation.SUM: ("mean", "count", "sum"),
    Aggregation.COUNT: ("mean", "count"),
    Aggregation.MIN: ("min", "mean"),
    Aggregation.MAX: ("max", "mean"),
    Aggregation.LAST: ("last", "mean"),
    Aggregation.P95: ("p95", "count"),
}


class Point(NamedTuple):
    """One device's numeric values at ``ts`` (epoch milliseconds, UTC), by series name."""

    device_id: str
    ts: int
    values: dict[str, float]


Row = tuple[str, int, dict[str, float]]
"""A point's fields, ``(device_id, ts, values)``, without the ``Point`` (a ``Point`` is one too)."""


def base_metric(name: str) -> str:
    """The metric a series belongs to: ``temperature`` for ``temperature`` and ``temperature@max``."""
    return name.partition(SEPARATOR)[0]


def to_ms(seconds: float) -> int:
    """Epoch seconds (a positive float) to whole milliseconds, rounded to nearest."""
    return int(seconds * 1000.0 + 0.5)


_names: dict[str, bool] = {}
_good_names: set[str] = set()
"""The names in ``_names`` that are valid: ``points_from_batch`` checks a record's names against it at once."""
_NAMES_LIMIT = 8192


def _valid_name(name: object) -> bool:
    known = _names.get(name)  # type: ignore[call-overload]
    if known is None:
        known = isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
        if len(_names) >= _NAMES_LIMIT:
            _names.clear()
            _good_names.clear()
        _names[name] = known  # type: ignore[index]
        if known:
            _good_names.add(name)  # type: ignore[arg-type]
    return known


def _number(value: object, skipped: Counter[str] | None) -> float | None:
    """``value`` as a finite float, or None (counted in ``skipped`` by reason) when it cannot be stored."""
    kind = type(value)
    if kind is bool:
        return 1.0 if value else 0.0
    reason = "string" if kind is str else "null" if value is None else "non_finite"
    if kind is float or kind is int:
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:
            number, reason = math.inf, "too_large"
        if number - number == 0.0:
            return number
    if skipped is not None:
        skipped[reason] += 1
    return None


def _raw_values(metrics: dict[str, object], skipped: Counter[str] | None) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if not _valid_name(name):
            if skipped is not None:
                skipped["bad_name"] += 1
            continue
        number = _number(value, skipped)
        if number is not None:
            values[name] = number
    return values


def _partial_offset(record: AggregateRecord) -> int:
    """Where a partial window is stamped after its start: 1-999 ms, from its contents, so the parts of a window
    split by an agent restart are separate samples in the same bucket (the same part sent twice lands on the
    same timestamp and stays one)."""
    room = min(int(record.width * 1000), 1000) - 1
    if room < 1:
        return 0
    digest = zlib.crc32(repr(sorted(record.values.items())).encode())
    return 1 + digest % room


def _window_point(record: AggregateRecord, skipped: Counter[str] | None) -> Point | None:
    if not _valid_name(record.metric):
        if skipped is not None:
            skipped["bad_name"] += len(record.values)
        return None
    prefix = record.metric + SEPARATOR
    values: dict[str, float] = {}
    for aggregate, value in record.values.items():
        if not (isinstance(aggregate, str) and NAME_PATTERN.fullmatch(aggregate)):
            if skipped is not None:
                skipped["bad_name"] += 1
            continue
        number = _number(value, skipped)
        if number is not None:
            values[prefix + aggregate] = number
    mean, count = values.get(prefix + "mean"), values.get(prefix + "count")
    derived = prefix + DERIVED_SUM
    if derived not in values and mean is not None and count is not None:
        values[derived] = mean * count
    if not values:
        return None
    ts = to_ms(record.start) + (_partial_offset(record) if record.partial else 0)
    return Point(record.device_id, ts, values)


def points_from_batch(batch: Batch, skipped: Counter[str] | None = None) -> list[Point]:
    """The points of an uplink batch (``raw`` and ``agg`` kinds; other kinds hold no time series).

    Expects a batch that passed ``cloud_core.batch_checks`` (ids are text, timestamps are numbers). Values that
    cannot be stored are left out and counted in ``skipped`` by reason: ``string``, ``null``, ``non_finite``,
    ``too_large``, ``bad_name``.
    """
    new = tuple.__new__  # Point(...) would run the NamedTuple's Python-level __new__ for each point
    return [new(Point, row) for row in rows_from_batch(batch, skipped)]


def rows_from_batch(batch: Batch, skipped: Counter[str] | None = None) -> Iterator[Row]:
    """The points of an uplink batch as ``points_from_batch`` makes them, as plain ``(device_id, ts, values)``
    tuples made one at a time, for writers that encode them at once (``lineprotocol.encode_batch``)."""
    if batch.kind is RecordKind.RAW:
        good = _good_names
        for record in cast("list[RawRecord]", batch.records):
            metrics = record.metrics
            for value in metrics.values():  # fast path: every value a finite float, every name known good
                if type(value) is not float or value - value != 0.0:
                    break
            else:
                if metrics.keys() <= good and metrics:
                    yield record.device_id, int(record.ts * 1000.0 + 0.5), metrics
                    continue
            metrics = _raw_values(metrics, skipped)
            if metrics:
                yield record.device_id, int(record.ts * 1000.0 + 0.5), metrics
    elif batch.kind is RecordKind.AGG:
        for record in batch.records:
            assert isinstance(record, AggregateRecord)
            point = _window_point(record, skipped)
            if point is not None:
                yield point


@dataclass(frozen=True, slots=True)
class Query:
    """Aggregate ``metrics`` of ``devices`` into buckets ``[t, t + every)`` for ``t`` from ``start`` (inclusive)
    to ``end`` (exclusive), in epoch milliseconds. Buckets are aligned to UTC epoch time:
    a sample at ``ts`` falls in the bucket starting at ``floor(ts / every) * every``. ``metrics`` None means every
    metric with data in the range."""

    devices: tuple[str, ...]
    metrics: tuple[str, ...] | None
    start: int
    end: int
    every: int
    agg: Aggregation

    @classmethod
    def aligned(
        cls,
        devices: list[str] | tuple[str, ...],
        metrics: list[str] | tuple[str, ...] | None,
        start: int,
        end: int,
        every: int,
        agg: Aggregation | str,
    ) -> Query:
        """The query over whole buckets: ``start`` rounded down and ``end`` rounded up to a multiple of
        ``every``. Raises ``ValueError`` for an empty range, ``every`` below 1 ms or more than ``MAX_BUCKETS``."""
        if every < 1:
            raise ValueError("every must be at least 1 ms")
        if end <= start:
            raise ValueError("end must be after start")
        first = start - start % every
        last = end + (-end) % every
        if (last - first) // every > MAX_BUCKETS:
            raise ValueError(
                f"{(last - first) // every} buckets of {every} ms: at most {MAX_BUCKETS} per query, use a "
                "longer interval or a shorter range"
            )
        return cls(
            tuple(dict.fromkeys(devices)),
            None if metrics is None else tuple(dict.fromkeys(metrics)),
            first,
            last,
            every,
            Aggregation(agg),
        )

    @property
    def buckets(self) -> range:
        """The bucket start times."""
        return range(self.start, self.end, self.every)


Values = list[float | None]
"""One value per bucket of a query (None where the bucket holds no data)."""


@dataclass(slots=True)
class Answer:
    """A query's answer: for each device, each metric's values aligned with ``query.buckets``. Devices with no
    data are present with no metrics; when the query named its metrics, each is present (all None if no data)."""

    query: Query
    series: dict[str, dict[str, Values]]


class Latest(NamedTuple):
    """The newest sample of a metric: its time (epoch milliseconds) and value."""

    ts: int
    value: float
