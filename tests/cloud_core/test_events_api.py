"""Events and alerts: reported by a gateway over the real uplink, listed and filtered over real HTTP, alerts
acknowledged and resolved by operators."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fieldline.wire import EventRecord, RecordKind, StateRecord
from tests.cloud_core.cloudkit import running_cloud
from tests.cloud_core.gatewaykit import FakeGateway, cloud_settings, until
from tests.servicekit import Mosquitto

T0 = time.time() - 3600


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def alert(device: str, rule: str, ts: float, severity: str = "warning", **data: Any) -> EventRecord:
    body = {"rule": rule, "severity": severity, "device_id": device, "firing": 1, **data}
    return EventRecord(device, ts, "alert", body, f"rule:{rule}", "boiler")


async def collect(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, following the cursors page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_events_are_stored_listed_and_published(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with (
        running_cloud(tmp_path, settings) as cloud,
        cloud.services.bus.subscribe("alert", "device.state") as bus,
        FakeGateway(cloud_mosquitto.port, "gw-a") as gw_a,
        FakeGateway(cloud_mosquitto.port, "gw-b") as gw_b,
        cloud.client("viewer") as viewer,
    ):
        await gw_a.send(
            RecordKind.STATE,
            [
                StateRecord("boiler-1", T0 + 1, "online", {"fw": "1.2"}),
                StateRecord("boiler-2", T0 + 2, "offline"),
            ],
        )
        await gw_a.send(
            RecordKind.EVENT, [alert("boiler-1", "too-hot", T0 + 3, "critical", temperature=97.5)]
        )
        await gw_b.send(
            RecordKind.EVENT,
            [
                EventRecord("pump-1", T0 + 4, "workflow.succeeded", {"workflow": "flush"}, "wf-17"),
                EventRecord(None, T0 + 5, "site.note", {"text": "shift change"}),
            ],
        )

        async def five() -> list[dict[str, Any]]:
            items = (await viewer.get("/api/v1/events")).json()["items"]
            return items if len(items) == 5 else []

        newest_first = await until(five)
        assert [e["type"] for e in newest_first] == [
            "site.note",
            "workflow.succeeded",
            "alert",
            "device.state",
            "device.state",
        ]
        state = newest_first[-1]
        assert state["device"] == "boiler-1"
        assert state["gateway"] == "gw-a"
        assert state["data"] == {"state": "online", "attributes": {"fw": "1.2"}}
        assert state["source"] is None
        fired = newest_first[2]
        assert fired["severity"] == "critical"
        assert fired["source"] == "rule:too-hot"
        assert fired["data"]["temperature"] == 97.5

        def types(items: list[dict[str, Any]]) -> list[str]:
            return [e["type"] for e in items]

        assert types(await collect(viewer, "/api/v1/events", device="boiler-1")) == ["alert", "device.state"]
        assert types(await collect(viewer, "/api/v1/events", gateway="gw-b")) == [
            "site.note",
            "workflow.succeeded",
        ]
        assert len(await collect(viewer, "/api/v1/events", type="device.state")) == 2
        window = await collect(
            viewer,
            "/api/v1/events",
            since=_iso(T0 + 2),
            until=_iso(T0 + 4),
        )
        assert types(window) == ["alert", "device.state"]
        paged = await collect(viewer, "/api/v1/events", limit=2)
        assert [e["id"] for e in paged] == [e["id"] for e in newest_first]

        bad = await viewer.get("/api/v1/events", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"

        seen = [await asyncio.wait_for(bus.queue.get(), 5) for _ in range(3)]
        assert [e.type for e in seen] == ["device.state", "device.state", "alert"]
        assert seen[2].device_id == "boiler-1"
        assert seen[2].source == "rule:too-hot"


async def test_alert_lifecycle(tmp_path: Path, cloud_mosquitto: Mosquitto) -> None:
    settings = cloud_settings(tmp_path, cloud_mosquitto.port)
    async with (
        running_cloud(tmp_path, settings) as cloud,
        FakeGateway(cloud_mosquitto.port, "gw-a") as gateway,
        cloud.client("operator") as operator,
        cloud.client("viewer") as viewer,
    ):
        await gateway.send(RecordKind.EVENT, [alert("boiler-1", "too-hot", T0 + 1, "critical")])
        await gateway.send(RecordKind.EVENT, [alert("boiler-2", "low-pressure", T0 + 2, "warning")])
        # The same rule firing again for the same device while its alert is open: no second alert.
        await gateway.send(RecordKind.EVENT, [alert("boiler-1", "too-hot", T0 + 3, "critical", firing=2)])

        async def events_in() -> bool:
            return len((await viewer.get("/api/v1/events", params={"type": "alert"})).json()["items"]) == 3

        await until(events_in)
        active = await collect(viewer, "/api/v1/alerts", status="active")
        assert [(a["rule"], a["device"], a["severity"]) for a in active] == [
            ("low-pressure", "boiler-2", "warning"),
            ("too-hot", "boiler-1", "critical"),
        ]
        hot = active[1]
        assert hot["data"]["firing"] == 2
        assert hot["gateway"] == "gw-a"
        assert [a["id"] for a in await collect(viewer, "/api/v1/alerts", severity="critical")] == [hot["id"]]
        assert [a["id"] for a in await collect(viewer, "/api/v1/alerts", device="boiler-1")] == [hot["id"]]
        assert [a["id"] for a in await collect(viewer, "/api/v1/alerts", rule="too-hot")] == [hot["id"]]
        assert len(await collect(viewer, "/api/v1/alerts", limit=1)) == 2

        cleared = EventRecord("boiler-1", T0 + 4, "alert.cleared", {"rule": "too-hot"}, "rule:too-hot")
        await gateway.send(RecordKind.EVENT, [cleared])

        async def cleared_at() -> str | None:
            return (await viewer.get(f"/api/v1/alerts/{hot['id']}")).json()["cleared_at"]

        assert (await until(cleared_at)).startswith(_iso(T0 + 4)[:19])

        assert (await viewer.post(f"/api/v1/alerts/{hot['id']}/acknowledge")).status_code == 403
        acked = await operator.post(f"/api/v1/alerts/{hot['id']}/acknowledge")
        assert acked.status_code == 200
        body = acked.json()
        assert body["status"] == "acknowledged"
        assert body["acknowledged_by"] == f"key:{cloud.keys['operator'].split('_')[1]}"
        assert body["acknowledged_at"] is not None
        again = await operator.post(f"/api/v1/alerts/{hot['id']}/acknowledge")
        assert again.status_code == 409

        resolved = (await operator.post(f"/api/v1/alerts/{hot['id']}/resolve")).json()
        assert resolved["status"] == "resolved"
        assert resolved["resolved_by"] == body["acknowledged_by"]
        twice = await operator.post(f"/api/v1/alerts/{hot['id']}/resolve")
        assert twice.status_code == 409
        assert twice.json()["type"] == "urn:fieldline:problem:alert-state"
        assert (await operator.post("/api/v1/alerts/999999/resolve")).status_code == 404

        # Once resolved, the next firing raises a new alert.
        await gateway.send(RecordKind.EVENT, [alert("boiler-1", "too-hot", T0 + 5, "critical")])

        async def raised_again() -> list[dict[str, Any]]:
            return await collect(viewer, "/api/v1/alerts", rule="too-hot", status="active")

        [fresh] = await until(raised_again)
        assert fresh["id"] != hot["id"]
