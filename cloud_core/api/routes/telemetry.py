"""``/api/v1``: telemetry of one device (JSON and streamed CSV), of many devices chosen by label selector,
gateway or type, and the latest value of each metric per device.

Buckets are aligned to UTC epoch time: ``start`` is rounded down and ``end`` up to a multiple of ``every``; a
sample at ``ts`` counts in the bucket starting at ``floor(ts / every) * every``. ``docs/cloud-api.md`` has the
details and ``docs/timeseries.md`` what each aggregation means on edge-aggregated data.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from cloud_core import registry
from cloud_core.api.deps import ServicesDep, ViewerDep
from cloud_core.problems import Problem
from cloud_core.schemas.common import problem_responses
from cloud_core.schemas.telemetry import DeviceTelemetry, FleetTelemetry, LatestTelemetry, from_ms
from cloud_core.schemas.timestamps import as_utc
from cloud_core.services import Services
from cloud_core.tsdb import Aggregation, StoreUnavailable, TimeSeriesStore
from cloud_core.tsdb import Query as TsQuery
from cloud_core.tsdb.model import HOUR_MS
from fieldline.durations import parse_duration
from fieldline.wire import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

T = TypeVar("T")

MAX_DEVICES = 1000
"""Devices one multi-device or latest query may cover."""
MAX_CELLS = 2_000_000
"""Buckets times devices one JSON answer may hold."""
CSV_CHUNK = 10_000
"""Buckets the CSV export asks the store for at a time."""
CSV_MAX_BUCKETS = 10_000_000
DEFAULT_SPAN_MS = 86_400_000
MAX_EVERY_MS = 366 * 86_400_000
LAST_MS = 221_845_392_000_000
"""9000-01-01: bucket bounds rounded up from here stay valid datetimes."""

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}(@[A-Za-z0-9_.]{1,32})?")

Metrics = Annotated[
    str | None,
    Query(
        max_length=4000,
        description="comma-separated metric names (default: every metric with data in the range); "
        "`temperature@p95` reads one window component as it is",
    ),
]
Start = Annotated[
    datetime | None, Query(description="RFC 3339 time or epoch seconds (default: one day before `end`)")
]
End = Annotated[
    datetime | None, Query(description="RFC 3339 time or epoch seconds, exclusive (default: now)")
]
Every = Annotated[str, Query(max_length=32, description="bucket width: 500ms, 30s, 1m, 15m, 1h, 1d")]
Agg = Annotated[Aggregation, Query(description="how a bucket's samples become one value")]
Devices = Annotated[
    str | None, Query(max_length=20_000, description="comma-separated device ids (combined with the filters)")
]
Selector = Annotated[
    str | None,
    Query(max_length=2000, description="label selector, e.g. env=prod,site in (a,b),!decommissioned"),
]
Gateway = Annotated[str | None, Query(description="devices behind this gateway")]
DeviceType = Annotated[str | None, Query(description="devices of this device type")]

_INVALID = "invalid-telemetry-query"


def _invalid(detail: str) -> Problem:
    return Problem(422, "Invalid telemetry query", detail, type=_INVALID)


def _responses(*problems: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a telemetry route: ``problems``, and 503 while the store is unavailable."""
    return problem_responses(*problems) | {503: {"description": "the time-series store is unavailable"}}


def _store(services: Services) -> TimeSeriesStore:
    store = services.parts.get("tsdb")
    if store is None:
        raise Problem(
            503,
            "Time-series store unavailable",
            "no time-series store is configured",
            type="tsdb-unavailable",
        )
    return store


async def _guarded(call: Awaitable[T]) -> T:
    try:
        return await call
    except StoreUnavailable as exc:
        raise Problem(
            503,
            "Time-series store unavailable",
            str(exc),
            type="tsdb-unavailable",
            headers={"Retry-After": "5"},
        ) from exc


def _metrics(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not _METRIC.fullmatch(n)]
    if bad:
        raise _invalid(f"invalid metric name {bad[0]!r}")
    if len(names) > 100:
        raise _invalid("at most 100 metrics per query")
    return names


def _ms(value: datetime) -> int:
    return round(as_utc(value).timestamp() * 1000)


def _duration(text: str, name: str = "every") -> int:
    try:
        ms = parse_duration(text) * 1000
    except ValueError as exc:
        raise _invalid(f"{name}: {exc}") from None
    if ms < 1 or ms != int(ms) or ms > MAX_EVERY_MS:
        raise _invalid(f"{name} must be a whole number of milliseconds, from 1ms to 366d")
    return int(ms)


