"""A long outage fills the outbox's disk cap: raw points are dropped before aggregates, and counted exactly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge_agent.agent import Agent
from tests.factories import CloudCollector, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto

PIPELINE = {
    "name": "mixed",
    "downsample": [
        {"type": "raw", "metrics": ["n"]},
        {"type": "window", "metrics": ["value"], "width": "1s", "lateness": "200ms", "aggregates": ["count"]},
    ],
}


async def test_disk_cap_during_outage(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)  # a persistent session: the restarted broker queues for it
    cloud_mosquitto.stop()  # the uplink is down from the start
    config = agent_config(
        tmp_path,
        mosquitto.url,
        cloud_mosquitto.url,
        pipelines=[PIPELINE],
        storage={"max_bytes": 40_000, "batch_max_bytes": 2048},
    )
    total = 4000
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set())
        pub = Publisher(mosquitto.port)
        infos = []
        for i in range(total):
            infos.append(pub.telemetry(f"dev-{i % 8}", time.time(), {"n": i, "value": 1.0}))
            if i % 250 == 0:
                await asyncio.sleep(0.25)  # spread over several windows
        await asyncio.to_thread(pub.wait_all, infos)
        pub.close()
        emitted_raw = total  # one raw record per message (the "n" metric)
        await eventually(
            lambda: agent.metrics.records["raw"] == emitted_raw, message="raw records not all emitted"
        )
        await asyncio.sleep(1.5)  # let the last windows close
        await agent.committer.commit()
        stats = agent.outbox.stats
        dropped_raw = stats.dropped_records["raw"]
        assert dropped_raw > 0, "the cap was never reached"
        assert stats.dropped_records["agg"] == 0, "aggregates dropped while raw points remained"
        assert stats.total_bytes <= 40_000
        assert agent.metrics.outbox_dropped["raw"] == dropped_raw
        emitted_agg = agent.metrics.records["agg"]

        cloud_mosquitto.start()
        await eventually(
            lambda: stats.batches == 0 and stats.total_records == 0,
            within=30,
            message="outbox did not drain",
        )
        await eventually(
            lambda: len(cloud.raw_points()) + dropped_raw == emitted_raw,
            within=10,
            message="raw received + raw dropped != raw emitted",
        )
        # A value that reaches the agent after its window closed is dropped as late and counted: on a loaded
        # machine a burst can arrive more than the 200 ms lateness after its window's end.
        window_drops = {r: n for (step, r), n in agent.metrics.step_drops.items() if step == "window"}
    cloud.close()
    assert set(window_drops) <= {"late"}, window_drops
    # Exactly what the counter says is missing, and the newest points survived.
    received = sorted(r.metrics["n"] for r in cloud.raw_points())
    assert len(received) == emitted_raw - dropped_raw
    assert received == list(range(total - len(received), total))
    assert len(cloud.aggregates()) == emitted_agg
    assert sum(a.values["count"] for a in cloud.aggregates()) == total - window_drops.get("late", 0)
