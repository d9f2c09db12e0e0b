"""Commands from the cloud through real brokers: a command published on the cloud Mosquitto's
``fl/{gateway}/down/commands`` -> agent -> device on the local Mosquitto -> reports up on ``fl/{gateway}/up/events``."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from edge_agent.agent import Agent
from fieldline.wire import EventRecord, Topics
from tests.cloud_core.cloudkit import running_cloud
from tests.cloud_core.gatewaykit import cloud_settings, until
from tests.factories import CloudCollector, CommandDevice, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto

GATEWAY = "gw-test"


def command(
    device: str, name: str = "set_point", *, expires_in: float = 30.0, **fields: Any
) -> dict[str, Any]:
    body = {
        "id": uuid.uuid4().hex,
        "device": device,
        "name": name,
        "params": {"value": 21.5},
        "expires_at": time.time() + expires_in,
    }
    return body | fields


def send(cloud: Mosquitto, *bodies: dict[str, Any] | bytes) -> None:
    """Publish commands as the cloud core does (QoS 1, not retained) and wait for the broker's PUBACKs."""
    publisher = Publisher(cloud.port, client_id=f"test-cloud-core-{uuid.uuid4().hex[:6]}")
    topic = Topics.down_commands(GATEWAY)
    payloads = [b if isinstance(b, bytes) else orjson.dumps(b) for b in bodies]
    publisher.wait_all([publisher.publish(topic, p) for p in payloads])
    publisher.close()


def reports(cloud: CloudCollector, command_id: str) -> list[EventRecord]:
    return [e for e in cloud.events() if e.type.startswith("command.") and e.data["id"] == command_id]


