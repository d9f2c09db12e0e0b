"""Telemetry ingest into the time-series stores, against bare writers measured in the same run.

    python bench/cloud_ingest.py [--devices 1000] [--seconds 300] [--rounds 3] [--cpu 0]
                                 [--skip-sqlite] [--skip-victoria] [--gc service|python]
                                 [--out bench/results/cloud_ingest.json]

A *point* is one metric value of one device at one time. The data: ``devices`` devices with 4 metrics at 1 Hz
for ``seconds``, sealed into raw uplink batches of 600 records (about 55 KiB of CBOR before zlib) with
``fieldline.wire.encode_batch``, as gateways send them. The benchmark process runs on one core (``--cpu``).

SQLite
- store: uplink batches ingested the way ``cloud_core.ingest`` does it (a reader task runs ``decode_batch`` and
  ``encode_series`` into a bounded queue, one message per turn of the event loop as a network reader gets them;
  a writer task takes up to ``ingest.batch_points`` records and awaits ``write_series`` as ``UplinkWriter``
  does: ``points_from_batch`` and ``SQLiteStore.write``), timed until the last commit: series lookup, points,
  1 min and 1 h rollups;
- bare: ``executemany`` of prebuilt ``(slice, series_id, ms, value)`` rows into the same ``points`` table, with as
  many rows per transaction as the store's group commit took (no decoding, no rollups).

VictoriaMetrics (a server started for the run, on the other cores)
- store: the same ingest loop into ``VictoriaMetricsStore`` (the reader encodes each batch's line protocol
  straight from the decoded records, ``encode_series``; a flush joins the bodies into requests of about
  ``victoria.POINTS_PER_REQUEST`` lines sent with influxdb-client on 2 write threads, ``write_series``);
- bare: the same line protocol, prebuilt, in requests of ``BARE_POINTS_PER_REQUEST`` points (fixed, so that
  tuning the store's request size does not move its baseline), POSTed to ``/api/v2/write`` with ``http.client``
  on 2 connections;
- bare encoding: the same, but encoding the line protocol from decoded points after the clock starts.

Each is measured ``rounds`` times, alternating, on fresh files or fresh time ranges; the best round of each is
compared (the machine may be shared) and every round is printed. Rates are given per wall-clock second and per
CPU second the process used (all its threads; for VictoriaMetrics also the server's CPU, read from /proc), the
latter being what one whole core yields when other work shares the machine. Prints one JSON document.

The process applies the garbage-collector policy ``fieldline cloud serve`` applies once it has started
(``fieldline.gc_policy``: ``gc.freeze()`` and a generation-0 threshold of 10,000); ``--gc python`` measures
with Python's defaults instead; the JSON records the one used.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _output import emit
from _services import free_port

from cloud_core.settings import IngestSettings
from cloud_core.tsdb import SQLiteStore, VictoriaMetricsStore, points_from_batch
from cloud_core.tsdb.lineprotocol import EncodedBatch, encode
from cloud_core.tsdb.sqlite import SCHEMA, SLICE_MS
from cloud_core.uplink_writer import encode_series, write_series
from fieldline import gc_policy
from fieldline.wire import Batch, RawRecord, RecordKind, decode_batch, encode_batch, encode_body

METRICS = ("temperature", "humidity", "pressure", "battery")
RECORDS_PER_BATCH = 600
BATCH_RECORDS = IngestSettings().batch_points
QUEUE_SIZE = IngestSettings().queue_size
BARE_POINTS_PER_REQUEST = 5_000


def payloads(devices: int, seconds: int, start: float, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    records = [
        RawRecord(
            f"dev-{d:05d}",
            start + s + rng.randrange(0, 1000) / 1000,
            {
                "temperature": round(rng.gauss(21, 2), 2),
                "humidity": round(rng.uniform(30, 60), 1),
                "pressure": round(rng.gauss(1013, 5), 1),
                "battery": round(rng.uniform(3.0, 4.2), 3),
            },
        )
        for s in range(seconds)
        for d in range(devices)
    ]
    out = []
    for seq, i in enumerate(range(0, len(records), RECORDS_PER_BATCH), start=1):
        part = records[i : i + RECORDS_PER_BATCH]
        body = encode_body(part)
        out.append(
            encode_batch("gw-bench", seq, RecordKind.RAW, len(part), body, backfill=False, sent_at=start)
        )
    return out


async def drive(store: Any, batches: list[bytes]) -> tuple[int, float, float]:
    """Ingest ``batches`` as ``cloud_core.ingest`` does: one task decodes them (and encodes their points for a
    store that encodes, ``encode_series``) into a bounded queue, one task takes up to ``BATCH_RECORDS`` records
    of decoded batches at a time and awaits ``write_series`` of them (as ``UplinkWriter`` does: the encoded
    batches for a store that encodes, else the batches). Returns (points the store counted, wall seconds, CPU
    seconds of this process, all threads)."""
    queue: asyncio.Queue[tuple[Batch, EncodedBatch | None] | None] = asyncio.Queue(QUEUE_SIZE)
    written = store.stats()["points_written"]

    async def read() -> None:
        for payload in batches:
            batch = decode_batch(payload)
            await queue.put((batch, encode_series(store, batch)))
            await asyncio.sleep(0)  # a network reader gets one message per turn of the event loop
        await queue.put(None)

    async def write() -> None:
        done = False
        while not done:
            first = await queue.get()
            if first is None:
                return
            flush, records = [first], len(first[0].records)
            while records < BATCH_RECORDS and not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    done = True
                    break
                flush.append(more)
                records += len(more[0].records)
            await write_series(store, [batch if encoded is None else encoded for batch, encoded in flush])

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(read(), write())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return int(store.stats()["points_written"] - written), seconds, cpu


def rates(points: int, seconds: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "points": points,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
        "cpu_seconds": round(cpu, 3),
        "points_per_cpu_s": round(points / cpu),
        **extra,
    }


# --------------------------------------------------------------------------------------------------- SQLite


def sqlite_store(workdir: Path, batches: list[bytes]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        path = workdir / f"store-{time.monotonic_ns()}.db"
        async with SQLiteStore(path, retention_interval=3600) as store:
            points, seconds, cpu = await drive(store, batches)
            stats = store.stats()
        size = sum(f.stat().st_size for f in workdir.glob(f"{path.name}*"))  # noqa: ASYNC240 - after the timing
        per = round(stats["points_written"] / stats["transactions"])
        return rates(
            points, seconds, cpu, points_per_transaction=per, file_bytes_per_point=round(size / points, 1)
        )

    return asyncio.run(run())


def sqlite_bare(workdir: Path, batches: list[bytes], per_transaction: int) -> dict[str, Any]:
    ids: dict[tuple[str, str], int] = {}
    rows = []
    for payload in batches:
        for p in points_from_batch(decode_batch(payload)):
            for name, value in p.values.items():
                sid = ids.setdefault((p.device_id, name), len(ids) + 1)
                rows.append((p.ts // SLICE_MS, sid, p.ts % SLICE_MS, value))
    path = workdir / f"bare-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.executescript(SCHEMA)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), per_transaction):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", rows[i : i + per_transaction])
        conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return rates(len(rows), seconds, cpu)


# --------------------------------------------------------------------------------------------------- VictoriaMetrics


def start_victoria(workdir: Path, cpus: set[int]) -> tuple[subprocess.Popen[bytes], str]:
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
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
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


def cpu_of(pid: int) -> float:
    """CPU seconds a process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server(result: dict[str, Any], server_cpu: float) -> dict[str, Any]:
    total = result["cpu_seconds"] + server_cpu
    return {
        **result,
        "server_cpu_seconds": round(server_cpu, 3),
        "points_per_total_cpu_s": round(result["points"] / total),
    }


