"""Rules and workflows inside the agent, through real brokers: devices -> local Mosquitto -> agent (rules,
workflows) -> commands to devices on the local broker, events up to the cloud Mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.automation_feed import AutomationFeed
from edge_agent.device_commands import DeviceCommands
from edge_agent.mqtt_link import Endpoint
from fieldline.wire import Point, RecordKind
from tests.factories import CloudCollector, CommandDevice, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto, free_port
from workflows import ActionError, Event, Status

COOLING_RULE = """
rules:
  - id: boiler-hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 1s
    actions:
      - {type: command, name: cooling, params: {mode: max, reading: "{{ value }}"}}
      - {type: emit, event: overheat, device: "{{ device_id }}", data: {temperature: "{{ value }}"}}
"""

COOL_DOWN_WORKFLOW = """
id: cool-down
version: 1.0.0
variables:
  device_id: {type: string, required: true}
triggers:
  - type: event
    event: telemetry
    condition: "event.data.temperature is defined and event.data.temperature > 80"
    variables: {device_id: "{{ event.device_id }}"}
start_at: cool
states:
  cool:
    type: task
    actions:
      - {type: command, name: cooling, params: {mode: max}, await_ack: true, result_as: ack}
    catch: [{errors: ["Command.Timeout"], next: unanswered}]
    next: cooled
  cooled:
    type: succeed
    output: "{{ ack.result }}"
  unanswered:
    type: succeed
    output: no answer
"""

OVERHEAT_FOLLOW_UP = """
id: overheat-follow-up
version: 1.0.0
variables:
  device_id: {type: string, required: true}
triggers:
  - type: event
    event: overheat
    variables: {device_id: "{{ event.device_id }}"}
start_at: announce
states:
  announce:
    type: task
    actions:
      - {type: publish, topic: "site/alarms/{{ device_id }}", payload: {overheat: true}}
    end: true
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def get_json(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


async def test_a_rule_with_for_sends_a_command_to_the_device(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rules = write(tmp_path, "boiler.rules.yaml", COOLING_RULE)
    config = agent_config(tmp_path, mosquitto.url, None, automation={"rules": [str(rules)]})
    device = CommandDevice(mosquitto.port, "boiler-1")
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set() and agent.automation.commands.connected)
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("boiler-1", time.time(), {"temperature": 91.5})])
        # Nothing else arrives: the rule fires from its timer once the condition held for 1 s.
        await eventually(lambda: device.received(), message="no command reached the device")
        pub.close()
        [command] = device.received()
        assert command["name"] == "cooling"
        assert command["params"] == {"mode": "max", "reading": 91.5}
        assert command["id"] == "boiler-hot:boiler-1:1:0"  # the rule's idempotency key
        assert command["expires_at"] > time.time()
        status = agent.automation.rules.rule_status()["boiler-hot"]
        assert status["firings"] == 1
        assert status["active"] == 1
        port = agent.status_server.port
        health = await asyncio.to_thread(get_json, port, "/healthz")
        assert health["automation"]["rules_loaded"] == 1
        assert health["automation"]["alerts_active"] == 1
        assert health["automation"]["disabled"] == []
        metrics = await asyncio.to_thread(get_text, port, "/metrics")
        assert "fieldline_edge_rules_firings_total 1.0" in metrics
        assert "fieldline_edge_commands_sent_total 1.0" in metrics
        assert 'fieldline_edge_automation_events_total{type="telemetry"} 1.0' in metrics
    device.close()


