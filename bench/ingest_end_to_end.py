"""End-to-end ingest rate: uplink batches queued at a local Mosquitto → ``cloud_core.ingest.Ingest`` → points
committed to the time-series store (SQLite by default), marks and ``last_seen`` in the registry, messages
acknowledged. Compared, in the same run and on the same backlog, with:

- ``bare_receive``: a bare aiomqtt subscriber draining the same messages (the floor: the broker and the client);
- ``decode_only``: ``decode_batch`` + ``points_from_batch`` over the same payloads, in a loop (the CPU cost of
  understanding a batch, without any I/O);
- ``store_only``: the same points written to a fresh time-series store of the same kind, in writes of
  ``ingest.batch_points`` as ingest's flushes make them, one after the other (the store's own ceiling).

    python bench/ingest_end_to_end.py [--batches 400] [--records 500] [--gateways 10]
                                      [--database-url postgresql+asyncpg://...] [--out bench/results/ingest_end_to_end.json]

Method: both consumers first connect with a persistent session and subscribe, then go away; the publisher queues
the whole backlog at the broker; then each consumer reconnects and drains it, timed from connecting to the last
message handled (for ingest: written, committed and acknowledged). Draining a queued backlog measures the receive
path alone, independent of how fast a publisher can publish on the same cores. Each batch holds ``--records``
raw records of one device with two metrics, as an agent's outbox seals them. A *point* is one record (one device
at one instant, ``cloud_core.tsdb.Point``); a *value* is one metric of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from _output import emit
from _services import mosquitto

from cloud_core.broker import connect_properties
from cloud_core.ingest import Ingest
from cloud_core.metrics import CloudMetrics
from cloud_core.services import open_services
from cloud_core.settings import BrokerSettings, CloudSettings
from cloud_core.tsdb import Aggregation, Query, open_timeseries, points_from_batch
from fieldline.wire import RawRecord, RecordKind, decode_batch, encode_batch, encode_body_items, encode_record

BARE_FILTER = "fl/+/up/telemetry"


def backlog(batches: int, records: int, gateways: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of every batch: gateway ``g`` sends seqs 1.. of its devices' readings."""
    t0 = time.time() - 86_400
    out = []
    for n in range(batches):
        gateway, seq = f"gw-{n % gateways}", n // gateways + 1
        device = f"{gateway}-dev-{seq % 20}"
        items = [
            encode_record(
                RawRecord(
                    device, t0 + seq * records + i, {"temperature": 20.0 + i % 50 * 0.1, "humidity": 40.5}
                )
            )
            for i in range(records)
        ]
        payload = encode_batch(
            gateway,
            seq,
            RecordKind.RAW,
            records,
            encode_body_items(items),
            backfill=False,
            sent_at=time.time(),
        )
        out.append((f"fl/{gateway}/up/telemetry", payload))
    return out


async def publish(port: int, messages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 1000
        for start in range(0, len(messages), 500):
            chunk = messages[start : start + 500]
            await asyncio.gather(*(client.publish(topic, payload, qos=1) for topic, payload in chunk))
    return time.perf_counter() - started


def bare_client(port: int) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-bare",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=connect_properties(session_expiry=3600, receive_maximum=1000),
    )


async def bare_receive(port: int, count: int) -> float:
    started = time.perf_counter()
    received = 0
    async with bare_client(port) as client:
        async for _ in client.messages:
            received += 1
            if received == count:
                break
    return time.perf_counter() - started


async def store_only(settings: CloudSettings, messages: list[tuple[str, bytes]]) -> float:
    """Seconds to write every point into a fresh store, ``ingest.batch_points`` records per write."""
    points = [p for _, payload in messages for p in points_from_batch(decode_batch(payload))]
    size = settings.ingest.batch_points
    fresh = settings.model_copy(update={"data_dir": settings.data_dir / "store-only"})
    fresh.data_dir.mkdir(parents=True)
    async with open_timeseries(fresh) as store:
        started = time.perf_counter()
        for start in range(0, len(points), size):
            await store.write(points[start : start + size])
        return time.perf_counter() - started


