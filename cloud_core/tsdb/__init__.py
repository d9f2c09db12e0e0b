"""Time-series storage: one interface (``TimeSeriesStore``), two backends and an extra write target.

- ``SQLiteStore`` (default): one file, rollups per minute and hour, retention per tier;
- ``VictoriaMetricsStore``: line protocol in, exports and instant queries out; retention is the server's;
- ``InfluxDBTarget``: an optional copy of every write in an InfluxDB 2 bucket.

``open_timeseries(settings)`` opens what ``settings.timeseries`` asks for. Both backends give the same answer to
the same query on the same data (``docs/timeseries.md`` says exactly how far).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

from cloud_core.settings import CloudSettings
from cloud_core.tsdb.errors import StoreUnavailable, TimeSeriesError, WriteRejected
from cloud_core.tsdb.influx import InfluxDBTarget
from cloud_core.tsdb.model import (
    MAX_BUCKETS,
    Aggregation,
    Answer,
    Latest,
    Point,
    Query,
    Values,
    points_from_batch,
    to_ms,
)
from cloud_core.tsdb.sqlite import SQLiteStore
from cloud_core.tsdb.victoria import VictoriaMetricsStore

__all__ = [
    "MAX_BUCKETS",
    "Aggregation",
    "Answer",
    "InfluxDBTarget",
    "Latest",
    "Point",
    "Query",
    "SQLiteStore",
    "StoreUnavailable",
    "TimeSeriesError",
    "TimeSeriesStore",
    "Values",
    "VictoriaMetricsStore",
    "WriteRejected",
    "open_timeseries",
    "points_from_batch",
    "to_ms",
]


class TimeSeriesStore(Protocol):
    """What every backend offers. Errors are ``TimeSeriesError`` (``retryable`` says whether to try again)."""

    backend: str

    async def write(self, points: Sequence[Point]) -> None:
        """Store ``points``; returns once the backend holds them (committed, or accepted by the server)."""

    async def query(self, query: Query) -> Answer:
        """Aggregate into aligned buckets (``cloud_core.tsdb.aggregate`` has the rules)."""

    async def latest(
        self, devices: Sequence[str], metrics: Sequence[str] | None, *, at: int, within: int
    ) -> dict[str, dict[str, Latest]]:
        """The newest value of each metric (all when ``metrics`` is None) of each device in
        ``(at - within, at]``, epoch milliseconds."""

    async def ready(self) -> None:
        """Raises ``StoreUnavailable`` when the backend cannot serve."""

    def stats(self) -> dict[str, float]:
        """Counters for ``/metrics``."""


class MirroredStore:
    """A store whose writes are also copied to an InfluxDB 2 bucket (queries read the primary store only)."""

    def __init__(self, primary: TimeSeriesStore, mirror: InfluxDBTarget) -> None:
        self.primary = primary
        self.mirror = mirror
        self.backend = primary.backend

    async def write(self, points: Sequence[Point]) -> None:
        await self.primary.write(points)
        self.mirror.submit(points)

    async def query(self, query: Query) -> Answer:
        return await self.primary.query(query)

    async def latest(
        self, devices: Sequence[str], metrics: Sequence[str] | None, *, at: int, within: int
    ) -> dict[str, dict[str, Latest]]:
        return await self.primary.latest(devices, metrics, at=at, within=within)

    async def ready(self) -> None:
        await self.primary.ready()

    def stats(self) -> dict[str, float]:
        return {**self.primary.stats(), **{f"influxdb_{k}": v for k, v in self.mirror.stats().items()}}


@asynccontextmanager
async def open_timeseries(settings: CloudSettings) -> AsyncIterator[TimeSeriesStore]:
    """The store ``settings.timeseries`` describes, open until the block ends (then flushed and closed)."""
    config = settings.timeseries
    async with AsyncExitStack() as stack:
        store: TimeSeriesStore
        if config.backend == "victoriametrics":
            store = await stack.enter_async_context(VictoriaMetricsStore(config.url))
        else:
            store = await stack.enter_async_context(SQLiteStore(settings.timeseries_path, config.retention))
        if config.influxdb is not None:
            store = MirroredStore(store, await stack.enter_async_context(InfluxDBTarget(config.influxdb)))
        yield store