async def test_a_workflow_waits_for_the_device_ack_or_takes_its_catch_path(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    workflow = write(tmp_path, "cool-down.yaml", COOL_DOWN_WORKFLOW)
    config = agent_config(
        tmp_path, mosquitto.url, None, automation={"workflows": [str(workflow)], "command_ack_timeout": "3s"}
    )
    answering = CommandDevice(
        mosquitto.port, "boiler-1", answer=lambda c: {"status": "ok", "result": {"fan": c["params"]["mode"]}}
    )
    refusing = CommandDevice(
        mosquitto.port, "boiler-3", answer=lambda c: {"status": "error", "error": "jammed"}
    )
    async with Agent(config) as agent:
        engine = agent.automation.engine
        await eventually(lambda: agent.southbound.connected.is_set() and agent.automation.commands.connected)
        pub = Publisher(mosquitto.port)
        now = time.time()
        pub.wait_all(
            [pub.telemetry(d, now, {"temperature": 85.0}) for d in ("boiler-1", "boiler-2", "boiler-3")]
        )
        pub.close()
        await eventually(
            lambda: engine.stats.succeeded + engine.stats.failed == 3, message="instances still running"
        )
        done = {i.device["id"]: i for i in await engine.list(workflow_id="cool-down")}
        assert set(done) == {"boiler-1", "boiler-2", "boiler-3"}
        # boiler-1 answered: the task succeeded and the workflow went on with the device's result.
        assert done["boiler-1"].status is Status.SUCCEEDED
        assert done["boiler-1"].state == "cooled"
        assert done["boiler-1"].output == {"fan": "max"}
        # boiler-2 has no device behind it: Command.Timeout after the agent's default ack timeout, caught.
        assert done["boiler-2"].status is Status.SUCCEEDED
        assert done["boiler-2"].state == "unanswered"
        assert done["boiler-2"].vars["error"]["error"] == "Command.Timeout"
        assert "within 3s" in done["boiler-2"].vars["error"]["cause"]
        # boiler-3 refused: Command.Nack is not caught here, so the instance failed with it.
        assert done["boiler-3"].status is Status.FAILED
        assert done["boiler-3"].error["error"] == "Command.Nack"
        assert "jammed" in done["boiler-3"].error["cause"]
        assert [c["name"] for c in answering.received()] == ["cooling"]
        assert agent.automation.commands.acks == {"ok": 1, "timeout": 1, "error": 1}
    answering.close()
    refusing.close()


async def test_emitted_events_go_up_to_the_cloud_and_back_into_local_workflows(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    rules = write(tmp_path, "boiler.rules.yaml", COOLING_RULE)
    follow_up = write(tmp_path, "follow-up.yaml", OVERHEAT_FOLLOW_UP)
    cloud = CloudCollector(cloud_mosquitto.port)
    alarms: list[tuple[str, bytes]] = []
    watcher = Publisher(mosquitto.port, client_id="alarm-watcher")
    watcher.client.on_message = lambda _c, _u, m: alarms.append((m.topic, m.payload))
    watcher.client.subscribe("site/alarms/#", 1)
    config = agent_config(
        tmp_path,
        mosquitto.url,
        cloud_mosquitto.url,
        automation={"rules": [str(rules)], "workflows": [str(follow_up)]},
    )
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set() and agent.automation.commands.connected)
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("boiler-9", time.time(), {"temperature": 99.0})])
        pub.close()
        await eventually(
            lambda: cloud.events("overheat") and cloud.events("alert"), message="no events upstream"
        )
        # The emitted event was fed back: the local workflow it triggers published on the local broker.
        await eventually(lambda: alarms, message="the follow-up workflow did not run")
    watcher.close()
    cloud.close()
    assert not cloud.errors
    [overheat] = cloud.events("overheat")
    assert overheat.device_id == "boiler-9"
    assert overheat.data == {"temperature": 99.0}
    assert overheat.source == "boiler-hot:boiler-9:1:1"
    [alert] = cloud.events("alert")
    assert alert.device_id == "boiler-9"
    assert alert.data["rule"] == "boiler-hot"
    assert alert.source == "rule:boiler-hot"
    assert cloud.topics_of(RecordKind.EVENT) == {"fl/gw-test/up/events"}
    assert alarms == [("site/alarms/boiler-9", b'{"overheat":true}')]


