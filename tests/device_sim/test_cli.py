"""``fieldline sim`` as a user runs it: a real subprocess per call, a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.device_sim.mqttkit import subscriber
from tests.device_sim.runkit import COLD_ROOM, ROOMS, fleet_file
from tests.servicekit import Mosquitto

BAD_FLEET = """\
seed: 1
devices:
  - type: thermo
    id: room-{n}
    count: 2
    interval: 10s
    metrics:
      temperature: {type: sine, period: -5}
  - type: thermo
    id: hall-{n}
    interval: soon
    metrics:
      humidity: {type: constant, value: 1}
"""


def sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldline", "sim", *args], capture_output=True, text=True, timeout=timeout
    )


def test_validate_prints_the_templates(tmp_path: Path) -> None:
    result = sim("validate", str(fleet_file(tmp_path, ROOMS)))
    assert result.returncode == 0, result.stderr
    assert "5 devices, seed 7" in result.stdout
    assert "thermo" in result.stdout


def test_validate_reports_every_error_with_its_line(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, BAD_FLEET)
    result = sim("validate", str(path))
    assert result.returncode == 1
    assert f"{path}:8:" in result.stderr  # the sine's period
    assert "period" in result.stderr
    assert f"{path}:11:" in result.stderr  # interval: soon
    assert "interval" in result.stderr
    assert "2 error(s)" in result.stderr


def test_run_with_a_duration_prints_the_summary(mosquitto: Mosquitto, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = sim(
        "run", str(fleet_file(tmp_path, ROOMS)), "--broker", mosquitto.url, "--duration", "1m", "--speed", "60",
        "--seed", "7", "--summary", str(summary),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(summary.read_text())
    assert document["devices"] == {"mqtt": 5, "coap": 0}
    assert document["published"] == document["produced"]["telemetry"] > 0
    assert document["mqtt"]["connects"] >= 5


def test_run_without_a_broker_is_a_usage_error(tmp_path: Path) -> None:
    result = sim("run", str(fleet_file(tmp_path, ROOMS)), "--duration", "1s")
    assert result.returncode == 2
    assert "broker" in result.stderr


async def test_sigterm_stops_a_run_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = fleet_file(tmp_path, COLD_ROOM)
    async with subscriber(mosquitto.port, "devices/+/state") as (_, received):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fieldline", "sim", "run", str(path), "--broker", mosquitto.url, "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await received.wait_for(lambda r: len(r.messages) == 2)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        await received.wait_for(lambda r: len(r.messages) == 4)
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout)["mqtt"]["connects"] == 2
    final = [orjson.loads(m.payload) for m in received.messages[2:]]
    assert [s["state"] for s in final] == ["offline", "offline"]
    assert all("ts" in s for s in final)  # published by the devices, not wills


def test_load_writes_its_report(mosquitto: Mosquitto, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = sim(
        "load", str(fleet_file(tmp_path, ROOMS)), "--broker", mosquitto.url, "--rate", "500", "--duration", "1s",
        "--report", str(report), "--connections", "2", "--qos", "1", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(report.read_text())
    assert document["connections"] == 2
    assert document["sent"] == document["acknowledged"] > 0


def test_replay_exits_1_when_rows_were_bad(mosquitto: Mosquitto, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"ts": 1700000000, "device_id": "d-1", "metrics": {"t": 1}}\n{"ts": 1700000001, "device_id": "d-1"}\n'
    )
    result = sim("replay", str(data), "--broker", mosquitto.url, "--as-fast-as-possible")
    assert result.returncode == 1
    assert f"{data}:2: metrics must be a non-empty object" in result.stderr
    assert json.loads(result.stdout)["sent"] == 1
    missing = sim("replay", str(tmp_path / "nope.csv"), "--broker", mosquitto.url)
    assert missing.returncode == 2
    assert "cannot open" in missing.stderr