def victoria_bare(url: str, bodies: list[bytes], points: int) -> dict[str, Any]:
    """Only the server: POSTs of line protocol encoded before the clock starts."""
    return _post_all(url, lambda: bodies, points)


def victoria_bare_encoding(url: str, chunks: list[Any], points: int) -> dict[str, Any]:
    """A bare writer that starts from values in memory: encodes line protocol, then POSTs it."""
    return _post_all(url, lambda: [encode(chunk) for chunk in chunks], points)


def _post_all(url: str, make_bodies: Any, points: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    local = threading.local()

    def post(body: bytes) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/api/v2/write?precision=ms", body)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 204:
            raise RuntimeError(f"write answered {answer.status}")

    with ThreadPoolExecutor(2) as pool:
        started, cpu = time.perf_counter(), time.process_time()
        list(pool.map(post, make_bodies()))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return rates(points, seconds, cpu)


def victoria_store(url: str, batches: list[bytes]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with VictoriaMetricsStore(url) as store:
            points, seconds, cpu = await drive(store, batches)
        return rates(points, seconds, cpu)

    return asyncio.run(run())


def best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rounds, key=lambda r: r["points_per_s"])


def sqlite_rounds(workdir: Path, batches: list[bytes], rounds: int) -> dict[str, Any]:
    """The SQLite rounds: the store, then bare ``executemany`` with as many rows per transaction."""
    store_rounds, bare_rounds = [], []
    for _ in range(rounds):
        store_rounds.append(sqlite_store(workdir, batches))
        per = store_rounds[-1]["points_per_transaction"]
        bare_rounds.append(sqlite_bare(workdir, batches, per))
        print(json.dumps({"sqlite": {"store": store_rounds[-1], "bare": bare_rounds[-1]}}), file=sys.stderr)
    store, bare = best(store_rounds), best(bare_rounds)
    return {
        "store": store,
        "bare_executemany": bare,
        "store_vs_bare": round(store["points_per_s"] / bare["points_per_s"], 3),
        "target_points_per_s": 150_000,
        "target_met": store["points_per_s"] >= 150_000,
        "target_met_per_cpu_second": store["points_per_cpu_s"] >= 150_000,
        "rounds": {"store": store_rounds, "bare": bare_rounds},
    }


def victoria_rounds(
    workdir: Path, devices: int, seconds: int, rounds: int, start: float, server_cpus: set[int]
) -> dict[str, Any]:
    """The VictoriaMetrics rounds, against a server started here on ``server_cpus`` (all when empty)."""
    proc, url = start_victoria(workdir, server_cpus)
    try:
        warm = payloads(devices, 5, start - 7200, seed=2)  # register every series first
        victoria_store(url, warm)
        store_rounds, bare_rounds, encoding_rounds = [], [], []
        for r in range(rounds):
            shift = (3 * r + 1) * (seconds + 60)
            ours = payloads(devices, seconds, start - 86400 + shift, seed=10 + r)
            theirs = payloads(devices, seconds, start - 86400 + shift + seconds + 30, seed=20 + r)
            decoded = [p for payload in theirs for p in points_from_batch(decode_batch(payload))]
            points = sum(len(p.values) for p in decoded)
            bodies = [
                encode(decoded[i : i + BARE_POINTS_PER_REQUEST])
                for i in range(0, len(decoded), BARE_POINTS_PER_REQUEST)
            ]
            before = cpu_of(proc.pid)
            bare_rounds.append(with_server(victoria_bare(url, bodies, points), cpu_of(proc.pid) - before))
            again = [
                p
                for payload in payloads(
                    devices,
                    seconds,
                    start - 86400 + shift + 2 * (seconds + 30),
                    seed=30 + r,
                )
                for p in points_from_batch(decode_batch(payload))
            ]
            chunks = [
                again[i : i + BARE_POINTS_PER_REQUEST] for i in range(0, len(again), BARE_POINTS_PER_REQUEST)
            ]
            before = cpu_of(proc.pid)
            encoding_rounds.append(
                with_server(
                    victoria_bare_encoding(url, chunks, sum(len(p.values) for p in again)),
                    cpu_of(proc.pid) - before,
                )
            )
            before = cpu_of(proc.pid)
            store_rounds.append(with_server(victoria_store(url, ours), cpu_of(proc.pid) - before))
            print(
                json.dumps({"victoria": {"store": store_rounds[-1], "bare": bare_rounds[-1]}}),
                file=sys.stderr,
            )
    finally:
        proc.terminate()
        proc.wait(30)
    store, bare, encoding = best(store_rounds), best(bare_rounds), best(encoding_rounds)
    ratio = store["points_per_s"] / bare["points_per_s"]
    cpu_ratio = store["points_per_total_cpu_s"] / bare["points_per_total_cpu_s"]
    return {
        "server_cpus": sorted(server_cpus) or "all",
        "store": store,
        "bare_line_protocol_post": bare,
        "bare_writer_encoding_line_protocol": encoding,
        "store_vs_bare_encoding_writer": round(store["points_per_s"] / encoding["points_per_s"], 3),
        "store_vs_bare": round(ratio, 3),
        "store_vs_bare_per_total_cpu_second": round(cpu_ratio, 3),
        "target_ratio": 0.6,
        "target_met": ratio >= 0.6,
        "target_met_vs_bare_encoding_writer": store["points_per_s"] >= 0.6 * encoding["points_per_s"],
        "rounds": {"store": store_rounds, "bare": bare_rounds, "bare_encoding": encoding_rounds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the core this process runs on (-1: do not pin)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-victoria", action="store_true")
    parser.add_argument(
        "--gc",
        choices=["service", "python"],
        default="service",
        help="the cloud core's garbage-collector policy (default) or Python's defaults",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    others: set[int] = set()
    if args.cpu >= 0:
        everything = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {args.cpu})
        others = (everything - {args.cpu}) or everything
    start = time.time() - args.seconds - 3600
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "pinned_cpu": args.cpu,
        "devices": args.devices,
        "metrics": len(METRICS),
        "seconds_of_data": args.seconds,
        "points_per_round": args.devices * len(METRICS) * args.seconds,
    }
    if args.gc == "service":
        gc_policy.apply()
    result["gc"] = {"policy": args.gc, "threshold": gc.get_threshold()}
    with tempfile.TemporaryDirectory(prefix="fieldline-bench-") as tmp:
        workdir = Path(tmp)
        batches = payloads(args.devices, args.seconds, start, seed=1)
        result["uplink_batches"] = len(batches)
        result["uplink_bytes_per_batch"] = round(sum(map(len, batches)) / len(batches))

        if not args.skip_sqlite:
            result["sqlite"] = sqlite_rounds(workdir, batches, args.rounds)
        if not args.skip_victoria:
            result["victoriametrics"] = victoria_rounds(
                workdir, args.devices, args.seconds, args.rounds, start, others
            )

    emit(result, args.out)


if __name__ == "__main__":
    main()