async def test_a_broken_workflow_is_disabled_and_reported_while_a_rule_still_fires(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    rules = write(tmp_path, "boiler.rules.yaml", COOLING_RULE)
    broken = write(
        tmp_path,
        "broken.yaml",
        "id: broken\nversion: 1.0.0\nstart_at: nowhere\nstates:\n  done: {type: succeed}\n",
    )
    config = agent_config(
        tmp_path, mosquitto.url, None, automation={"rules": [str(rules)], "workflows": [str(broken)]}
    )
    device = CommandDevice(mosquitto.port, "boiler-1")
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set() and agent.automation.commands.connected)
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("boiler-1", time.time(), {"temperature": 95.0})])
        pub.close()
        await eventually(lambda: device.received(), message="the valid rule did not fire")
        port = agent.status_server.port
        health = await asyncio.to_thread(get_json, port, "/healthz")
        assert health["status"] == "ok"
        [disabled] = health["automation"]["disabled"]
        assert disabled["file"] == str(broken)
        assert disabled["kind"] == "workflow"
        assert disabled["reason"].startswith(f"{broken}:3:11: start_at: start state 'nowhere' is not defined")
        assert health["automation"]["workflows"] == {}
        metrics = await asyncio.to_thread(get_text, port, "/metrics")
        assert f'fieldline_edge_automation_disabled{{file="{broken}",kind="workflow"}} 1.0' in metrics
    device.close()


async def test_state_changes_reach_the_rules(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rules = write(
        tmp_path,
        "offline.rules.yaml",
        "rules:\n"
        "  - id: went-offline\n"
        "    when: {state: {from: online, to: offline}}\n"
        "    actions: [{type: publish, topic: 'site/offline/{{ device_id }}', payload: '{{ previous_state }}'}]\n",
    )
    config = agent_config(tmp_path, mosquitto.url, None, automation={"rules": [str(rules)]})
    seen: list[tuple[str, bytes]] = []
    watcher = Publisher(mosquitto.port, client_id="offline-watcher")
    watcher.client.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload))
    watcher.client.subscribe("site/offline/#", 1)
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set() and agent.automation.commands.connected)
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.publish("devices/pump-2/state", b"online")])
        await eventually(lambda: agent.automation.handled["device.state"] == 1)
        pub.wait_all(
            [pub.publish("devices/pump-2/state", b'{"state": "offline", "attributes": {"fw": "2"}}')]
        )
        pub.close()
        await eventually(lambda: seen, message="the state rule did not fire")
    watcher.close()
    assert seen == [("site/offline/pump-2", b"online")]


async def test_raw_mqtt_messages_reach_message_rules_and_triggers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    rules = write(
        tmp_path,
        "alarm.rules.yaml",
        "rules:\n"
        "  - id: site-alarm\n"
        "    when: {message: 'site/+/alarm', condition: 'data.level >= 3'}\n"
        "    actions: [{type: publish, topic: 'site/ack/{{ topic }}', payload: 'level {{ data.level }}'}]\n",
    )
    workflow = write(
        tmp_path,
        "heartbeat.yaml",
        "id: heartbeat-log\n"
        "version: 1.0.0\n"
        "variables: {beat: {type: number}}\n"
        "triggers: [{type: message, topic: 'devices/+/heartbeat', variables: {beat: '{{ event.data.payload }}'}}]\n"
        "start_at: done\n"
        "states: {done: {type: succeed, output: '{{ device.id }} {{ beat }}'}}\n",
    )
    config = agent_config(
        tmp_path, mosquitto.url, None, automation={"rules": [str(rules)], "workflows": [str(workflow)]}
    )
    seen: list[tuple[str, bytes]] = []
    watcher = Publisher(mosquitto.port, client_id="ack-watcher")
    watcher.client.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload))
    watcher.client.subscribe("site/ack/#", 1)
    async with Agent(config) as agent:
        automation = agent.automation
        assert automation is not None
        assert automation.commands.watch == ("site/+/alarm", "devices/+/heartbeat")
        await eventually(lambda: agent.southbound.connected.is_set() and automation.commands.connected)
        pub = Publisher(mosquitto.port)
        pub.wait_all(
            [
                pub.publish("site/hall/alarm", b'{"level": 1}'),  # below the condition
                pub.publish("site/yard/alarm", b'{"level": 4}'),
                pub.publish("site/yard/other", b'{"level": 9}'),  # no rule listens here
                pub.publish("devices/pump-2/heartbeat", b"17"),
            ]
        )
        pub.close()
        await eventually(lambda: seen, message="the message rule did not fire")
        await eventually(
            lambda: automation.engine.stats.succeeded == 1, message="no heartbeat instance ended"
        )
        [instance] = await automation.engine.list(workflow_id="heartbeat-log")
        assert instance.output == "pump-2 17"
        assert automation.handled["mqtt.message"] == 3
    watcher.close()
    assert seen == [("site/ack/site/yard/alarm", b"level 4")]


