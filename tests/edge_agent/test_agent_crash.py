"""The agent killed with SIGKILL under load and restarted: nothing the local broker handed over is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from tests.factories import CloudCollector, Publisher, agent_config
from tests.servicekit import Mosquitto, free_port, wait_for_port

PIPELINE = {
    "name": "all",
    "downsample": [
        {"type": "raw", "metrics": ["n"]},
        {
            "type": "window",
            "metrics": ["value"],
            "width": "60s",
            "lateness": "1s",
            "aggregates": ["count", "sum"],
        },
    ],
}


def start_agent(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fieldline", "edge", "run", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def test_sigkill_under_load_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    status_port = free_port()
    config = agent_config(
        tmp_path,
        mosquitto.url,
        cloud_mosquitto.url,
        pipelines=[PIPELINE],
        http={"port": status_port},
        storage={"sync": "full"},
    )
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    log = tmp_path / "agent.log"
    cloud = CloudCollector(cloud_mosquitto.port)
    agent = start_agent(config_path, log)
    wait_for_port(status_port)
    time.sleep(0.5)  # the subscription is made right after the status port opens

    total, kill_at = 6000, 2500
    pub = Publisher(mosquitto.port)
    # All points fall in windows that are still open when the test ends: their counts must come from the
    # journal replay (partial windows flushed at the final SIGTERM) and must add up exactly.
    base = time.time()
    killed = threading.Event()

    def produce() -> None:
        infos = []
        for i in range(total):
            infos.append(pub.telemetry(f"dev-{i % 20}", base + i * 0.0001, {"n": i, "value": 1.0}))
            if i == kill_at:
                os.kill(agent.pid, signal.SIGKILL)
                killed.set()
            if i % 200 == 0:
                time.sleep(0.02)
        pub.wait_all(infos)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    agent.wait(10)
    assert killed.is_set()
    restarted = start_agent(config_path, log)
    try:
        wait_until(
            lambda: len({r.metrics["n"] for r in cloud.raw_points()}) >= total,
            60,
            "points handed to the agent before the kill were lost",
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0, log.read_text()[-3000:]
    wait_until(
        lambda: sum(a.values["count"] for a in cloud.aggregates()) >= total, 20, "window contents were lost"
    )
    pub.close()
    cloud.close()

    ns = Counter(r.metrics["n"] for r in cloud.raw_points())
    assert set(ns) == set(range(total))
    # Exactly-once holds except for messages in the instant between a commit and its acknowledgements.
    duplicates = sum(c - 1 for c in ns.values())
    assert duplicates <= 1024, duplicates
    counted = sum(a.values["count"] for a in cloud.aggregates())
    assert total <= counted <= total + duplicates