def get_json(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


async def connected(agent: Agent) -> None:
    await eventually(
        lambda: agent.uplink.connected and agent.cloud_commands.commands.connected,
        message="the agent is not connected to both brokers",
    )


async def test_a_command_reaches_the_device_and_its_answer_goes_up(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)
    device = CommandDevice(
        mosquitto.port,
        "boiler-7",
        answer=lambda c: {"status": "ok", "result": {"applied": c["params"]["value"]}},
    )
    config = agent_config(
        tmp_path, mosquitto.url, cloud_mosquitto.url, devices={"boiler-7": {"type": "boiler"}}
    )
    async with Agent(config) as agent:
        await connected(agent)
        sent = command("boiler-7")
        send(cloud_mosquitto, sent)
        await eventually(lambda: len(reports(cloud, sent["id"])) == 2, message=lambda: cloud.events())
        [received] = device.received()
        assert received["id"] == sent["id"]
        assert (received["name"], received["params"]) == ("set_point", {"value": 21.5})
        assert time.time() < received["expires_at"] <= sent["expires_at"]

        delivered, acknowledged = reports(cloud, sent["id"])
        assert (delivered.type, delivered.data) == ("command.delivered", {"id": sent["id"]})
        assert acknowledged.type == "command.acknowledged"
        assert acknowledged.data == {"id": sent["id"], "result": {"applied": 21.5}}
        assert {(r.device_id, r.device_type, r.source) for r in (delivered, acknowledged)} == {
            ("boiler-7", "boiler", "cloud")
        }

        port = agent.status_server.port
        health = (await asyncio.to_thread(get_json, port, "/healthz"))["cloud_commands"]
        assert health["received"] == health["delivered"] == 1
        assert health["outcomes"] == {"acknowledged": 1}
        assert health["in_flight"] == 0
        metrics = await asyncio.to_thread(get_text, port, "/metrics")
        assert 'fieldline_edge_cloud_commands_total{outcome="acknowledged"} 1.0' in metrics
        assert "fieldline_edge_cloud_commands_delivered_total 1.0" in metrics
    device.close()
    cloud.close()


async def test_silent_device_expired_malformed_and_duplicate_commands(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)
    silent = CommandDevice(mosquitto.port, "valve-2")
    refusing = CommandDevice(
        mosquitto.port, "pump-1", answer=lambda c: {"status": "error", "error": "jammed"}
    )
    config = agent_config(
        tmp_path, mosquitto.url, cloud_mosquitto.url, automation={"command_ack_timeout": "1s"}
    )
    async with Agent(config) as agent:
        await connected(agent)
        unanswered = command("valve-2", "open", expires_in=60)
        stale = command("valve-2", "close", expires_in=-1)
        refused = command("pump-1", "start")
        bad_params = command("pump-1", params=[1, 2])
        send(
            cloud_mosquitto,
            unanswered,
            stale,
            refused,
            refused,  # a redelivery: the device gets it once
            bad_params,
            b"not json",
            {"device": "pump-1", "name": "stop"},
        )
        await eventually(
            lambda: all(
                reports(cloud, c["id"]) and reports(cloud, c["id"])[-1].type == "command.failed"
                for c in (unanswered, stale, refused, bad_params)
            ),
            message=lambda: cloud.events(),
        )
        delivered, timed_out = reports(cloud, unanswered["id"])
        assert delivered.type == "command.delivered"
        assert timed_out.data["error"].startswith("timeout")
        assert [c["name"] for c in silent.received()] == ["open"]  # the expired one never reached it

        [expired] = reports(cloud, stale["id"])
        assert (expired.type, expired.data, expired.device_id) == (
            "command.failed",
            {"id": stale["id"], "error": "expired"},
            "valve-2",
        )

        assert [r.type for r in reports(cloud, refused["id"])] == ["command.delivered", "command.failed"]
        assert reports(cloud, refused["id"])[-1].data["error"] == "jammed"
        assert len(refusing.received()) == 1

        [malformed] = reports(cloud, bad_params["id"])
        assert malformed.data["error"].startswith("malformed: params")
        assert malformed.device_id == "pump-1"

        assert agent.cloud_commands.outcomes == {
            "timeout": 1,
            "expired": 1,
            "refused": 1,
            "duplicate": 1,
            "malformed": 3,
        }
    silent.close()
    refusing.close()
    cloud.close()


async def test_commands_sent_while_the_gateway_is_offline_arrive_when_it_reconnects(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    cloud = CloudCollector(cloud_mosquitto.port)
    device = CommandDevice(mosquitto.port, "boiler-7", answer=lambda c: {"status": "ok", "result": "done"})
    config = agent_config(tmp_path, mosquitto.url, cloud_mosquitto.url)
    async with Agent(config) as agent:
        await connected(agent)  # the broker now keeps the gateway's session and its subscription
    queued = command("boiler-7", "reboot")
    send(cloud_mosquitto, queued)
    assert device.received() == []
    async with Agent(config) as agent:
        await eventually(lambda: len(reports(cloud, queued["id"])) == 2, message=lambda: cloud.events())
        assert [c["id"] for c in device.received()] == [queued["id"]]
        assert reports(cloud, queued["id"])[-1].data == {"id": queued["id"], "result": "done"}
    device.close()
    cloud.close()


async def test_a_command_from_the_cloud_core_api_ends_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    device = CommandDevice(
        mosquitto.port, "boiler-7", answer=lambda c: {"status": "ok", "result": {"fan": "max"}}
    )
    config = agent_config(tmp_path, mosquitto.url, cloud_mosquitto.url)
    async with (
        running_cloud(tmp_path, cloud_settings(tmp_path, cloud_mosquitto.port)) as core,
        core.client("operator") as operator,
    ):
        assert (await operator.post("/api/v1/gateways", json={"id": GATEWAY})).status_code == 201
        created = await operator.post("/api/v1/devices", json={"id": "boiler-7", "gateway": GATEWAY})
        assert created.status_code == 201, created.text
        await until(lambda: ready(operator))
        async with Agent(config) as agent:
            await connected(agent)
            await acknowledged_through_the_api(operator, device)
    device.close()


async def acknowledged_through_the_api(operator: httpx.AsyncClient, device: CommandDevice) -> None:

    response = await operator.post(
        "/api/v1/devices/boiler-7/commands", json={"name": "cooling", "params": {"mode": "max"}}
    )
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]

    async def acknowledged() -> dict[str, Any] | None:
        body = (await operator.get(f"/api/v1/commands/{command_id}")).json()
        return body if body["status"] == "acknowledged" else None

    done = await until(acknowledged)
    assert done["result"] == {"fan": "max"}
    assert done["delivered_at"] is not None
    assert [c["id"] for c in device.received()] == [command_id]


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_local_rules_see_the_reports_of_cloud_commands(
    tmp_path: Path, mosquitto: Mosquitto, cloud_mosquitto: Mosquitto
) -> None:
    """A rule on ``command.acknowledged`` fires when a command from the cloud is answered by its device."""
    rules = tmp_path / "commands.rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - id: cloud-command-done\n"
        "    when: {event: command.acknowledged}\n"
        "    actions:\n"
        "      - {type: emit, event: setpoint.applied, data: {command: '{{ data.id }}', device: '{{ device_id }}'}}\n"
    )
    cloud = CloudCollector(cloud_mosquitto.port)
    device = CommandDevice(mosquitto.port, "boiler-7", answer=lambda c: {"status": "ok", "result": {}})
    config = agent_config(
        tmp_path,
        mosquitto.url,
        cloud_mosquitto.url,
        devices={"boiler-7": {"type": "boiler"}},
        automation={"rules": [str(rules)]},
    )
    async with Agent(config) as agent:
        await connected(agent)
        sent = command("boiler-7")
        send(cloud_mosquitto, sent)
        await eventually(
            lambda: any(e.type == "setpoint.applied" for e in cloud.events()), message=lambda: cloud.events()
        )
        assert agent.automation is not None
        assert agent.automation.rules.rule_status()["cloud-command-done"]["firings"] == 1
    [applied] = [e for e in cloud.events() if e.type == "setpoint.applied"]
    assert applied.data == {"command": sent["id"], "device": "boiler-7"}
    device.close()
    cloud.close()
