"""Device simulator scale: 10,000 devices each on its own MQTT connection, and load mode's sustained rate, each
against a bare baseline measured in the same run.

    python bench/sim_scale.py [--devices 10000] [--hold 60] [--rates 40000,60000,80000] [--load-seconds 15]
                              [--footprint 2000] [--skip-scale] [--skip-load] [--out bench/results/sim_scale.json]

Method (every figure is measured in this run, on this machine; each part starts its own Mosquitto with
``max_connections -1`` and the open-files limit raised to the hard limit):
1. Client footprint: N connections (each with a last will) opened by device_sim's MQTT client and by aiomqtt,
   each in a fresh process: connect rate and RSS per connection. This is the measurement behind the choice of
   the simulator's own client (docs/simulator.md).
2. Scale: ``fieldline sim run`` plays a fleet of --devices devices (one connection each, QoS 1, one reading per
   10 s, a last will, subscribed to its commands and to discovery requests) for --hold seconds after all are
   connected. Reported: connect time, devices connected at the end, the simulator's peak RSS (VmHWM), messages
   published, and messages received by a separate counting subscriber on the same broker.
3. Load: ``fieldline sim load examples/fleets/load-5000.yaml`` at QoS 0, its 5,000 devices multiplexed over 4
   connections, at each target rate for --load-seconds; the rate is measured at a separate counting subscriber.
   The baseline is a bare publisher in the same run (one socket writing precomputed packets as fast as it can)
   measured by the same subscriber: the ceiling of this broker and subscriber on this machine. The highest sustained rate is the highest target whose
   subscriber rate reached 97% of the target with nothing lost.
Prints one JSON document (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from _output import emit
from _services import mosquitto as broker

HERE = Path(__file__).resolve().parent
CLIENTS = [sys.executable, str(HERE / "_sim_clients.py")]
SIM = [sys.executable, "-m", "fieldline", "sim"]
SCALE_FLEET = """\
seed: 1
devices:
  - type: sensor
    id: sensor-{{n:05d}}
    count: {devices}
    interval: 10s
    jitter: 1s
    qos: 1
    attributes: {{firmware: "1.0.0"}}
    metrics:
      temperature: {{type: sine, period: 1h, amplitude: 2, offset: 21, random_phase: true}}
      humidity: {{type: random_walk, start: 45, step: 0.5, min: 20, max: 80}}
"""
LOAD_FLEET = HERE.parent / "examples" / "fleets" / "load-5000.yaml"


def raise_nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def mosquitto(workdir: Path) -> AbstractContextManager[int]:
    return broker(
        workdir,
        "persistence false\nmax_connections -1\nmax_queued_messages 100000\nmax_inflight_messages 0\n"
        "sys_interval 1\n",
    )


def last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])


@contextmanager
def counter(port: int, topic_filter: str, silence: float = 3.0) -> Iterator[dict[str, Any]]:
    """A counting subscriber in its own process; the dict is filled with its figures when the block ends."""
    proc = subprocess.Popen(
        [*CLIENTS, "count", str(port), topic_filter, str(silence)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # {"ready": true}: subscribed
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        out, _ = proc.communicate(timeout=600)
        result.update(last_json(out))


def vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return int(next(line.split()[1] for line in status if line.startswith("VmHWM")))
    except (OSError, StopIteration):
        return None


def footprint(n: int, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for client in ("device_sim", "aiomqtt"):
        with mosquitto(workdir) as port:
            out = subprocess.run(
                [*CLIENTS, "footprint", client, str(port), str(n)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            results.append(
                last_json(out.stdout)
                if out.returncode == 0
                else {"client": client, "error": out.stderr[-500:]}
            )
    return results


def scale(devices: int, hold: int, workdir: Path) -> dict[str, Any]:
    fleet = workdir / "scale.yaml"
    fleet.write_text(SCALE_FLEET.format(devices=devices))
    summary = workdir / "scale-summary.json"
    with mosquitto(workdir) as port, counter(port, "devices/+/telemetry", silence=15) as received:
        proc = subprocess.Popen(
            [*SIM, "run", str(fleet), "--broker", f"mqtt://127.0.0.1:{port}", "--duration", f"{hold}s",
             "--summary", str(summary), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kb(proc.pid) or 0)
            time.sleep(0.5)
        stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        return {"error": stderr[-1000:]}
    document = json.loads(summary.read_text())
    return {
        "devices": devices,
        "hold_seconds": hold,
        "connect_seconds": document["mqtt"]["connect_seconds"],
        "connected_at_end": document["mqtt"]["connected_at_end"],
        "connect_failures": document["mqtt"]["connect_failures"],
        "lost": document["mqtt"]["lost"],
        "peak_rss_mb": round(peak / 1024, 1),
        "published": document["published"],
        "unsent": document["unsent"],
        "received_by_subscriber": received.get("received"),
        "target_rss_mb": 400,
    }


def load(rates: list[int], seconds: int, workdir: Path) -> dict[str, Any]:
    fleet = LOAD_FLEET
    with mosquitto(workdir) as port, counter(port, "devices/+/telemetry") as baseline:
        raw = last_json(
            subprocess.run(
                [*CLIENTS, "raw", str(port), str(seconds)], capture_output=True, text=True, check=True
            ).stdout
        )
    steps = []
    for rate in rates:
        report = workdir / f"load-{rate}.json"
        with mosquitto(workdir) as port, counter(port, "devices/+/telemetry") as received:
            subprocess.run(
                [*SIM, "load", str(fleet), "--broker", f"mqtt://127.0.0.1:{port}", "--rate", str(rate),
                 "--duration", f"{seconds}s", "--qos", "0", "--connections", "4", "--report", str(report), "--quiet"],
                check=True, capture_output=True, timeout=seconds + 300,
            )  # fmt: skip
        document = json.loads(report.read_text())
        steps.append(
            {
                "target_rate": rate,
                "sent": document["sent"],
                "achieved_rate": document["achieved_rate"],
                "errors": document["errors"],
                "received": received["received"],
                "subscriber_rate": received["rate"],
            }
        )
    sustained = [
        s["target_rate"]
        for s in steps
        if s["received"] == s["sent"] and s["subscriber_rate"] >= 0.97 * s["target_rate"]
    ]
    return {
        "connections": 4,
        "devices": 5000,
        "qos": 0,
        "seconds_per_step": seconds,
        "baseline_bare_publisher": {
            **raw,
            "subscriber_rate": baseline.get("rate"),
            "received": baseline.get("received"),
        },
        "steps": steps,
        "highest_sustained_rate": max(sustained, default=0),
        "target_rate": 40000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--hold", type=int, default=60)
    parser.add_argument("--rates", default="40000,60000,80000")
    parser.add_argument("--load-seconds", type=int, default=15)
    parser.add_argument("--footprint", type=int, default=2000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    nofile = raise_nofile()
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "open_files_limit": nofile,
            "load_average_at_start": os.getloadavg(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="sim-scale-") as tmp:
        workdir = Path(tmp)
        if args.footprint:
            result["client_footprint"] = footprint(args.footprint, workdir)
        if not args.skip_scale:
            result["scale"] = scale(args.devices, args.hold, workdir)
        if not args.skip_load:
            result["load"] = load([int(r) for r in args.rates.split(",")], args.load_seconds, workdir)
    emit(result, args.out)


if __name__ == "__main__":
    main()
