"""An extra write target: a copy of the telemetry in an InfluxDB 2 bucket, for users who chart with Grafana on
InfluxDB. The lines are the ones VictoriaMetrics gets (``cloud_core.tsdb.lineprotocol``: measurement
``fieldline``, tag ``device``, one field per series), written with ``influxdb-client`` to ``/api/v2/write``.

The copy is best effort and never slows the primary store: ``submit`` queues the points and returns; a sender
task writes them in order. While InfluxDB is unreachable or answers 5xx/429, the sender retries the oldest batch
with a growing delay (1 s to 30 s); the queue holds at most ``max_batches`` batches and drops the oldest beyond
that. Batches InfluxDB refuses (4xx) are dropped. Every drop is counted (``influxdb_points_dropped``).
Queries never read from InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from cloud_core.settings import InfluxSettings
from cloud_core.tsdb.errors import StoreUnavailable, TimeSeriesError, WriteRejected
from cloud_core.tsdb.lineprotocol import encode
from cloud_core.tsdb.model import Point
from fieldline.tasks import cancel_and_wait

log = logging.getLogger("fieldline.cloud.tsdb")
BACKEND = "influxdb"


class InfluxDBTarget:
    """Copies points to an InfluxDB 2 bucket in the background; an async context manager."""

    def __init__(
        self,
        settings: InfluxSettings,
        *,
        max_batches: int = 1000,
        timeout: float = 10.0,
        drain_timeout: float = 5.0,
        retry_delays: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.settings = settings
        self.max_batches = max_batches
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.retry_delays = retry_delays
        self._queue: deque[Sequence[Point]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._client: InfluxDBClient | None = None
        self._writer: WriteApi | None = None
        self._task: asyncio.Task[None] | None = None
        self.counters = dict.fromkeys(("points_written", "points_dropped", "write_errors"), 0)

    async def __aenter__(self) -> InfluxDBTarget:
        self._client = InfluxDBClient(
            url=self.settings.url,
            token=self.settings.token,
            org=self.settings.org,
            timeout=int(self.timeout * 1000),
        )
        self._writer = self._client.write_api(write_options=SYNCHRONOUS)
        self._task = asyncio.create_task(self._send_loop(), name="tsdb-influxdb")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Give the sender ``drain_timeout`` seconds to send what is queued, then stop; the rest is dropped."""
        if self._task is not None:
            if self._queue:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.drain_timeout):
                        await self._idle.wait()
            await cancel_and_wait(self._task)
            self._task = None
        self.counters["points_dropped"] += sum(sum(len(p.values) for p in b) for b in self._queue)
        self._queue.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def submit(self, points: Sequence[Point]) -> None:
        """Queue ``points`` for InfluxDB; drops (and counts) the oldest batch when ``max_batches`` are waiting."""
        if not points:
            return
        if len(self._queue) >= self.max_batches:
            dropped = self._queue.popleft()
            self.counters["points_dropped"] += sum(len(p.values) for p in dropped)
        self._queue.append(points)
        self._idle.clear()
        self._wake.set()

    def stats(self) -> dict[str, float]:
        return {**self.counters, "queued_batches": len(self._queue)}

    async def _send_loop(self) -> None:
        delay = self.retry_delays[0]
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[0]
            try:
                await asyncio.to_thread(self._post, batch)
            except WriteRejected as exc:
                log.warning("InfluxDB refused a batch, dropped: %s", exc)
                self.counters["points_dropped"] += sum(len(p.values) for p in batch)
            except TimeSeriesError as exc:
                log.warning("InfluxDB write failed, retrying in %.0f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_delays[1])
                continue
            else:
                delay = self.retry_delays[0]
            if self._queue and self._queue[0] is batch:
                self._queue.popleft()
            if not self._queue:
                self._idle.set()

    def _post(self, points: Sequence[Point]) -> None:
        assert self._writer is not None
        try:
            self._writer.write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record=encode(points),
                write_precision=WritePrecision.MS,
            )
        except ApiException as exc:
            self.counters["write_errors"] += 1
            status = exc.status or 0
            if 400 <= status < 500 and status not in (408, 429):
                raise WriteRejected(BACKEND, f"write refused ({status}): {exc.body!r:.300}") from exc
            raise StoreUnavailable(BACKEND, f"write failed ({status}): {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.counters["write_errors"] += 1
            raise StoreUnavailable(BACKEND, f"cannot write to {self.settings.url}: {exc}") from exc
        self.counters["points_written"] += sum(len(p.values) for p in points)
