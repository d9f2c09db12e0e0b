"""Cleaning-step throughput and state size; prints one JSON document.

Throughput: points per second through each step alone, and through ``range`` + ``outlier`` (hampel, window 30)
together, for 1,000 devices x 2 metrics (temperature, humidity), after a warm-up that fills every window. The
baseline is the same loop calling a step that does nothing, measured in the same run.

Memory: bytes of step state per device+metric (per device for the per-device steps), measured with
tracemalloc over 1,000 devices x 3 metrics fed until their windows are full.

    .venv/bin/python bench/pipeline_steps.py [--devices 1000] [--points 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections import Counter
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter

from edge_agent.pipeline.base import ListSink, Step, StepContext
from edge_agent.pipeline.steps import CleaningStepConfig, build_step
from fieldline.wire import Point

STEP_CONFIG: TypeAdapter[Any] = TypeAdapter(CleaningStepConfig)
WARM_UP = 60  # points per device before timing: fills outlier windows of 30 and most dedupe windows

LIMITS = {"temperature": {"min": -40, "max": 125}, "humidity": {"min": 0, "max": 100}}
RANGE = {"type": "range", "limits": LIMITS}
STEPS: dict[str, list[dict[str, Any]]] = {
    "range": [RANGE],
    "nulls_drop": [{"type": "nulls"}],
    "nulls_last": [{"type": "nulls", "action": "last", "max_age": "5m"}],
    "unit": [{"type": "unit", "conversions": {"temperature": {"convert": "c_to_f", "digits": 2}}}],
    "rename": [{"type": "rename", "map": {"temperature": "temp_c"}}],
    "drop": [{"type": "drop", "metrics": ["rssi", "debug_*"]}],
    "dedupe": [{"type": "dedupe", "window": 64}],
    "outlier_hampel": [{"type": "outlier", "method": "hampel", "window": 30}],
    "outlier_zscore": [{"type": "outlier", "method": "zscore", "window": 30}],
    "stuck": [{"type": "stuck", "count": 10}],
    "rate_limit": [{"type": "rate_limit", "interval": "500ms"}],
    "rate_limit_per_metric": [{"type": "rate_limit", "interval": "500ms", "metrics": ["temperature"]}],
    "range+outlier_hampel": [RANGE, {"type": "outlier", "method": "hampel", "window": 30}],
}

#: Per device+metric (or per device) state to measure; windows are filled before measuring.
STATEFUL: dict[str, dict[str, Any]] = {
    "nulls_last": {"type": "nulls", "action": "last", "max_age": "5m"},
    "outlier_hampel_w30": {"type": "outlier", "method": "hampel", "window": 30},
    "outlier_zscore_w30": {"type": "outlier", "method": "zscore", "window": 30},
    "outlier_hampel_w1024": {"type": "outlier", "method": "hampel", "window": 1024},
    "stuck": {"type": "stuck", "count": 10},
    "rate_limit_per_metric": {"type": "rate_limit", "interval": "500ms", "metrics": ["*"]},
}
PER_DEVICE: dict[str, dict[str, Any]] = {
    "dedupe_w64": {"type": "dedupe", "window": 64},
    "rate_limit": {"type": "rate_limit", "interval": "500ms"},
}


class _Nothing:
    name = "nothing"

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        return point


@cache
def _readings(devices: int, per_device: int, start: int, seed: int) -> list[tuple[str, float, float, float]]:
    """Interleaved readings of every device, one per second each; ~1% temperature spikes."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + per_device):
        for d in range(devices):
            temperature = 20 + d % 7 + rng.gauss(0, 0.3)
            if rng.random() < 0.01:
                temperature += 15
            humidity = 45 + rng.gauss(0, 1)
            rows.append((f"dev-{d:05d}", 1_700_000_000.0 + i, round(temperature, 2), round(humidity, 1)))
    return rows


def _points(devices: int, per_device: int, start: int, seed: int) -> list[Point]:
    """Fresh points (steps change them in place) of ``_readings``."""
    rows = _readings(devices, per_device, start, seed)
    return [Point(device, ts, {"temperature": t, "humidity": h}) for device, ts, t, h in rows]


def _ctx(drops: Counter[str]) -> StepContext:
    def count(step: str, reason: str, n: int = 1) -> None:
        drops[f"{step}:{reason}"] += n

    return StepContext(ListSink(), count)


def _run(steps: list[Step], points: list[Point], ctx: StepContext) -> float:
    started = time.perf_counter()
    for point in points:
        for step in steps:
            if step.apply(point, ctx) is None:
                break
    return time.perf_counter() - started


def throughput(devices: int, per_device: int, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    cases: dict[str, list[dict[str, Any]]] = {"baseline_noop": [], **STEPS}
    for name, configs in cases.items():
        best = float("inf")
        drops: Counter[str] = Counter()
        for _ in range(repeat):
            steps: list[Step] = [build_step(STEP_CONFIG.validate_python(c)) for c in configs] or [_Nothing()]
            drops.clear()
            ctx = _ctx(drops)
            _run(steps, _points(devices, WARM_UP, 0, seed=1), ctx)
            timed = _points(devices, per_device, WARM_UP, seed=2)
            drops.clear()
            gc.collect()
            best = min(best, _run(steps, timed, ctx))
        n = devices * per_device
        results[name] = {
            "points_per_s": round(n / best),
            "us_per_point": round(best / n * 1e6, 3),
            "drops": dict(drops),
        }
    return results


def _feed(step: Step, devices: int, metrics: int, per_device: int) -> None:
    rng = random.Random(3)
    ctx = _ctx(Counter())
    names = [f"m{j}" for j in range(metrics)]
    for i in range(per_device):
        for d in range(devices):
            step.apply(Point(f"dev-{d:05d}", 1_700_000_000.0 + i, {m: rng.gauss(20, 1) for m in names}), ctx)


def state_bytes(devices: int, metrics: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, config in {**STATEFUL, **PER_DEVICE}.items():
        window = int(config.get("window", 30))
        n_devices = devices if window <= 64 else max(1, devices // 10)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        step = build_step(STEP_CONFIG.validate_python(config))
        _feed(step, n_devices, metrics, per_device=window + 10)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        per = n_devices * metrics if name in STATEFUL else n_devices
        results[name] = {
            "unit": "device+metric" if name in STATEFUL else "device",
            "bytes_each": round(used / per),
            "measured_over": f"{n_devices} devices x {metrics} metrics",
        }
        del step
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200, help="timed points per device")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-metrics", type=int, default=3)
    args = parser.parse_args()
    report = {
        "python": sys.version.split()[0],
        "devices": args.devices,
        "metrics_per_point": 2,
        "timed_points": args.devices * args.points,
        "throughput": throughput(args.devices, args.points, args.repeat),
        "state": state_bytes(args.devices, args.memory_metrics),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
