"""Commands through the real path: REST API → real Mosquitto → a fake gateway that answers with event batches on
its uplink → ingest → the command's status in the API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloud_core.cloudkit import Cloud, running_cloud
from tests.cloud_core.gatewaykit import FakeGateway, cloud_settings, until
from tests.servicekit import Mosquitto


async def register(cloud: Cloud, gateway: str | None, device: str) -> None:
    async with cloud.client("operator") as operator:
        if gateway is not None:
            response = await operator.post("/api/v1/gateways", json={"id": gateway})
            assert response.status_code == 201, response.text
        body: dict[str, Any] = {"id": device} | ({"gateway": gateway} if gateway else {})
        response = await operator.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text


async def ready(client: httpx.AsyncClient) -> dict[str, Any] | None:
    response = await client.get("/readyz")
    return response.json() if response.status_code == 200 else None


async def status_of(client: httpx.AsyncClient, command_id: str, wanted: str) -> dict[str, Any] | None:
    body = (await client.get(f"/api/v1/commands/{command_id}")).json()
    return body if body["status"] == wanted else None


async def test_delivered_then_acknowledged(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with (
        running_cloud(tmp_path, settings) as cloud,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
        gateway.commands() as received,
        cloud.client("operator") as operator,
    ):
        await register(cloud, "gw-1", "boiler-7")
        checks = (await until(lambda: ready(operator)))["checks"]
        assert checks["ingest"] == "ok"
        assert checks["commands"] == "ok"

        before = time.time()
        response = await operator.post(
            "/api/v1/devices/boiler-7/commands",
            json={"name": "set_point", "params": {"value": 21.5}, "expires_in": 60},
        )
        assert response.status_code == 202, response.text
        command = response.json()
        assert response.headers["location"] == f"/api/v1/commands/{command['id']}"
        assert command["status"] == "pending"
        assert command["gateway"] == "gw-1"
        assert command["created_by"].startswith("key:")

        sent = await asyncio.wait_for(received.get(), 10)
        assert sent == {
            "id": command["id"],
            "device": "boiler-7",
            "name": "set_point",
            "params": {"value": 21.5},
            "expires_at": pytest.approx(before + 60, abs=5),
        }

        await gateway.report("boiler-7", "command.delivered", {"id": command["id"]})
        delivered = await until(lambda: status_of(operator, command["id"], "delivered"))
        assert delivered["delivered_at"] is not None
        assert delivered["completed_at"] is None

        await gateway.report(
            "boiler-7", "command.acknowledged", {"id": command["id"], "result": {"applied": 21.5}}
        )
        done = await until(lambda: status_of(operator, command["id"], "acknowledged"))
        assert done["result"] == {"applied": 21.5}
        assert done["completed_at"] is not None

        # A late report cannot move the status back; it is still kept as an event.
        await gateway.report("boiler-7", "command.delivered", {"id": command["id"]})

        async def both_delivered_reports() -> bool:
            page = (await operator.get("/api/v1/events", params={"type": "command.delivered"})).json()
            return len(page["items"]) == 2

        await until(both_delivered_reports)
        assert (await operator.get(f"/api/v1/commands/{command['id']}")).json()["status"] == "acknowledged"

        listed = (await operator.get("/api/v1/devices/boiler-7/commands")).json()
        assert [c["id"] for c in listed["items"]] == [command["id"]]


async def test_silent_gateway_expires_and_failure_is_reported(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with (
        running_cloud(tmp_path, settings) as cloud,
        FakeGateway(cloud_mosquitto.port, "gw-1") as gateway,
        gateway.commands() as received,
        cloud.client("operator") as operator,
    ):
        await register(cloud, "gw-1", "valve-2")
        await until(lambda: ready(operator))

        silent = (
            await operator.post("/api/v1/devices/valve-2/commands", json={"name": "open", "expires_in": 0.5})
        ).json()
        await asyncio.wait_for(received.get(), 10)
        expired = await until(lambda: status_of(operator, silent["id"], "expired"))
        assert expired["completed_at"] is not None
        await gateway.report("valve-2", "command.acknowledged", {"id": silent["id"], "result": {}})

        refused = (await operator.post("/api/v1/devices/valve-2/commands", json={"name": "close"})).json()
        await asyncio.wait_for(received.get(), 10)
        await gateway.report("valve-2", "command.delivered", {"id": refused["id"]})
        await gateway.report("valve-2", "command.failed", {"id": refused["id"], "error": "valve stuck"})
        failed = await until(lambda: status_of(operator, refused["id"], "failed"))
        assert failed["error"] == "valve stuck"
        assert failed["delivered_at"] is not None
        # The acknowledgement that came after expiry was ingested (reports are in seq order) and ignored.
        assert (await operator.get(f"/api/v1/commands/{silent['id']}")).json()["status"] == "expired"


async def test_refusals(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with running_cloud(tmp_path, settings) as cloud, cloud.client("operator") as operator:
        await register(cloud, None, "loner")
        await register(cloud, "gw-1", "sensor")
        body = {"name": "reboot"}

        unknown = await operator.post("/api/v1/devices/ghost/commands", json=body)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        no_gateway = await operator.post("/api/v1/devices/loner/commands", json=body)
        assert no_gateway.status_code == 409
        assert no_gateway.json()["type"] == "urn:fieldline:problem:no-gateway"
        invalid = await operator.post("/api/v1/devices/sensor/commands", json={"name": "x", "expires_in": -1})
        assert invalid.status_code == 422
        async with cloud.client("viewer") as viewer:
            assert (await viewer.post("/api/v1/devices/sensor/commands", json=body)).status_code == 403
            assert (await viewer.get("/api/v1/commands/nope")).status_code == 404
            assert (await viewer.get("/api/v1/devices/ghost/commands")).status_code == 404


async def test_broker_outage_fails_the_command_and_readiness(
    tmp_path: Path, cloud_mosquitto: Mosquitto
) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with running_cloud(tmp_path, settings) as cloud, cloud.client("operator") as operator:
        await register(cloud, "gw-1", "pump")
        await until(lambda: ready(operator))

        cloud_mosquitto.stop()

        async def not_ready() -> dict[str, Any] | None:
            response = await operator.get("/readyz")
            return response.json() if response.status_code == 503 else None

        problem = await until(not_ready)
        assert problem["checks"]["ingest"].startswith("error")
        assert problem["checks"]["commands"].startswith("error")

        response = await operator.post("/api/v1/devices/pump/commands", json={"name": "start"})
        assert response.status_code == 503
        assert response.json()["type"] == "urn:fieldline:problem:broker-unavailable"
        [stored] = (await operator.get("/api/v1/devices/pump/commands")).json()["items"]
        assert stored["status"] == "failed"
        assert stored["error"].startswith("not published")

        cloud_mosquitto.start()
        await until(lambda: ready(operator))
        assert (
            await operator.post("/api/v1/devices/pump/commands", json={"name": "start"})
        ).status_code == 202
