"""Closed loop through a real Mosquitto: a command changes the device's model and is acknowledged; discovery."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import orjson

from device_sim.runner import RunOptions
from tests.device_sim.mqttkit import Received, subscriber
from tests.device_sim.runkit import COLD_ROOM, START, fleet, running
from tests.servicekit import Mosquitto


def _temperatures(received: Received, device_id: str) -> list[float]:
    return [
        orjson.loads(m.payload)["metrics"]["temperature"]
        for m in received.on(f"devices/{device_id}/telemetry")
    ]


async def test_cooling_max_then_off(mosquitto: Mosquitto, tmp_path: Path) -> None:
    options = RunOptions(broker=mosquitto.url, speed=30, start=START, progress=False)
    async with (
        subscriber(mosquitto.port, "devices/#") as (client, received),
        running(fleet(tmp_path, COLD_ROOM), options) as run,
    ):
        await received.wait_for(lambda r: len(_temperatures(r, "cold-01")) >= 2)
        assert set(_temperatures(received, "cold-01")) == {4.0}

        command = {"id": "c-1", "name": "cooling", "params": {"mode": "max"}}
        await client.publish("devices/cold-01/commands", orjson.dumps(command), qos=1)
        await received.wait_for(lambda r: len(r.on("devices/cold-01/commands/ack")) == 1)
        ack = orjson.loads(received.on("devices/cold-01/commands/ack")[0].payload)
        assert ack["id"] == "c-1"
        assert ack["status"] == "ok"
        before = len(_temperatures(received, "cold-01"))
        await received.wait_for(lambda r: len(_temperatures(r, "cold-01")) >= before + 4)
        cooling = _temperatures(received, "cold-01")[before:]
        assert all(b < a for a, b in pairwise(cooling)), cooling
        assert cooling[-1] < 4.0

        await client.publish(
            "devices/cold-01/commands",
            orjson.dumps({"id": "c-2", "name": "cooling", "params": {"mode": "off"}}),
            qos=1,
        )
        await received.wait_for(lambda r: len(r.on("devices/cold-01/commands/ack")) == 2)
        after = len(_temperatures(received, "cold-01"))
        await received.wait_for(lambda r: len(_temperatures(r, "cold-01")) >= after + 3)
        settled = _temperatures(received, "cold-01")[after:]
        assert len(set(settled[1:])) == 1  # cooling off: the room stays where it got to
        assert set(_temperatures(received, "cold-02")) == {4.0}  # the other device never got a command

        await client.publish("devices/cold-02/commands", b'{"id": "c-3", "name": "heating"}', qos=1)
        await received.wait_for(lambda r: len(r.on("devices/cold-02/commands/ack")) == 1)
        refused = orjson.loads(received.on("devices/cold-02/commands/ack")[0].payload)
        assert refused["status"] == "error"
        assert refused["code"] == "unknown_command"
    assert run.stats.commands == 3
    assert run.stats.acks == {"ok": 2, "error": 1}


async def test_discovery_request_gets_one_response_per_device(mosquitto: Mosquitto, tmp_path: Path) -> None:
    options = RunOptions(broker=mosquitto.url, speed=1, start=START, progress=False)
    async with (
        subscriber(mosquitto.port, "discovery/response/+", "devices/+/state") as (client, received),
        running(fleet(tmp_path, COLD_ROOM), options),
    ):
        await received.wait_for(lambda r: len(r.on("devices/+/state")) == 2)
        await client.publish("discovery/request", b"{}", qos=1)
        await received.wait_for(lambda r: len(r.on("discovery/response/+")) == 2)
    answers = {m.topic.value: orjson.loads(m.payload) for m in received.on("discovery/response/+")}
    assert sorted(answers) == ["discovery/response/cold-01", "discovery/response/cold-02"]
    description = answers["discovery/response/cold-01"]
    assert description["id"] == "cold-01"
    assert description["type"] == "coldroom"
    assert description["firmware"] == "2.0.1"
    assert "cooling" in description["commands"]