def decode_only(messages: list[tuple[str, bytes]]) -> tuple[float, int, int]:
    """Seconds, points and metric values of decoding every batch into points."""
    started = time.perf_counter()
    points = values = 0
    for _, payload in messages:
        batch_points = points_from_batch(decode_batch(payload))
        points += len(batch_points)
        values += sum(len(p.values) for p in batch_points)
    return time.perf_counter() - started, points, values


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fl-ingest-bench-"))
    broker = contextlib.ExitStack()
    port = broker.enter_context(mosquitto(workdir, "max_queued_messages 0\nmax_inflight_messages 0\n"))
    try:
        data: dict[str, Any] = {"data_dir": workdir / "cloud", "broker": {"host": "127.0.0.1", "port": port}}
        if args.database_url:
            data["database"] = {"url": args.database_url}
        settings = CloudSettings.model_validate(data)
        async with open_services(settings.model_copy(update={"broker": BrokerSettings()})) as services:
            store = services.parts["tsdb"]

            def ingest() -> Ingest:
                return Ingest(settings, services.database, services.bus, CloudMetrics(), store)

            async with ingest() as primed:  # the session and its shared subscription stay at the broker
                while not primed.connected:  # noqa: ASYNC110 - the part exposes a flag, not an event
                    await asyncio.sleep(0.01)
            async with bare_client(port) as client:
                await client.subscribe(BARE_FILTER, qos=1)

            encode_started = time.perf_counter()
            messages = backlog(args.batches, args.records, args.gateways)
            encode_s = time.perf_counter() - encode_started
            publish_s = await publish(port, messages)
            bare_s = await bare_receive(port, len(messages))
            decode_s, points, values = decode_only(messages)
            store_s = await store_only(settings, messages)

            started = time.perf_counter()
            consumer = ingest()
            async with consumer:
                while consumer.stats.batches + consumer.stats.duplicates < len(messages) or not consumer.idle:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)  # polling what is measured: 5 ms is far below the run's length
                ingest_s = time.perf_counter() - started
            stats = consumer.stats
            device = "gw-0-dev-1"
            answer = await store.query(
                Query.aligned(
                    [device], ["temperature"], 0, int(time.time() * 1000), 86_400_000 * 7, Aggregation.COUNT
                )
            )
            stored = int(sum(v or 0 for v in answer.series[device]["temperature"]))
        total_records = args.batches * args.records
        return {
            "benchmark": "ingest_end_to_end",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "database": "postgresql" if args.database_url else "sqlite",
            "timeseries": settings.timeseries.backend,
            "batches": args.batches,
            "records_per_batch": args.records,
            "gateways": args.gateways,
            "encode_s": round(encode_s, 3),
            "publish_s": round(publish_s, 3),
            "bare_receive": {
                "seconds": round(bare_s, 3),
                "batches_per_s": round(args.batches / bare_s),
                "records_per_s": round(total_records / bare_s),
            },
            "decode_only": {
                "seconds": round(decode_s, 3),
                "batches_per_s": round(args.batches / decode_s),
                "points_per_s": round(points / decode_s),
                "values_per_s": round(values / decode_s),
            },
            "store_only": {
                "seconds": round(store_s, 3),
                "points_per_s": round(points / store_s),
                "values_per_s": round(values / store_s),
            },
            "end_to_end": {
                "seconds": round(ingest_s, 3),
                "batches_per_s": round(args.batches / ingest_s),
                "points_per_s": round(stats.points / ingest_s),
                "values_per_s": round(values / ingest_s),
                "flushes": stats.flushes,
                "points_per_flush": round(stats.points / max(1, stats.flushes)),
                "ratio_to_store_only": round(store_s / ingest_s, 3),
                "ratio_to_bare_receive": round(bare_s / ingest_s, 3),
            },
            "check": {
                "batches": stats.batches,
                "points": stats.points,
                "duplicates": stats.duplicates,
                "quarantined": stats.quarantined,
                "sample_device_stored": stored,
            },
        }
    finally:
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest_end_to_end.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    emit(result, args.out)
    sys.exit(0 if result["check"]["batches"] == args.batches and result["check"]["quarantined"] == 0 else 1)


if __name__ == "__main__":
    main()
