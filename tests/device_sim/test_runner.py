"""Live mode through a real Mosquitto: counts and faults fixed by the seed, wills on dropouts, clean stops."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson

from device_sim.device import Connection
from device_sim.population import build_devices
from device_sim.runner import LiveRun, RunOptions
from tests.device_sim.mqttkit import subscriber
from tests.device_sim.runkit import COLD_ROOM, ROOMS, START, fleet, running
from tests.servicekit import Mosquitto

DURATION = 180.0


def _expected(the_fleet, seed: int | None = None) -> tuple[int, Counter[str]]:
    """Telemetry messages and faults the models alone produce over DURATION, without any I/O."""
    messages, faults = 0, Counter()
    for model in build_devices(the_fleet, seed=seed):
        at = model.first_tick_at(START)
        while at <= START + DURATION:
            tick = model.tick(at)
            messages += len(tick.messages)
            for m in tick.messages:
                if m.fault:
                    faults.update(m.fault.split("+"))
            if tick.connection == Connection.DROP:
                faults["dropout"] += 1
            at = tick.next_at
    return messages, faults


async def _run(mosquitto: Mosquitto, the_fleet, seed: int | None = None) -> tuple[dict, list]:
    options = RunOptions(
        broker=mosquitto.url, duration=DURATION, speed=60, start=START, seed=seed, progress=False
    )
    async with subscriber(mosquitto.port, "devices/#") as (_, received):
        summary = await LiveRun(the_fleet, options).run()
        await received.wait_for(lambda r: len(r.on("devices/+/telemetry")) >= summary["published"])
        await asyncio.sleep(0.2)
    return summary, received.messages


async def test_a_seeded_run_publishes_what_the_models_produce(mosquitto: Mosquitto, tmp_path: Path) -> None:
    the_fleet = fleet(tmp_path, ROOMS)
    expected_messages, expected_faults = _expected(the_fleet)
    first, messages = await _run(mosquitto, the_fleet)
    assert first["produced"] == {"telemetry": expected_messages}
    assert first["faults"] == dict(sorted(expected_faults.items()))
    assert first["faults"]["dropout"] == 5  # one scheduled dropout per device
    assert first["published"] == expected_messages
    assert first["unsent"] == 0
    telemetry = [m for m in messages if m.topic.matches("devices/+/telemetry")]
    assert len(telemetry) == expected_messages

    second, again = await _run(mosquitto, the_fleet)
    assert second["produced"] == first["produced"]
    assert second["faults"] == first["faults"]
    payloads = sorted(m.payload for m in telemetry)
    assert sorted(m.payload for m in again if m.topic.matches("devices/+/telemetry")) == payloads

    other_seed, _ = await _run(mosquitto, the_fleet, seed=8)
    assert other_seed["faults"] != first["faults"] or other_seed["produced"] != first["produced"]


async def test_states_wills_on_dropout_and_offline_at_the_end(mosquitto: Mosquitto, tmp_path: Path) -> None:
    _, messages = await _run(mosquitto, fleet(tmp_path, ROOMS))
    states = [orjson.loads(m.payload) for m in messages if m.topic.value == "devices/room-03/state"]
    # online, the will when the dropout aborts the connection (no "ts": the broker sent it), online again, and
    # the offline state published at the end of the run
    assert [s["state"] for s in states] == ["online", "offline", "online", "offline"]
    assert "ts" not in states[1]
    assert "ts" in states[3]
    assert states[0]["attributes"] == {"type": "thermo", "firmware": "1.2.0"}


async def test_a_stop_ends_an_unbounded_run_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    the_fleet = fleet(tmp_path, ROOMS)
    run = LiveRun(the_fleet, RunOptions(broker=mosquitto.url, speed=10, progress=False))
    async with subscriber(mosquitto.port, "devices/+/state") as (_, received):
        task = asyncio.create_task(run.run())
        await received.wait_for(lambda r: len(r.messages) == 5)
        run.stop()
        summary = await asyncio.wait_for(task, 20)
        await received.wait_for(lambda r: len(r.messages) == 10)
    assert summary["mqtt"]["connects"] == 5
    assert all(orjson.loads(m.payload)["state"] == "offline" for m in received.messages[5:])


STORM = """\
seed: 4
devices:
  - type: tracker
    id: tracker-{n:03d}
    count: 100
    interval: 10s
    metrics:
      speed: {type: random_walk, start: 50, step: 1, min: 0, max: 120}
    faults:
      - {type: reconnect_storm, schedule: {at: 30s, every: 40s}}
"""


async def test_reconnect_storms_are_absorbed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    the_fleet = fleet(tmp_path, STORM)
    expected_messages, _ = _expected(the_fleet)
    summary, messages = await _run(mosquitto, the_fleet)
    assert summary["faults"] == {"reconnect": 400}  # at 30, 70, 110 and 150 s, every device
    assert summary["mqtt"]["connects"] == 500
    assert summary["mqtt"]["dropped"] == 400
    assert summary["mqtt"]["connected_at_end"] == 100
    assert summary["published"] == expected_messages
    assert summary["unsent"] == 0
    wills = [m for m in messages if m.topic.matches("devices/+/state") and b'"ts"' not in m.payload]
    assert len(wills) == 400  # each abrupt disconnect published the device's will


async def test_a_run_survives_a_broker_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    options = RunOptions(broker=mosquitto.url, speed=30, start=START, progress=False)
    async with running(fleet(tmp_path, COLD_ROOM), options) as run:
        assert run.links is not None
        async with asyncio.timeout(20):
            await run.links.wait_connected(2)
            mosquitto.stop()
            await run.links.wait_connected(0)
            mosquitto.start()
            await run.links.wait_connected(2)
        async with subscriber(mosquitto.port, "devices/+/telemetry") as (_, received):
            await received.wait_for(lambda r: {m.topic.value for m in r.messages} == TELEMETRY_TOPICS)
    summary = run.summary()
    assert summary["mqtt"]["lost"] == 2
    assert summary["mqtt"]["connects"] == 4


TELEMETRY_TOPICS = {"devices/cold-01/telemetry", "devices/cold-02/telemetry"}
