"""Downsampling throughput and memory per series; prints JSON.

1,000 devices x 2 metrics at 1 Hz, fed through a ``Downsampler`` with the agent's calling pattern (``add``
per point with the agent clock, ``tick`` once a second). Each scenario reports points/s, metric values/s and
microseconds per metric value; the ``raw`` pass-through scenario is the baseline measured in the same run
(rule dispatch and one ``RawRecord`` per point). Memory per series is the tracemalloc growth while every
series has one open window (or tracked state), divided by the number of series.

    python bench/downsample.py [--devices 1000] [--seconds 120] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc
from typing import Any

from pydantic import TypeAdapter

from edge_agent.pipeline.base import StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from fieldline.wire import Point, Record

T0 = 1_700_000_040.0  # a minute boundary
METRICS = ("temperature", "humidity")

SCENARIOS: dict[str, dict[str, Any]] = {
    "raw": {"type": "raw"},
    "window_mean_min_max_count": {
        "type": "window",
        "width": "60s",
        "aggregates": ["mean", "min", "max", "count"],
    },
    "window_p95": {"type": "window", "width": "60s", "aggregates": ["mean", "min", "max", "count", "p95"]},
    "window_all": {
        "type": "window",
        "width": "60s",
        "aggregates": [
            "mean",
            "min",
            "max",
            "first",
            "last",
            "count",
            "sum",
            "stddev",
            "p50",
            "p95",
            "p99.9",
        ],
    },
    "deadband": {"type": "deadband", "threshold": 0.5, "heartbeat": "5m"},
    "swinging_door": {"type": "swinging_door", "max_error": 0.5, "max_interval": "10m"},
}


class CountingSink:
    """A sink that only counts, so the figures are the downsampler's own cost."""

    def __init__(self) -> None:
        self.records = 0
        self.marks = 0

    def emit(self, record: Record) -> None:
        self.records += 1

    def mark(self, device_id: str, metric: str, ts: float) -> None:
        self.marks += 1


def make(rule: dict[str, Any], sink: CountingSink) -> Downsampler:
    rules = TypeAdapter(list[DownsampleConfig]).validate_python([rule])
    return Downsampler(rules, sink, StepContext(sink, lambda step, reason, n=1: None))


def points(devices: int, count: int, spacing: float = 1.0, seed: int = 7) -> list[Point]:
    """``count`` points per device, ``spacing`` seconds apart (random walks), devices staggered in between."""
    rng = random.Random(seed)
    level = {(d, m): rng.uniform(10, 30) for d in range(devices) for m in METRICS}
    ids = [f"dev-{d:05d}" for d in range(devices)]
    out = []
    for s in range(count):
        for d in range(devices):
            metrics = {}
            for m in METRICS:
                level[(d, m)] += rng.gauss(0, 0.3)
                metrics[m] = round(level[(d, m)], 2)
            out.append(Point(ids[d], T0 + (s + d / devices) * spacing, metrics))
    return out


def throughput(rule: dict[str, Any], feed: list[Point], repeat: int) -> dict[str, Any]:
    best = float("inf")
    sink = CountingSink()
    for _ in range(repeat):
        sink = CountingSink()
        ds = make(rule, sink)
        gc.collect()
        next_tick = feed[0].ts + 1
        start = time.perf_counter()
        for p in feed:
            ds.add(p, p.ts)
            if p.ts >= next_tick:
                ds.tick(p.ts)
                next_tick += 1
        ds.flush(feed[-1].ts + 3600)
        best = min(best, time.perf_counter() - start)
    values = len(feed) * len(METRICS)
    return {
        "points_per_s": round(len(feed) / best),
        "values_per_s": round(values / best),
        "us_per_value": round(best / values * 1e6, 3),
        "records_out": sink.records,
        "marks": sink.marks,
    }


def memory_per_series(rule: dict[str, Any], devices: int, per_series: int) -> dict[str, Any]:
    """Bytes per (device, metric) held while each series has one open window / tracked state."""
    feed = points(devices, per_series, spacing=min(1.0, 59.0 / per_series))  # all within the first window
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ds = make(rule, CountingSink())
    for p in feed:
        ds.add(p, T0)  # the agent clock stays inside the first window: nothing closes
    del feed
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    series = devices * len(METRICS)
    return {
        "series": series,
        "values_per_series": per_series,
        "bytes_per_series": round(held / series),
        "stats": ds.stats(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    feed = points(args.devices, args.seconds)
    results = {name: throughput(rule, feed, args.repeat) for name, rule in SCENARIOS.items()}
    base = results["raw"]["points_per_s"]
    for r in results.values():
        r["vs_raw"] = round(r["points_per_s"] / base, 3)
    del feed

    memory = {
        "window_mean_min_max_count_60_values": memory_per_series(
            SCENARIOS["window_mean_min_max_count"], args.devices, 60
        ),
        "window_p95_60_values": memory_per_series(SCENARIOS["window_p95"], args.devices, 60),
        "window_p95_full_reservoir_1024_values": memory_per_series(
            SCENARIOS["window_p95"], max(1, args.devices // 10), 1100
        ),
        "deadband": memory_per_series(SCENARIOS["deadband"], args.devices, 60),
        "swinging_door": memory_per_series(SCENARIOS["swinging_door"], args.devices, 60),
    }
    print(
        json.dumps(
            {
                "benchmark": "downsample",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "devices": args.devices,
                "metrics_per_point": len(METRICS),
                "points": args.devices * args.seconds,
                "throughput": results,
                "memory": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
