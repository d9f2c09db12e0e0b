"""End to end through real brokers: devices -> local Mosquitto -> agent -> cloud Mosquitto -> subscriber."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

from edge_agent.agent import Agent
from tests.factories import CloudCollector, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto

WINDOW_PIPELINE = {
    "name": "thermo",
    "match": {"ids": ["thermo-*"]},
    "steps": [{"type": "range", "limits": {"temperature": {"min": -40, "max": 125}}, "action": "drop"}],
    "downsample": [
        {"type": "raw", "metrics": ["door"]},
        {
            "type": "window",
            "metrics": ["*"],
            "width": "2s",
            "lateness": "1500ms",
            "aggregates": ["mean", "min", "max", "count", "sum"],
        },
    ],
}


async def test_aggregates_are_exact(tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)
    config = agent_config(tmp_path, mosquitto.url, cloud_mosquitto.url, pipelines=[WINDOW_PIPELINE])
    rng = random.Random(7)
    expected: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    doors: list[tuple[str, float, bool]] = []
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set(), message="agent never subscribed")
        pub = Publisher(mosquitto.port)
        t0 = math.floor(time.time() / 2) * 2 + 2  # the next window boundary: every point is in the future
        infos = []
        for i in range(200):
            device = f"thermo-{i % 4}"
            ts = t0 + (i // 4) * 0.08  # 4 s of data: two windows per device
            temperature = round(rng.uniform(15, 30), 3)
            if i % 37 == 0:
                temperature = 500.0  # out of range: dropped by the range step
            metrics = {
                "temperature": temperature,
                "humidity": round(rng.uniform(30, 60), 2),
                "door": i % 2 == 0,
            }
            infos.append(pub.telemetry(device, ts, metrics))
            start = math.floor(ts / 2) * 2
            if temperature <= 125:
                expected[(device, "temperature", start)].append(temperature)
            expected[(device, "humidity", start)].append(metrics["humidity"])
            doors.append((device, ts, metrics["door"]))
        pub.wait_all(infos)
        pub.close()
        await eventually(
            lambda: len(cloud.aggregates()) >= len(expected),
            within=30,
            message=f"aggregates missing: got {len(cloud.aggregates())} of {len(expected)}",
        )
        await eventually(lambda: len(cloud.raw_points()) >= len(doors), within=10)
        assert agent.metrics.step_drops[("range", "above_max")] == 6
    cloud.close()

    got = {(a.device_id, a.metric, a.start): a for a in cloud.aggregates()}
    assert set(got) == set(expected)
    for key, values in expected.items():
        agg = got[key]
        assert agg.width == 2
        assert agg.values["count"] == len(values), key
        assert agg.values["min"] == min(values), key
        assert agg.values["max"] == max(values), key
        assert agg.values["sum"] == sum(values), key
        assert agg.values["mean"] == sum(values) / len(values), key
        assert not agg.partial
    raw = sorted((r.device_id, r.ts, r.metrics["door"]) for r in cloud.raw_points())
    assert raw == sorted(doors)
    assert not cloud.errors
    assert cloud.statuses
    assert cloud.statuses[0]["state"] == "online"


async def test_cloud_outage_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)
    # No pipeline: raw pass-through, so every point published must arrive once.
    config = agent_config(tmp_path, mosquitto.url, cloud_mosquitto.url, uplink={"backfill_after": "500ms"})
    total = 3000
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set())
        await eventually(lambda: agent.uplink.connected)
        pub = Publisher(mosquitto.port)
        base = time.time()
        stop_at, restart_at = 600, 2200

        def produce() -> None:
            infos = []
            for i in range(total):
                if i == stop_at:
                    cloud_mosquitto.stop()
                if i == restart_at:
                    cloud_mosquitto.start()
                infos.append(pub.telemetry(f"dev-{i % 10}", base + i * 0.001, {"n": i}))
                if i % 100 == 0:
                    time.sleep(0.05)
            pub.wait_all(infos)

        producer = threading.Thread(target=produce)
        producer.start()
        await asyncio.to_thread(producer.join)
        await eventually(
            lambda: len({r.metrics["n"] for r in cloud.raw_points()}) == total,
            within=40,
            message=lambda: (
                f"points missing at the cloud after the outage: got "
                f"{len({r.metrics['n'] for r in cloud.raw_points()})}, agent emitted "
                f"{dict(agent.metrics.records)}, acked {agent.metrics.uplink_records}, outbox "
                f"{agent.outbox.stats.total_records}, seqs {sorted(b.seq for b in cloud.unique_batches())}"
            ),
        )
        pub.close()
        assert agent.metrics.uplink_reconnects >= 1
        assert agent.metrics.uplink_backfill_batches >= 1
    cloud.close()
    assert not cloud.errors
    points = cloud.raw_points()
    assert sorted(r.metrics["n"] for r in points) == list(range(total)), "lost or duplicated points"
    for device in {r.device_id for r in points}:
        ns = [r.metrics["n"] for r in points if r.device_id == device]
        assert ns == sorted(ns), f"order not kept for {device}"


async def test_pending_messages_are_bounded_and_none_is_lost_at_qos_0(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """At QoS 0 nothing slows the broker down: past ``storage.max_pending_messages`` the agent stops reading
    until a commit takes what is pending; every message still arrives."""
    config = agent_config(
        tmp_path,
        mosquitto.url,
        None,
        southbound={"mqtt": {"url": mosquitto.url, "qos": 0}},
        storage={
            "path": str(tmp_path / "gw.db"),
            "sync": "normal",
            "commit_interval": "500ms",  # long: only the cap makes commits come sooner
            "max_pending_messages": 100,
        },
    )
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set(), message="agent never subscribed")
        pub = Publisher(mosquitto.port)
        now = time.time()
        pub.wait_all([pub.telemetry(f"dev-{i % 20}", now + i * 0.001, {"n": i}) for i in range(3000)])
        pub.close()
        await eventually(lambda: agent.metrics.committed == 3000, message=lambda: agent.metrics.committed)
        assert agent.metrics.reads_held >= 1
        assert agent.committer.max_pending_messages == 100


async def test_a_stop_during_start_up_always_finishes(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """SIGTERM can come at any moment of start-up, while the links are still connecting: shutdown completes
    however each connect goes. (On Python 3.11, ``asyncio.wait_for`` lost a cancellation that arrived as the
    awaited connect completed; the link's task then subscribed after the stop and waited for ever.)"""
    for attempt in range(40):
        config = agent_config(tmp_path / str(attempt), mosquitto.url, mosquitto.url, gateway=f"gw-{attempt}")
        agent = Agent(config)
        await agent.__aenter__()
        await asyncio.sleep(attempt * 0.00025)  # from at once to 10 ms in: around each link's CONNACK
        async with asyncio.timeout(5):  # it takes milliseconds; with a lost cancellation, 10 s or for ever
            await agent.shutdown()
        assert all(task.done() for task in agent._tasks)
        assert agent.southbound is not None
        assert agent.southbound.link is None
