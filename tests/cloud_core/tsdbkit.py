"""Telemetry for the time-series tests: uplink batches built as a gateway builds them (raw records, and 60 s
windows from the edge agent's own downsampler), and a VictoriaMetrics server per test."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from cloud_core.tsdb import Point, points_from_batch
from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.downsample import DownsampleConfig, Downsampler
from fieldline.wire import Point as DevicePoint
from fieldline.wire import RawRecord, RecordKind, decode_batch, encode_batch, encode_body
from tests.servicekit import VictoriaMetrics, free_port

HOUR = 3_600_000


def recent_hour(hours_back: int = 3) -> int:
    """An hour boundary ``hours_back`` hours ago, epoch ms (inside every retention, never in the future)."""
    now = int(time.time() * 1000)
    return now - now % HOUR - hours_back * HOUR


@contextlib.contextmanager
def victoria_server(workdir: Path) -> Iterator[VictoriaMetrics]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = VictoriaMetrics(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def device_readings(devices: list[str], start_ms: int, seconds: int, seed: int = 7) -> list[DevicePoint]:
    """1 Hz readings with two decimals (what sensors send), jittered by a few ms, some ints and booleans."""
    rng = random.Random(seed)
    out = []
    for s in range(seconds):
        for i, device in enumerate(devices):
            ts = (start_ms + s * 1000 + rng.randrange(0, 5)) / 1000
            out.append(
                DevicePoint(
                    device,
                    ts,
                    {
                        "temperature": round(
                            20 + 5 * math.sin((s + 60 * i) / 300) + rng.uniform(-0.5, 0.5), 2
                        ),
                        "humidity": round(rng.uniform(30, 60), 2),
                        "rssi": rng.randrange(-90, -40),
                        "door": rng.random() < 0.1,
                        "mode": "eco",
                    },
                )
            )
    return out


def uplink_batches(gateway: str, kind: RecordKind, records: list[Any], per_batch: int = 500) -> list[bytes]:
    """The records sealed into uplink payloads, as the gateway's outbox and uplink send them."""
    payloads = []
    for seq, i in enumerate(range(0, len(records), per_batch), start=1):
        part = records[i : i + per_batch]
        payloads.append(
            encode_batch(
                gateway, seq, kind, len(part), encode_body(part), backfill=False, sent_at=time.time()
            )
        )
    return payloads


def raw_points(devices: list[str], start_ms: int, seconds: int, seed: int = 7) -> list[Point]:
    """Store points from raw uplink batches of ``device_readings``."""
    records = [
        RawRecord(p.device_id, p.ts, p.metrics) for p in device_readings(devices, start_ms, seconds, seed)
    ]
    return [
        p for b in uplink_batches("gw-1", RecordKind.RAW, records) for p in points_from_batch(decode_batch(b))
    ]


def window_points(devices: list[str], start_ms: int, seconds: int, aggregates: list[str]) -> list[Point]:
    """Store points from the edge downsampler's 60 s windows over ``device_readings`` (``temperature`` and
    ``humidity``), with the agent flushed half-way through a window once (a partial window and its rest)."""
    config = {"type": "window", "width": "60s", "lateness": "5s", "aggregates": aggregates}
    readings = device_readings(devices, start_ms, seconds, seed=11)
    records = []
    halves = (readings[: len(readings) // 2 + 15], readings[len(readings) // 2 + 15 :])
    for half in halves:
        sink = ListSink()
        rules = TypeAdapter(list[DownsampleConfig]).validate_python(
            [{**config, "metrics": ["temperature", "humidity"]}]
        )
        downsampler = Downsampler(rules, sink, StepContext(sink, lambda *_: None))
        for p in half:
            metrics = {k: p.metrics[k] for k in ("temperature", "humidity")}
            downsampler.add(DevicePoint(p.device_id, p.ts, metrics), p.ts)
            downsampler.tick(p.ts)
        downsampler.flush(
            half[-1].ts
        )  # the first half ends with the agent stopping: its last windows are partial
        records.extend(r for r in sink.records if r.kind is RecordKind.AGG)
    return [
        p for b in uplink_batches("gw-1", RecordKind.AGG, records) for p in points_from_batch(decode_batch(b))
    ]