def test_the_feed_drops_the_oldest_and_serves_events_before_readings() -> None:
    feed = AutomationFeed(2)
    for ts in (1.0, 2.0, 3.0):
        feed.point(Point("d", ts, {"t": ts}))
    for kind in ("alert", "alert.cleared", "overheat"):
        feed.event(Event(kind, {}))
    assert feed.dropped == {"telemetry": 1, "alert": 1}
    served = [feed.pop() for _ in range(4)]
    assert [e.type for e, _ in served[:2]] == ["alert.cleared", "overheat"]
    assert [p.ts for p in served[2:]] == [2.0, 3.0]
    assert feed.pop() is None
    feed.point(Point("d", 4.0, {"t": 4}))
    feed.event(Event("alert", {}))
    assert feed.discard() == 2
    assert feed.dropped == {"telemetry": 2, "alert": 2}


async def test_commands_report_an_unreachable_broker_as_retryable() -> None:
    async with DeviceCommands(Endpoint("127.0.0.1", free_port()), client_id="t-commands") as commands:
        with pytest.raises(ActionError) as info:
            await commands.send("d-1", "reboot", {}, command_id="k-1", await_ack=False, ack_timeout=1.0)
    assert info.value.error == "Command.Unavailable"
    assert info.value.retryable


async def test_commands_survive_a_broker_restart_and_ignore_bad_answers(mosquitto: Mosquitto) -> None:
    async with DeviceCommands(Endpoint("127.0.0.1", mosquitto.port), client_id="t-commands") as commands:
        await eventually(lambda: commands.connected)
        with pytest.raises(ActionError) as info:
            await commands.send(
                "d-1", "x", {"at": object()}, command_id="k-0", await_ack=False, ack_timeout=1.0
            )
        assert (info.value.error, info.value.retryable) == ("Command.Invalid", False)
        mosquitto.stop()
        await eventually(lambda: not commands.connected)
        mosquitto.start()
        await eventually(lambda: commands.connected, message="no reconnection to the local broker")
        device = CommandDevice(mosquitto.port, "d-1", answer=lambda c: {"status": "ok", "result": 42})
        noise = Publisher(mosquitto.port, client_id="noise")
        noise.wait_all(
            [
                noise.publish("devices/d-1/commands/ack", b"not json"),
                noise.publish("devices/d-1/commands/ack", b'{"id": "nobody-waits", "status": "ok"}'),
            ]
        )
        reply = await commands.send("d-1", "ping", {}, command_id="k-1", await_ack=True, ack_timeout=5.0)
        await eventually(lambda: commands.acks["invalid"] + commands.acks["unmatched"] == 2)
        noise.close()
        device.close()
    assert reply == {"id": "k-1", "status": "ok", "result": 42}
    assert commands.acks == {"invalid": 1, "unmatched": 1, "ok": 1}