def _span(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    end_ms = _ms(end) if end is not None else int(time.time() * 1000)
    start_ms = _ms(start) if start is not None else end_ms - DEFAULT_SPAN_MS
    if end_ms <= start_ms:
        raise _invalid("end must be after start")
    if start_ms < 0 or end_ms > LAST_MS:
        raise _invalid("start and end must lie between 1970 and 9000")
    return start_ms, end_ms


def _query(
    devices: list[str],
    metrics: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    every: str,
    agg: Aggregation,
) -> TsQuery:
    start_ms, end_ms = _span(start, end)
    try:
        query = TsQuery.aligned(devices, metrics, start_ms, end_ms, _duration(every), agg)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    if len(query.buckets) * max(len(devices), 1) > MAX_CELLS:
        raise _invalid(
            f"{len(query.buckets)} buckets for {len(devices)} devices: at most {MAX_CELLS} values per metric, "
            "narrow the devices or the range, or widen `every`"
        )
    return query


async def _resolve(
    services: Services, devices: str | None, selector: str | None, gateway: str | None, type: str | None
) -> list[str]:
    ids = None
    if devices is not None:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        bad = [d for d in ids if not ID_PATTERN.fullmatch(d)]
        if bad:
            raise _invalid(f"invalid device id {bad[0]!r}")
    async with services.database.session() as session:
        found = await registry.device_ids(session, selector=selector, gateway=gateway, type=type, ids=ids)
    if len(found) > MAX_DEVICES:
        raise _invalid(f"{len(found)} devices match: at most {MAX_DEVICES} per query, narrow the selection")
    return found


async def _registered(services: Services, device_id: str) -> None:
    async with services.database.session() as session:
        await registry.get_device(session, device_id)


@router.get(
    "/devices/{device_id}/telemetry",
    response_model=DeviceTelemetry,
    responses=_responses(401, 403, 404, 422),
)
async def device_telemetry(
    device_id: str,
    services: ServicesDep,
    _: ViewerDep,
    metrics: Metrics = None,
    start: Start = None,
    end: End = None,
    every: Every = "1m",
    agg: Agg = Aggregation.MEAN,
) -> DeviceTelemetry:
    """One device's metrics in aligned buckets."""
    await _registered(services, device_id)
    query = _query([device_id], _metrics(metrics), start, end, every, agg)
    answer = await _guarded(_store(services).query(query))
    return DeviceTelemetry.of(answer, device_id)


@router.get(
    "/telemetry",
    response_model=FleetTelemetry,
    responses=_responses(400, 401, 403, 422),
)
async def fleet_telemetry(
    services: ServicesDep,
    _: ViewerDep,
    devices: Devices = None,
    selector: Selector = None,
    gateway: Gateway = None,
    type: DeviceType = None,
    metrics: Metrics = None,
    start: Start = None,
    end: End = None,
    every: Every = "1m",
    agg: Agg = Aggregation.MEAN,
) -> FleetTelemetry:
    """Several registered devices' metrics in the same aligned buckets; devices are those matching every
    filter given (all registered devices when none is), at most 1000."""
    wanted = _metrics(metrics)
    found = await _resolve(services, devices, selector, gateway, type)
    query = _query(found, wanted, start, end, every, agg)
    answer = await _guarded(_store(services).query(query))
    return FleetTelemetry.of(answer)


@router.get(
    "/telemetry/latest",
    response_model=LatestTelemetry,
    responses=_responses(400, 401, 403, 422),
)
async def latest_telemetry(
    services: ServicesDep,
    _: ViewerDep,
    devices: Devices = None,
    selector: Selector = None,
    gateway: Gateway = None,
    type: DeviceType = None,
    metrics: Metrics = None,
    within: Annotated[str, Query(max_length=32, description="how far back to look (default 1d)")] = "1d",
) -> LatestTelemetry:
    """The newest value of each metric of each matching device within the last `within`."""
    wanted = _metrics(metrics)
    window = _duration(within, "within")
    found = await _resolve(services, devices, selector, gateway, type)
    at = int(time.time() * 1000)
    latest = await _guarded(_store(services).latest(found, wanted, at=at, within=window))
    return LatestTelemetry.of(at, window, latest)


def _csv_time(ms: int) -> str:
    text = from_ms(ms).isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def _csv_lines(query: TsQuery, device_id: str, columns: list[str], series: dict[str, Any]) -> str:
    lines = []
    rows = [series.get(c) or [None] * len(query.buckets) for c in columns]
    for i, ts in enumerate(query.buckets):
        values = [r[i] for r in rows]
        if any(v is not None for v in values):
            lines.append(",".join([_csv_time(ts), *("" if v is None else repr(v) for v in values)]))
    return "".join(f"{line}\n" for line in lines)


@router.get(
    "/devices/{device_id}/telemetry.csv",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`time` (RFC 3339, UTC) then one column per metric; rows without any value are left out",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }
    | _responses(401, 403, 404, 422),
)
async def device_telemetry_csv(
    device_id: str,
    services: ServicesDep,
    _: ViewerDep,
    metrics: Metrics = None,
    start: Start = None,
    end: End = None,
    every: Every = "1m",
    agg: Agg = Aggregation.MEAN,
) -> StreamingResponse:
    """One device's metrics in aligned buckets as CSV, streamed a few thousand buckets at a time (any range up
    to ten million buckets). Without `metrics`, the columns are the metrics with data in the range."""
    await _registered(services, device_id)
    store = _store(services)
    columns = _metrics(metrics)
    start_ms, end_ms = _span(start, end)
    step = _duration(every)
    first, last = start_ms - start_ms % step, end_ms + (-end_ms) % step
    if (last - first) // step > CSV_MAX_BUCKETS:
        raise _invalid(
            f"{(last - first) // step} buckets: at most {CSV_MAX_BUCKETS} per export, widen `every`"
        )
    if columns is None:
        span = last - first + (-(last - first)) % HOUR_MS  # whole hours: read from the hourly rollups
        found = await _guarded(
            store.query(TsQuery.aligned([device_id], None, first, last, span, Aggregation.COUNT))
        )
        columns = sorted(found.series.get(device_id, {}))
    chunks = [
        TsQuery((device_id,), tuple(columns), s, min(s + CSV_CHUNK * step, last), step, agg)
        for s in range(first, last, CSV_CHUNK * step)
    ]
    head = await _guarded(store.query(chunks[0]))  # failures before the first byte are still problems

    async def body() -> AsyncIterator[str]:
        yield ",".join(["time", *columns]) + "\n"
        yield _csv_lines(chunks[0], device_id, columns, head.series.get(device_id, {}))
        for chunk in chunks[1:]:
            answer = await store.query(chunk)
            yield _csv_lines(chunk, device_id, columns, answer.series.get(device_id, {}))

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{device_id}.csv"'},
    )
