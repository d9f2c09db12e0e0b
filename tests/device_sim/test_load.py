"""Load mode through a real Mosquitto: the report's figures agree with what a subscriber receives."""

from __future__ import annotations

import asyncio
from pathlib import Path

from device_sim.load import LoadOptions, LoadRun, percentiles
from device_sim.mqtt_transport import Broker
from tests.device_sim.mqttkit import subscriber
from tests.device_sim.runkit import fleet
from tests.servicekit import Mosquitto

METERS = """\
seed: 1
devices:
  - type: meter
    id: meter-{n:03d}
    count: 200
    interval: 1s
    devices_per_connection: 50
    metrics:
      power: {type: random_walk, start: 100, step: 2, min: 0, max: 500}
  - type: probe
    id: probe-{n}
    count: 3
    transport: coap
    interval: 1s
    metrics:
      level: {type: constant, value: 1}
"""


async def test_qos1_report_matches_the_subscriber(mosquitto: Mosquitto, tmp_path: Path) -> None:
    run = LoadRun(
        fleet(tmp_path, METERS),
        Broker.parse(mosquitto.url),
        LoadOptions(rate=2000, duration=1.5, qos=1),
        progress=False,
    )
    async with subscriber(mosquitto.port, "devices/+/telemetry", qos=1) as (_, received):
        report = await run.run()
        await received.wait_for(lambda r: len(r.messages) >= report.sent)
        await asyncio.sleep(0.3)
    assert report.connections == 4  # 200 devices, 50 per connection
    assert report.devices == 200
    assert report.skipped_coap_devices == 3
    assert report.qos == [1]
    assert report.sent > 0
    assert report.acknowledged == report.sent
    assert report.errors == {}
    assert len(received.messages) == report.sent
    assert len({m.topic.value for m in received.messages}) == 200
    assert report.ack_latency_ms is not None
    assert report.ack_latency_ms["count"] == report.sent
    document = report.to_dict()
    assert {"sent", "acknowledged", "errors", "achieved_rate", "ack_latency_ms"} <= set(document)
    assert "latency_ms" not in document  # no --measure


async def test_measure_counts_and_times_at_a_subscriber(mosquitto: Mosquitto, tmp_path: Path) -> None:
    run = LoadRun(
        fleet(tmp_path, METERS),
        Broker.parse(mosquitto.url),
        LoadOptions(rate=3000, duration=1.0, qos=0, connections=2, measure=True, sample_every=10),
        progress=False,
    )
    report = await run.run()
    assert report.connections == 2
    assert report.qos == [0]
    assert report.acknowledged == 0
    assert report.received == report.sent
    assert report.latency_ms is not None
    assert report.latency_ms["count"] > 0
    assert report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]


def test_percentiles() -> None:
    assert percentiles([]) == {"count": 0}
    figures = percentiles([i / 1000 for i in range(1, 101)])
    assert figures == {"count": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
