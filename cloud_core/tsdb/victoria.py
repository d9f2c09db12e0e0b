"""Telemetry in VictoriaMetrics (single node here; its cluster version is the scale-out path).

Writes: InfluxDB line protocol (``cloud_core.tsdb.lineprotocol``) sent with ``influxdb-client``'s synchronous
write API to ``/api/v2/write`` from a small thread pool, in requests of about ``POINTS_PER_REQUEST`` points of
equal size, one body of bytes each, sent concurrently. Ingest encodes each uplink batch as soon as it is decoded
(``encode_batch``: line protocol straight from the records, without a ``Point`` per record, in the event loop's
thread), so that a flush only joins ready bodies into requests (``write_encoded``) and the encoding of the next
batches overlaps the server's work on this flush's requests; ``write`` (points) encodes on the write threads.
influxdb-client costs about 0.5 ms more CPU per request than a bare ``http.client`` POST of the same bytes
(measured), a few per cent of the ingest's CPU at this request size, so it stays the writer; most of that CPU goes
to decoding uplink batches, encoding and the garbage collector (``bench/cloud_ingest.py``). A series lands as
``fieldline_<name>{device="<id>"}``. Retention is the server's (``-retentionPeriod``); so is durability
(VictoriaMetrics makes samples searchable within about a second).

Reads: range queries export the raw samples (``/api/v1/export``) and aggregate them with the code the SQLite
store uses, because VictoriaMetrics' rollup windows are ``(t - d, t]`` where Fieldline's buckets are
``[t, t + d)``, and its ``quantile_over_time`` is not the edge's percentile: exporting keeps both backends'
answers the same, at the price of moving every sample of the range to the cloud core. Samples repeated at one
timestamp keep the larger value, as SQLite does. ``latest`` uses instant queries (``last_over_time`` and
``tlast_over_time`` over ``(at - within, at]``), which the server evaluates itself.

VictoriaMetrics keeps about 12 significant decimal digits of each value; values with more (a window's mean)
read back rounded there, which is the one way its answers differ from SQLite's.
"""

from __future__ import annotations

import asyncio
import re
import threading
from bisect import bisect_left
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from cloud_core.tsdb.aggregate import Samples, answer_device, latest_of, plan, wanted_names
from cloud_core.tsdb.errors import StoreUnavailable, TimeSeriesError, WriteRejected
from cloud_core.tsdb.lineprotocol import MEASUREMENT, EncodedBatch, encode, encode_batch
from cloud_core.tsdb.model import Aggregation, Answer, Latest, Point, Query
from fieldline.wire import Batch

BACKEND = "victoriametrics"
#: Points per write request: a write's requests are sent concurrently on the write threads, so encoding one
#: overlaps the server's work on another (VictoriaMetrics refuses requests over 32 MB by default).
POINTS_PER_REQUEST = 5_000
#: Devices per export or instant query (VictoriaMetrics limits a query to 16 KiB by default).
DEVICES_PER_REQUEST = 200


def _literal(text: str) -> str:
    """``text`` as a regular expression matching itself, inside a MetricsQL double-quoted string."""
    return re.escape(text).replace("\\", "\\\\").replace('"', '\\"')


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _samples(parts: list[tuple[list[int], list[Any]]], start: int, end: int) -> Samples:
    """One series' exported samples within ``[start, end)``, in time order, one per timestamp (the larger)."""
    if len(parts) == 1:
        ts, values = parts[0]
    else:
        ts = [t for p in parts for t in p[0]]
        values = [v for p in parts for v in p[1]]
    values = list(map(float, values))
    if ts != sorted(ts) or len(set(ts)) != len(ts):
        pairs = sorted(zip(ts, values, strict=True))  # equal timestamps: the larger value sorts last
        ts, values = [], []
        for t, v in pairs:
            if ts and ts[-1] == t:
                values[-1] = v
            else:
                ts.append(t)
                values.append(v)
    lo, hi = bisect_left(ts, start), bisect_left(ts, end)
    return Samples(ts[lo:hi], values[lo:hi])


