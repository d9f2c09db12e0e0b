"""Registry read latency: ``GET /api/v1/devices/{id}`` over real HTTP from 100 concurrent clients, on 10,000
devices, against ``GET /healthz`` measured the same way in the same run (the floor of the HTTP stack).

    python bench/cloud_registry.py [--devices 10000] [--clients 100] [--seconds 10] [--rates 250,500,1000]
                                   [--database-url postgresql+asyncpg://...] [--out bench/results/cloud_registry.json]
    BENCH_PROFILE=/tmp/prof python bench/cloud_registry.py      # + a py-spy flame graph of the server

The service runs as ``fieldline cloud serve`` in a subprocess (uvicorn, one process), so the load generator does
not share its event loop. The load generator is a minimal HTTP/1.1 keep-alive client on raw asyncio streams (one
connection per client; ~50 µs of client CPU per request, so the client takes little of the machine from the
server). Devices are registered first through the bulk importer (its rate is reported too); every request asks
for a random one of them with a viewer API key.

Two load models, each for both endpoints:

- ``closed``: every client sends its next request as soon as the previous answer arrives (wrk/hey style). This
  saturates the server: it gives the throughput, and the latency is mostly queueing (clients / throughput).
- ``open``: the clients together offer each of ``--rates`` requests/s on a fixed schedule; latency counts from
  the scheduled send time, so a stalled server is not hidden (no coordinated omission). This is the latency a
  fleet of dashboards and scripts sees below saturation; the 20 ms p99 target is judged at ``--target-rate``
  (1,000 requests/s: each of the 100 clients asks ten times a second).

Every phase also reports the server's CPU time per request, which moves much less than latency when other
work shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _output import emit
from _services import free_port

from cloud_core import bulk_import
from cloud_core.auth import Role, create_key
from cloud_core.bus import EventBus
from cloud_core.db import Database
from cloud_core.models import Gateway


async def populate(url: str, devices: int) -> dict[str, Any]:
    """Register ``devices`` devices behind 20 gateways with labels; returns the import rate and a viewer key."""
    async with Database(url) as database:
        async with database.session() as session:
            session.add_all(Gateway(id=f"gw-{g:02d}", labels={"site": f"s{g % 4}"}) for g in range(20))
        rows = [
            bulk_import.ParsedRow(
                n + 1,
                {
                    "id": f"dev-{n:05d}",
                    "name": f"sensor {n}",
                    "gateway": f"gw-{n % 20:02d}",
                    "manufacturer": "Acme",
                    "model": "T-1000",
                    "firmware_version": "1.4.2",
                    "capabilities": ["temperature", "humidity"],
                    "labels": {"env": "prod" if n % 10 else "test", "site": f"s{n % 4}", "floor": str(n % 7)},
                },
            )
            for n in range(devices)
        ]
        started = time.perf_counter()
        report = await bulk_import.import_devices(database, EventBus(), rows, mode="create")
        elapsed = time.perf_counter() - started
        if report.failed:
            raise RuntimeError(f"import failed: {report.rows[0]}")
        key = await create_key(database, Role.VIEWER, name="bench")
    return {"import_rows_per_s": round(devices / elapsed), "token": key.token}


class Client:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads the answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.auth = f"Authorization: Bearer {token}\r\n".encode()

    async def get(self, path: str) -> int:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n" + self.auth + b"\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def run_load(
    port: int, token: str, paths: list[str], *, clients: int, seconds: float, rate: float | None
) -> dict[str, Any]:
    """Latency percentiles (ms) and throughput of ``clients`` connections; open loop at ``rate`` req/s in total
    when given, closed loop otherwise."""
    conns = [Client(*await asyncio.open_connection("127.0.0.1", port), token) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    start = time.perf_counter() + 0.2
    stop = start + seconds

    async def closed(client: Client) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        while (sent := time.perf_counter()) < stop:
            status = await client.get(rng.choice(paths))
            latencies.append(time.perf_counter() - sent)
            errors += status != 200

    async def open_(client: Client, offset: float, interval: float) -> None:
        nonlocal errors
        due = start + offset
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            status = await client.get(rng.choice(paths))
            latencies.append(time.perf_counter() - due)  # from the scheduled time: no coordinated omission
            errors += status != 200
            due += interval

    if rate is None:
        await asyncio.gather(*(closed(c) for c in conns))
    else:
        interval = clients / rate
        await asyncio.gather(*(open_(c, i * interval / clients, interval) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.writer.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / elapsed),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def serve(workdir: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    config = workdir / "cloud.yaml"
    config.write_text(
        json.dumps({"data_dir": str(workdir / "data"), "database": {"url": url}, "log_level": "WARNING"})
    )
    command = [sys.executable, "-c", "from fieldline.cli import main; main()", "cloud", "serve"]
    command += ["--config", str(config)]
    return subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not start")


def start_profiler(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    target = os.environ.get("BENCH_PROFILE")
    if not target or shutil.which("py-spy") is None:
        return None
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds) + 1)]
    return subprocess.Popen(
        [*command, "--output", str(out / "cloud_registry.svg")], stdout=subprocess.DEVNULL
    )


async def phase(
    server: psutil.Process,
    port: int,
    token: str,
    paths: list[str],
    args: argparse.Namespace,
    rate: float | None,
) -> dict[str, Any]:
    """One load phase, with the server's CPU time per request (robust when other work shares the machine)."""
    before = server.cpu_times()
    figures = await run_load(port, token, paths, clients=args.clients, seconds=args.seconds, rate=rate)
    after = server.cpu_times()
    cpu = after.user + after.system - before.user - before.system
    return figures | {"server_cpu_us_per_request": round(cpu / figures["requests"] * 1e6)}


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'data' / 'registry.db'}"
    populated = await populate(url, args.devices)
    port = free_port()
    server = serve(workdir, url, port)
    results: dict[str, Any] = {}
    try:
        wait_ready(port, server)
        process = psutil.Process(server.pid)
        devices = [f"/api/v1/devices/dev-{n:05d}" for n in range(args.devices)]
        endpoints = {"healthz": ["/healthz"], "device": devices}
        token = populated["token"]
        await run_load(port, token, devices, clients=args.clients, seconds=2, rate=None)  # warm-up
        for name, paths in endpoints.items():
            profiler = start_profiler(server.pid, args.seconds) if name == "device" else None
            results[f"closed_{name}"] = await phase(process, port, token, paths, args, None)
            if profiler is not None:
                profiler.wait()
        for rate in args.rates:
            for name, paths in endpoints.items():
                results[f"open_{rate:g}_{name}"] = await phase(process, port, token, paths, args, rate)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    device, health = (
        results[f"open_{args.target_rate:g}_device"],
        results[f"open_{args.target_rate:g}_healthz"],
    )
    return {
        "import_rows_per_s": populated["import_rows_per_s"],
        **results,
        "target": f"GET /api/v1/devices/{{id}} p99 <= 20 ms at {args.target_rate:g} req/s from {args.clients} clients",
        "target_p99_ms": device["p99_ms"],
        "baseline_healthz_p99_ms": health["p99_ms"],
        "target_met": device["p99_ms"] <= 20 and device["errors"] == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measured phase")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[250.0, 500.0, 1000.0],
        help="open-loop rates to measure, requests/s from all clients together (comma-separated)",
    )
    parser.add_argument("--target-rate", type=float, default=1000.0, help="the rate the target is judged at")
    parser.add_argument(
        "--database-url", help="e.g. postgresql+asyncpg://postgres@127.0.0.1/bench (empty db)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    if args.target_rate not in args.rates:
        args.rates.append(args.target_rate)
    with tempfile.TemporaryDirectory(prefix="fieldline-bench-") as tmp:
        figures = asyncio.run(measure(args, Path(tmp)))
    result = {
        "benchmark": "cloud_registry",
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "database": "postgresql" if args.database_url else "sqlite",
        "devices": args.devices,
        "clients": args.clients,
        "seconds_per_phase": args.seconds,
        **figures,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
