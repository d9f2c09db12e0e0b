"""Query latency: one day of 1 Hz data of one device aggregated to 1-minute means, against baselines measured in
the same run.

    python bench/cloud_query.py [--devices 10] [--repeat 30] [--cpu 0] [--out bench/results/cloud_query.json]

Data: ``devices`` devices with 4 metrics at 1 Hz over the last full day (86,400 samples per series), written
through ``SQLiteStore.write`` (so the rollups are the ones ingest maintains), and the measured device's day also
written to a VictoriaMetrics server started for the run.

Measured, each ``repeat`` times (median and 95th percentile, milliseconds):
- SQLite store, ``every=1m agg=mean``: one metric and all four (read from the 1-minute rollups; target <= 50 ms);
- SQLite store, ``every=90s`` (not a multiple of a minute, so read from the raw points): the cost without rollups;
- bare SQL over the raw points: one ``GROUP BY`` minute in SQLite itself, no Python (the baseline);
- VictoriaMetrics store, ``every=1m agg=mean``: exported samples aggregated in Python (what keeps both backends'
  answers identical);
- bare VictoriaMetrics: ``avg_over_time(...[1m])`` evaluated by the server (``/api/v1/query_range``).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _output import emit
from _services import free_port

from cloud_core.tsdb import Point, Query, SQLiteStore, VictoriaMetricsStore
from cloud_core.tsdb.sqlite import SLICE_MS

METRICS = ("temperature", "humidity", "pressure", "battery")
DAY = 86_400_000


def day_points(device: str, start: int, seed: int) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(
            device,
            start + s * 1000 + rng.randrange(0, 500),
            {
                "temperature": round(rng.gauss(21, 2), 2),
                "humidity": round(rng.uniform(30, 60), 1),
                "pressure": round(rng.gauss(1013, 5), 1),
                "battery": round(rng.uniform(3.0, 4.2), 3),
            },
        )
        for s in range(86_400)
    ]


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    await call()  # warm the caches and connections once
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, round(0.95 * len(samples)) - 1)], 2),
        "min_ms": round(samples[0], 2),
    }


def bare_sql(path: Path, sid: int, start: int) -> Callable[[], Awaitable[Any]]:
    conn = sqlite3.connect(path, check_same_thread=False)
    sql = f"""
    WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s WHERE n < :last)
    SELECT (p.slice * {SLICE_MS} + p.ms) / 60000 AS minute, avg(p.value)
    FROM s CROSS JOIN points p ON p.slice = s.n AND p.series_id = :sid GROUP BY minute
    """
    args = {"first": start // SLICE_MS, "last": (start + DAY) // SLICE_MS - 1, "sid": sid}

    async def run() -> Any:
        return conn.execute(sql, args).fetchall()

    return run


def start_victoria(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        raise SystemExit("needs the victoria-metrics binary (Debian package victoria-metrics)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={workdir / 'vm'}",
            "-retentionPeriod=100y",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("victoria-metrics did not start")


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - DAY - 3_600_000  # the last full day, an hour back
    device = "dev-00000"
    one = Query.aligned([device], ["temperature"], start, start + DAY, 60_000, "mean")
    four = Query.aligned([device], list(METRICS), start, start + DAY, 60_000, "mean")
    raw = Query.aligned([device], ["temperature"], start, start + DAY, 90_000, "mean")
    out: dict[str, Any] = {}
    path = workdir / "ts.db"
    async with SQLiteStore(path, retention_interval=86_400) as store:
        written = time.perf_counter()
        for d in range(args.devices):
            points = day_points(f"dev-{d:05d}", start, seed=d)
            for i in range(0, len(points), 5000):
                await store.write(points[i : i + 5000])
        out["sqlite_points"] = store.stats()["points_written"]
        out["sqlite_write_seconds"] = round(time.perf_counter() - written, 1)
        out["sqlite_file_mb"] = round(sum(f.stat().st_size for f in workdir.glob("ts.db*")) / 1e6, 1)  # noqa: ASYNC240
        assert len((await store.query(one)).series[device]["temperature"]) == 1440
        out["sqlite_store_1m_mean_one_metric"] = await timed(lambda: store.query(one), args.repeat)
        out["sqlite_store_1m_mean_four_metrics"] = await timed(lambda: store.query(four), args.repeat)
        out["sqlite_store_90s_mean_from_raw_points"] = await timed(lambda: store.query(raw), args.repeat)
    with sqlite3.connect(path) as conn:
        sid = conn.execute(
            "SELECT id FROM series WHERE device = ? AND metric = 'temperature'", (device,)
        ).fetchone()[0]
    out["sqlite_bare_sql_group_by_minute"] = await timed(bare_sql(path, sid, start), args.repeat)
    target = out["sqlite_store_1m_mean_one_metric"]["median_ms"]
    out["target_ms"] = 50
    out["target_met"] = target <= 50

    if not args.skip_victoria:
        proc, url = start_victoria(workdir)
        try:
            async with VictoriaMetricsStore(url) as store:
                points = day_points(device, start, seed=0)
                for i in range(0, len(points), 5000):
                    await store.write(points[i : i + 5000])
                with urllib.request.urlopen(f"{url}/internal/force_flush"):  # noqa: ASYNC210 - setup, not timed
                    pass
                answer = await store.query(one)
                assert sum(v is not None for v in answer.series[device]["temperature"]) == 1440
                out["victoria_store_1m_mean_one_metric"] = await timed(lambda: store.query(one), args.repeat)
                out["victoria_store_1m_mean_four_metrics"] = await timed(
                    lambda: store.query(four), args.repeat
                )
                form = urllib.parse.urlencode(
                    {
                        "query": f'avg_over_time(fieldline_temperature{{device="{device}"}}[1m])',
                        "start": str((start + 60_000) / 1000),
                        "end": str((start + DAY) / 1000),
                        "step": "60",
                        "nocache": "1",
                    }
                ).encode()

                async def native() -> Any:
                    request = urllib.request.Request(f"{url}/api/v1/query_range", data=form)
                    return await asyncio.to_thread(lambda: urllib.request.urlopen(request).read())

                out["victoria_bare_query_range_avg_over_time"] = await timed(native, args.repeat)
        finally:
            proc.terminate()
            proc.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--cpu", type=int, default=0, help="the core this process runs on (-1: do not pin)")
    parser.add_argument("--skip-victoria", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "pinned_cpu": args.cpu,
        "devices": args.devices,
        "samples_per_series": 86_400,
        "load_average": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="fieldline-bench-") as tmp:
        result.update(asyncio.run(measure(args, Path(tmp))))
    emit(result, args.out)


if __name__ == "__main__":
    main()