def _parts(batches: Sequence[EncodedBatch], most: int) -> list[Sequence[EncodedBatch]]:
    """``batches`` in as few consecutive groups as hold about ``most`` points each, of about equal size (a
    group may pass ``most`` by half a batch)."""
    total = sum(b.points for b in batches)
    share = total / max(1, -(-total // most))
    parts: list[Sequence[EncodedBatch]] = []
    start, points = 0, 0
    for i, batch in enumerate(batches):
        if i > start and points + batch.points / 2 > (len(parts) + 1) * share:
            parts.append(batches[start:i])
            start = i
        points += batch.points
    parts.append(batches[start:])
    return parts


class VictoriaMetricsStore:
    """Telemetry in VictoriaMetrics at ``url``; an async context manager (``TimeSeriesStore``)."""

    backend = BACKEND

    def __init__(self, url: str, *, timeout: float = 30.0, write_threads: int = 2) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.write_threads = write_threads
        self._prefix = f"{MEASUREMENT}_"
        self._influx: InfluxDBClient | None = None
        self._writer: WriteApi | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.AsyncClient | None = None
        self.counters = dict.fromkeys(
            ("points_written", "requests", "bytes_sent", "write_errors", "query_errors"), 0
        )
        self._counting = threading.Lock()

    async def __aenter__(self) -> VictoriaMetricsStore:
        self._influx = InfluxDBClient(
            url=self.url,
            token="",
            org="fieldline",
            timeout=int(self.timeout * 1000),
            connection_pool_maxsize=self.write_threads,
        )
        self._writer = self._influx.write_api(write_options=SYNCHRONOUS)
        self._pool = ThreadPoolExecutor(self.write_threads, thread_name_prefix="fieldline-vm-write")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True)  # writes in flight finish first
            self._pool = None
        if self._influx is not None:
            self._influx.close()
            self._influx = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def ready(self) -> None:
        """Raises ``StoreUnavailable`` unless the server answers ``/health``."""
        response = await self._get("/health")
        if response.status_code != 200:
            raise StoreUnavailable(BACKEND, f"/health answered {response.status_code}")

    def stats(self) -> dict[str, float]:
        """Counters for ``/metrics`` (source ``tsdb``)."""
        return dict(self.counters)

    # ----------------------------------------------------------------------------------------- writes

    async def write(self, points: Sequence[Point]) -> None:
        """Send ``points``; returns once the server has accepted them."""
        pool = self._open_pool()
        if not points:
            return
        loop = asyncio.get_running_loop()
        requests = -(-len(points) // POINTS_PER_REQUEST)
        size = -(-len(points) // requests)  # equal parts: no small request left at the end
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, self._post, points[i : i + size])
                for i in range(0, len(points), size)
            )
        )

    def encode_batch(self, batch: Batch) -> EncodedBatch:
        """``batch``'s points as line protocol, for ``write_encoded`` (``lineprotocol.encode_batch``; in the
        event loop's thread: the model's name cache is not shared with the write threads)."""
        return encode_batch(batch)

    async def write_encoded(self, batches: Sequence[EncodedBatch]) -> int:
        """Send encoded batches, joined in requests of about ``POINTS_PER_REQUEST`` points sent concurrently;
        returns how many points that was, once the server has accepted all of them."""
        pool = self._open_pool()
        loop = asyncio.get_running_loop()
        sends = [
            loop.run_in_executor(pool, self._send, b"\n".join(b.body for b in part if b.points))
            for part in _parts(batches, POINTS_PER_REQUEST)
            if any(b.points for b in part)
        ]
        await asyncio.gather(*sends)
        return sum(b.points for b in batches)

    def _open_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise StoreUnavailable(BACKEND, "the store is not open")
        return self._pool

    def _post(self, points: Sequence[Point]) -> None:
        """Encode and send one request (on a write thread: encoding overlaps the server's work on the others)."""
        self._send(encode(points))

    def _send(self, body: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(bucket=MEASUREMENT, record=body, write_precision=WritePrecision.MS)
        except ApiException as exc:
            self._count(write_errors=1)
            status = exc.status or 0
            if 400 <= status < 500 and status not in (408, 429):
                raise WriteRejected(BACKEND, f"write refused ({status}): {exc.body!r:.300}") from exc
            raise StoreUnavailable(BACKEND, f"write failed ({status}): {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._count(write_errors=1)
            raise StoreUnavailable(BACKEND, f"cannot write to {self.url}: {exc}") from exc
        self._count(requests=1, bytes_sent=len(body), points_written=body.count(b","))  # one "," per value

    def _count(self, **amounts: int) -> None:
        with self._counting:  # the write threads count concurrently
            for name, amount in amounts.items():
                self.counters[name] += amount

    # ----------------------------------------------------------------------------------------- reads

    async def _get(self, path: str, **params: Any) -> httpx.Response:
        return await self._request("GET", path, params=params)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._http is None:
            raise StoreUnavailable(BACKEND, "the store is not open")
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.counters["query_errors"] += 1
            raise StoreUnavailable(BACKEND, f"cannot reach {self.url}: {exc!r}") from exc
        if response.status_code >= 500:
            self.counters["query_errors"] += 1
            raise StoreUnavailable(BACKEND, f"{path} answered {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            self.counters["query_errors"] += 1
            raise TimeSeriesError(BACKEND, f"{path} answered {response.status_code}: {response.text[:300]}")
        return response

    def _selector(self, devices: Sequence[str], names: Sequence[str] | None) -> str:
        name = ".+" if names is None else "|".join(_literal(n) for n in names)
        device = "|".join(_literal(d) for d in devices)
        return f'{{__name__=~"{_literal(self._prefix)}({name})",device=~"{device}"}}'

    async def _export(
        self, devices: Sequence[str], names: Sequence[str] | None, start: int, end: int
    ) -> dict[str, dict[str, Samples]]:
        async def chunk(part: Sequence[str]) -> httpx.Response:
            form = {
                "match[]": self._selector(part, names),
                "start": _seconds(start),
                "end": _seconds(end - 1),
            }
            return await self._request("POST", "/api/v1/export", data=form)

        found: dict[str, dict[str, list[tuple[list[int], list[Any]]]]] = {d: {} for d in devices}
        parts = [devices[i : i + DEVICES_PER_REQUEST] for i in range(0, len(devices), DEVICES_PER_REQUEST)]
        skip = len(self._prefix)
        for response in await asyncio.gather(*(chunk(p) for p in parts)):
            for line in response.content.splitlines():
                if not line:
                    continue
                item = orjson.loads(line)
                labels = item["metric"]
                series = found.get(labels.get("device", ""))
                if series is not None:
                    series.setdefault(labels["__name__"][skip:], []).append(
                        (item["timestamps"], item["values"])
                    )
        return {d: {n: _samples(p, start, end) for n, p in s.items()} for d, s in found.items()}

    async def query(self, query: Query) -> Answer:
        """Aggregate as ``query`` asks, from the exported samples (``cloud_core.tsdb.aggregate``)."""
        names = None if query.metrics is None else wanted_names(query.metrics, query.agg)
        exported = await self._export(query.devices, names, query.start, query.end)
        series = {}
        for device in query.devices:
            found = exported.get(device, {})
            series[device] = answer_device(query, plan(found, query.metrics, query.agg), samples=found)
        return Answer(query, series)

    async def _instant(self, expr: str, at: int) -> list[dict[str, Any]]:
        response = await self._request(
            "POST", "/api/v1/query", data={"query": expr, "time": _seconds(at), "nocache": "1"}
        )
        return orjson.loads(response.content)["data"]["result"]

    async def latest(
        self, devices: Sequence[str], metrics: Sequence[str] | None, *, at: int, within: int
    ) -> dict[str, dict[str, Latest]]:
        """The newest value of each metric of each device in ``(at - within, at]`` (epoch ms)."""
        names = None if metrics is None else wanted_names(metrics, Aggregation.LAST)
        newest: dict[str, dict[str, Latest]] = {d: {} for d in devices}
        skip = len(self._prefix)
        for i in range(0, len(devices), DEVICES_PER_REQUEST):
            selector = self._selector(devices[i : i + DEVICES_PER_REQUEST], names)
            values, times = await asyncio.gather(
                self._instant(f"last_over_time({selector}[{within}ms]) keep_metric_names", at),
                self._instant(f"tlast_over_time({selector}[{within}ms]) keep_metric_names", at),
            )
            when = {(r["metric"]["device"], r["metric"]["__name__"]): float(r["value"][1]) for r in times}
            for r in values:
                key = (r["metric"]["device"], r["metric"]["__name__"])
                if key in when and key[0] in newest:
                    newest[key[0]][key[1][skip:]] = Latest(round(when[key] * 1000), float(r["value"][1]))
        return {d: latest_of(plan(found, metrics, Aggregation.LAST), found) for d, found in newest.items()}
