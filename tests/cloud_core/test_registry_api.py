"""The registry over real HTTP (SQLite): devices, device types and gateways; ETag/If-Match; merge patches;
filters, sorting and cursors; roles; problem details; events on the bus after commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_core import registry
from cloud_core.bus import Subscription
from cloud_core.schemas.devices import DeviceCreate, DevicePublic
from tests.cloud_core.cloudkit import Cloud, running_cloud
from workflows.events import Event

PATCH = {"content-type": "application/merge-patch+json"}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path) as cloud:
        yield cloud


@pytest.fixture
async def operator(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with cloud.client("operator") as client:
        yield client


def drain(events: Subscription) -> list[Event]:
    out = []
    while not events.queue.empty():
        out.append(events.queue.get_nowait())
    return out


async def patch(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], etag: str | None
) -> httpx.Response:
    headers = dict(PATCH) | ({"If-Match": etag} if etag else {})
    return await client.patch(path, json=body, headers=headers)


async def seed(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/api/v1/gateways", json={"id": "gw-1", "labels": {"site": "a"}})
    ).status_code == 201
    assert (
        await client.post("/api/v1/gateways", json={"id": "gw-2", "labels": {"site": "b"}})
    ).status_code == 201
    thermo = {"id": "thermo", "name": "Thermometer", "metrics": {"temperature": {"unit": "°C"}}}
    assert (await client.post("/api/v1/device-types", json=thermo)).status_code == 201


async def test_device_lifecycle_with_etags(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await seed(operator)
    body = {
        "id": "dev-1",
        "name": "Boiler room",
        "type": "thermo",
        "gateway": "gw-1",
        "manufacturer": "Acme",
        "model": "T-1000",
        "firmware_version": "1.4.2",
        "capabilities": ["temperature"],
        "labels": {"env": "prod", "site": "a"},
    }
    created = await operator.post("/api/v1/devices", json=body)
    assert created.status_code == 201
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"] == "/api/v1/devices/dev-1"
    device = created.json()
    assert {k: device[k] for k in body} == body
    assert device["status"] == "active"
    assert device["version"] == 1
    assert device["last_seen"] is None
    assert device["created_at"].endswith("Z")
    DevicePublic.model_validate(device)

    read = await operator.get("/api/v1/devices/dev-1")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["content-type"] == "application/json"
    assert read.json() == device

    not_modified = await operator.get("/api/v1/devices/dev-1", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == 'W/"1"'
    assert (
        await operator.get("/api/v1/devices/dev-1", headers={"If-None-Match": 'W/"9"'})
    ).status_code == 200

    changed = await patch(operator, "/api/v1/devices/dev-1", {"name": "Boiler"}, read.headers["etag"])
    assert changed.status_code == 200
    assert changed.headers["etag"] == 'W/"2"'
    assert changed.json()["name"] == "Boiler"
    assert changed.json()["updated_at"] > device["updated_at"]

    deleted = await operator.delete("/api/v1/devices/dev-1", headers={"If-Match": 'W/"2"'})
    assert deleted.status_code == 204
    missing = await operator.get("/api/v1/devices/dev-1")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "no device 'dev-1'"


async def test_patch_needs_a_current_if_match(operator: httpx.AsyncClient) -> None:
    assert (await operator.post("/api/v1/devices", json={"id": "d"})).status_code == 201

    without = await patch(operator, "/api/v1/devices/d", {"name": "x"}, None)
    assert without.status_code == 428
    assert without.json()["type"] == "urn:fieldline:problem:if-match-required"

    first = await patch(operator, "/api/v1/devices/d", {"name": "first"}, 'W/"1"')
    assert first.status_code == 200
    second = await patch(operator, "/api/v1/devices/d", {"name": "second"}, 'W/"1"')
    assert second.status_code == 412
    problem = second.json()
    assert problem["current_etag"] == 'W/"2"'
    assert 'W/"2"' in problem["detail"]
    assert second.headers["etag"] == 'W/"2"'
    assert (await operator.get("/api/v1/devices/d")).json()["name"] == "first"

    assert (await patch(operator, "/api/v1/devices/d", {"name": "s"}, '"2"')).status_code == 200, "weak match"
    assert (await patch(operator, "/api/v1/devices/d", {"name": "t"}, '"x", W/"3"')).status_code == 200
    assert (await patch(operator, "/api/v1/devices/d", {"name": "u"}, "*")).status_code == 200
    assert (await patch(operator, "/api/v1/devices/d", {"name": "v"}, "garbage")).status_code == 412
    stale_delete = await operator.delete("/api/v1/devices/d", headers={"If-Match": 'W/"1"'})
    assert stale_delete.status_code == 412
    assert (await operator.delete("/api/v1/devices/d")).status_code == 204, (
        "DELETE without If-Match is allowed"
    )


async def test_merge_patch_semantics(operator: httpx.AsyncClient) -> None:
    await seed(operator)
    body = {
        "id": "d",
        "name": "n",
        "gateway": "gw-1",
        "model": "m",
        "capabilities": ["a", "b"],
        "labels": {"env": "prod", "site": "a", "tier": "1"},
    }
    assert (await operator.post("/api/v1/devices", json=body)).status_code == 201
    merged = await patch(
        operator,
        "/api/v1/devices/d",
        {"labels": {"env": "dev", "site": None, "new": "x"}, "model": None, "capabilities": ["c"]},
        'W/"1"',
    )
    assert merged.status_code == 200
    device = merged.json()
    assert device["labels"] == {"env": "dev", "tier": "1", "new": "x"}
    assert device["model"] is None
    assert device["capabilities"] == ["c"]
    assert device["name"] == "n", "absent fields stay"
    assert device["gateway"] == "gw-1"

    cleared = await patch(
        operator, "/api/v1/devices/d", {"labels": None, "name": None, "gateway": None}, 'W/"2"'
    )
    assert (cleared.json()["labels"], cleared.json()["name"], cleared.json()["gateway"]) == ({}, "", None)

    same = await patch(operator, "/api/v1/devices/d", {"name": ""}, 'W/"3"')
    assert same.status_code == 200
    assert same.headers["etag"] == 'W/"3"', "a patch that changes nothing writes nothing"

    as_json = await operator.patch(
        "/api/v1/devices/d", json={"status": "disabled"}, headers={"If-Match": 'W/"3"'}
    )
    assert as_json.status_code == 200, "application/json is accepted too"
    assert as_json.json()["status"] == "disabled"

    for bad in ({"status": None}, {"labels": {"bad key": "x"}}, {"id": "other"}, {"gateway": "gw-9"}):
        refused = await patch(operator, "/api/v1/devices/d", bad, 'W/"4"')
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == "application/problem+json"
    unknown_gateway = await patch(operator, "/api/v1/devices/d", {"gateway": "gw-9"}, 'W/"4"')
    assert unknown_gateway.json()["errors"][0]["loc"] == ["body", "gateway"]

    text = await operator.patch(
        "/api/v1/devices/d", content=b'{"name": "x"}', headers={"content-type": "text/plain", "If-Match": "*"}
    )
    assert text.status_code == 415
    assert "application/merge-patch+json" in text.json()["detail"]


async def test_create_validation_and_conflicts(operator: httpx.AsyncClient) -> None:
    await seed(operator)
    assert (await operator.post("/api/v1/devices", json={"id": "d"})).status_code == 201
    exists = await operator.post("/api/v1/devices", json={"id": "d", "name": "again"})
    assert exists.status_code == 409
    assert exists.json()["detail"] == "device 'd' is registered already"
    for body in (
        {"id": "bad/id"},
        {"id": "x", "labels": {"env": "with space"}},
        {"id": "x", "status": "broken"},
        {"id": "x", "colour": "blue"},
        {"name": "no id"},
    ):
        assert (await operator.post("/api/v1/devices", json=body)).status_code == 422, body
    for field, value in (("type", "nope"), ("gateway", "gw-9")):
        unknown = await operator.post("/api/v1/devices", json={"id": "x", field: value})
        assert unknown.status_code == 422
        assert unknown.json()["type"] == "urn:fieldline:problem:unknown-reference"
        assert unknown.json()["errors"][0]["loc"] == ["body", field]


async def test_roles(cloud: Cloud) -> None:
    async with cloud.client("viewer") as viewer, cloud.client("admin") as admin, cloud.client(None) as anon:
        assert (await admin.post("/api/v1/devices", json={"id": "d"})).status_code == 201
        assert (await viewer.get("/api/v1/devices/d")).status_code == 200
        assert (await viewer.get("/api/v1/devices")).status_code == 200
        assert (await viewer.get("/api/v1/gateways")).status_code == 200
        assert (await viewer.get("/api/v1/device-types")).status_code == 200
        for request in (
            viewer.post("/api/v1/devices", json={"id": "e"}),
            viewer.patch("/api/v1/devices/d", json={"name": "x"}, headers={"If-Match": "*"}),
            viewer.delete("/api/v1/devices/d"),
            viewer.post("/api/v1/gateways", json={"id": "g"}),
            viewer.post("/api/v1/device-types", json={"id": "t"}),
            viewer.post("/api/v1/devices/import", json=[]),
        ):
            refused = await request
            assert refused.status_code == 403
            assert refused.json()["type"] == "urn:fieldline:problem:forbidden"
        assert (await anon.get("/api/v1/devices/d")).status_code == 401
        assert (await anon.get("/api/v1/devices")).status_code == 401


async def create_fleet(client: httpx.AsyncClient) -> None:
    await seed(client)
    fleet = [
        {
            "id": "b-2",
            "name": "Beta",
            "gateway": "gw-1",
            "type": "thermo",
            "labels": {"env": "prod", "site": "a"},
        },
        {"id": "a-1", "name": "alpha", "gateway": "gw-2", "labels": {"env": "dev", "site": "b", "tier": "1"}},
        {
            "id": "c-3",
            "name": "Gamma ray",
            "gateway": "gw-1",
            "status": "disabled",
            "labels": {"env": "prod"},
        },
        {"id": "d-4", "name": "delta", "labels": {"site": "c"}},
    ]
    for body in fleet:
        assert (await client.post("/api/v1/devices", json=body)).status_code == 201


async def ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/api/v1/devices", params=params)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["items"]]


async def test_list_filters(operator: httpx.AsyncClient) -> None:
    await create_fleet(operator)
    assert await ids(operator) == ["a-1", "b-2", "c-3", "d-4"]
    assert await ids(operator, selector="env=prod") == ["b-2", "c-3"]
    assert await ids(operator, selector="env!=prod") == ["a-1", "d-4"]
    assert await ids(operator, selector="env=prod,site in (a,b)") == ["b-2"]
    assert await ids(operator, selector="site notin (a,b)") == ["c-3", "d-4"]
    assert await ids(operator, selector="tier") == ["a-1"]
    assert await ids(operator, selector="!env") == ["d-4"]
    assert await ids(operator, status="disabled") == ["c-3"]
    assert await ids(operator, gateway="gw-1") == ["b-2", "c-3"]
    assert await ids(operator, type="thermo") == ["b-2"]
    assert await ids(operator, q="ALPHA") == ["a-1"]
    assert await ids(operator, q="-3") == ["c-3"], "q matches ids too"
    assert await ids(operator, q="%") == [], "wildcards are literal"
    assert await ids(operator, gateway="gw-1", selector="env=prod", status="active") == ["b-2"]

    bad = await operator.get("/api/v1/devices", params={"selector": "env=prod,site in (a"})
    assert bad.status_code == 400
    assert bad.json()["position"] == 19
    assert "position 19" in bad.json()["detail"]
    assert (await operator.get("/api/v1/devices", params={"status": "weird"})).status_code == 422


async def test_sorting_and_cursor_pagination(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await create_fleet(operator)
    assert await ids(operator, sort="-id") == ["d-4", "c-3", "b-2", "a-1"]
    assert await ids(operator, sort="name") == ["b-2", "c-3", "a-1", "d-4"], (
        "binary collation: capitals first"
    )
    assert await ids(operator, sort="created_at") == ["b-2", "a-1", "c-3", "d-4"]
    async with cloud.services.database.session() as session:
        for device_id, minute in (("c-3", 1), ("a-1", 2)):
            device = await registry.get_device(session, device_id)
            device.last_seen = device.created_at.replace(minute=minute)
    assert await ids(operator, sort="-last_seen") == ["a-1", "c-3", "b-2", "d-4"], "never seen: last, by id"
    assert await ids(operator, sort="last_seen") == ["c-3", "a-1", "b-2", "d-4"]

    for sort in ("id", "-id", "name", "-name", "created_at", "-last_seen", "last_seen", "updated_at"):
        expected = await ids(operator, sort=sort)
        pages, cursor = [], None
        while True:
            params = {"sort": sort, "limit": 1} | ({"cursor": cursor} if cursor else {})
            page = (await operator.get("/api/v1/devices", params=params)).json()
            pages += [d["id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == expected, sort

    first = (await operator.get("/api/v1/devices", params={"limit": 2})).json()
    assert [d["id"] for d in first["items"]] == ["a-1", "b-2"]
    for new in ("a-0", "b-3", "z-9"):  # one before the cursor, two after
        assert (await operator.post("/api/v1/devices", json={"id": new})).status_code == 201
    rest = await operator.get("/api/v1/devices", params={"limit": 100, "cursor": first["next_cursor"]})
    assert [d["id"] for d in rest.json()["items"]] == ["b-3", "c-3", "d-4", "z-9"], "no skips, no repeats"
    assert rest.json()["next_cursor"] is None

    for params in (
        {"sort": "colour"},
        {"cursor": "not-a-cursor"},
        {"cursor": first["next_cursor"], "sort": "name"},
    ):
        refused = await operator.get("/api/v1/devices", params=params)
        assert refused.status_code == 400, params
        assert refused.json()["type"] == "urn:fieldline:problem:invalid-query"
    for limit in (0, 1001):
        assert (await operator.get("/api/v1/devices", params={"limit": limit})).status_code == 422
    assert (await operator.get("/api/v1/devices", params={"limit": 1000})).status_code == 200


async def test_device_types(operator: httpx.AsyncClient) -> None:
    await seed(operator)
    read = await operator.get("/api/v1/device-types/thermo")
    assert read.headers["etag"] == 'W/"1"'
    assert read.json()["metrics"] == {"temperature": {"unit": "°C", "description": ""}}
    changed = await patch(
        operator,
        "/api/v1/device-types/thermo",
        {"metrics": {"temperature": {"description": "air"}, "humidity": {"unit": "%"}}},
        'W/"1"',
    )
    assert changed.status_code == 200
    assert changed.json()["metrics"] == {
        "temperature": {"unit": "°C", "description": "air"},
        "humidity": {"unit": "%", "description": ""},
    }
    removed = await patch(operator, "/api/v1/device-types/thermo", {"metrics": {"humidity": None}}, 'W/"2"')
    assert list(removed.json()["metrics"]) == ["temperature"]
    assert (await operator.post("/api/v1/device-types", json={"id": "thermo"})).status_code == 409
    assert [
        t["id"] for t in (await operator.get("/api/v1/device-types", params={"q": "THERM"})).json()["items"]
    ] == ["thermo"]

    assert (await operator.post("/api/v1/devices", json={"id": "d", "type": "thermo"})).status_code == 201
    in_use = await operator.delete("/api/v1/device-types/thermo")
    assert in_use.status_code == 409
    assert in_use.json()["devices"] == 1
    assert "force=true" in in_use.json()["detail"]
    forced = await operator.delete("/api/v1/device-types/thermo", params={"force": "true"})
    assert forced.status_code == 204
    device = await operator.get("/api/v1/devices/d")
    assert device.json()["type"] is None
    assert device.headers["etag"] == 'W/"2"', "detaching a device is a change to it"
    assert (await operator.get("/api/v1/device-types/thermo")).status_code == 404


async def test_gateways(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await seed(operator)
    relabelled = await patch(
        operator, "/api/v1/gateways/gw-1", {"labels": {"env": "prod"}, "name": "Hall"}, 'W/"1"'
    )
    assert relabelled.status_code == 200
    assert relabelled.json()["labels"] == {"site": "a", "env": "prod"}
    assert relabelled.json()["status"] == "unknown"
    async with cloud.services.database.session() as session:
        await registry.set_gateway_status(
            session, cloud.services.bus, "gw-1", "online", agent_version="0.3.1"
        )
    gateway = await operator.get("/api/v1/gateways/gw-1")
    assert gateway.json()["status"] == "online"
    assert gateway.json()["agent_version"] == "0.3.1"
    assert gateway.headers["etag"] == 'W/"2"', "status reports do not make an operator's ETag stale"

    assert [
        g["id"] for g in (await operator.get("/api/v1/gateways", params={"status": "online"})).json()["items"]
    ] == ["gw-1"]
    assert [
        g["id"]
        for g in (await operator.get("/api/v1/gateways", params={"selector": "site=b"})).json()["items"]
    ] == ["gw-2"]
    assert (
        await operator.patch("/api/v1/gateways/gw-1", json={"status": "offline"}, headers={"If-Match": "*"})
    ).status_code == 422, "status is observed, not written"

    assert (await operator.post("/api/v1/devices", json={"id": "d", "gateway": "gw-2"})).status_code == 201
    assert (await operator.delete("/api/v1/gateways/gw-2")).status_code == 409
    assert (await operator.delete("/api/v1/gateways/gw-2", params={"force": True})).status_code == 204
    assert (await operator.get("/api/v1/devices/d")).json()["gateway"] is None
    assert (await operator.delete("/api/v1/gateways/gw-1")).status_code == 204


async def test_events_follow_commits(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await seed(operator)
    async with cloud.services.bus.subscribe() as events:
        assert (
            await operator.post("/api/v1/devices", json={"id": "d", "gateway": "gw-1"})
        ).status_code == 201
        assert (
            await patch(operator, "/api/v1/devices/d", {"labels": {"env": "prod"}}, 'W/"1"')
        ).status_code == 200
        assert (
            await patch(operator, "/api/v1/devices/d", {"labels": {"env": "prod"}}, 'W/"2"')
        ).status_code == 200
        assert (await operator.post("/api/v1/devices", json={"id": "d"})).status_code == 409
        assert (
            await operator.post("/api/v1/devices", json={"id": "e", "gateway": "nope"})
        ).status_code == 422
        assert (await patch(operator, "/api/v1/devices/d", {"name": "x"}, 'W/"1"')).status_code == 412
        assert (await operator.delete("/api/v1/devices/d")).status_code == 204
        got = drain(events)
    assert [(e.type, e.device_id) for e in got] == [
        ("device.registered", "d"),
        ("device.updated", "d"),
        ("device.deleted", "d"),
    ]
    assert got[0].data["gateway"] == "gw-1"
    assert got[1].data["changed"] == ["labels"]
    assert got[1].data["labels"] == {"env": "prod"}
    assert got[2].data["version"] == 2, "device.deleted carries the last representation"
    assert all(e.source == "cloud" for e in got)


async def test_events_wait_for_the_commit_and_vanish_on_rollback(cloud: Cloud) -> None:
    services = cloud.services
    async with services.bus.subscribe() as events:
        async with services.database.session() as session:
            await registry.create_device(session, services.bus, DeviceCreate(id="x"))
            assert drain(events) == [], "nothing before the commit"
        assert [e.type for e in drain(events)] == ["device.registered"]

        async def write_then_fail() -> None:
            async with services.database.session() as session:
                await registry.create_device(session, services.bus, DeviceCreate(id="y"))
                raise RuntimeError("the caller fails after the write")

        with pytest.raises(RuntimeError):
            await write_then_fail()
        assert drain(events) == []
        async with services.database.session() as session:
            assert await registry.device_ids(session) == ["x"]


async def test_gateway_status_events(cloud: Cloud) -> None:
    services = cloud.services
    async with services.bus.subscribe("gateway.online", "gateway.offline") as events:
        for status in ("online", "online", "offline", "offline", "online"):
            async with services.database.session() as session:
                await registry.set_gateway_status(session, services.bus, "gw-new", status, config_version="7")
        got = drain(events)
    assert [e.type for e in got] == ["gateway.online", "gateway.offline", "gateway.online"]
    assert got[0].data["id"] == "gw-new"
    assert got[0].data["config_version"] == "7"
    async with services.database.session() as session:
        gateway = await registry.get_gateway(session, "gw-new")
        assert (gateway.status, gateway.version) == ("online", 1)
        with pytest.raises(ValueError, match="online or offline"):
            await registry.set_gateway_status(session, services.bus, "gw-new", "sleeping")


async def test_device_ids(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await create_fleet(operator)
    async with cloud.services.database.session() as session:
        assert await registry.device_ids(session) == ["a-1", "b-2", "c-3", "d-4"]
        assert await registry.device_ids(session, selector="env=prod") == ["b-2", "c-3"]
        assert await registry.device_ids(session, gateway="gw-1", type="thermo") == ["b-2"]
        assert await registry.device_ids(session, ids=["d-4", "a-1", "zz"]) == ["a-1", "d-4"]
        assert await registry.device_ids(session, ids=[]) == []
        assert await registry.device_ids(session, selector="site in (a,c)", ids=["b-2", "c-3", "d-4"]) == [
            "b-2",
            "d-4",
        ]
        with pytest.raises(registry.InvalidQuery) as caught:
            await registry.device_ids(session, selector="env in (")
        assert caught.value.status == 400


async def test_openapi_documents_the_registry(operator: httpx.AsyncClient) -> None:
    spec = (await operator.get("/openapi.json")).json()
    patch_op = spec["paths"]["/api/v1/devices/{device_id}"]["patch"]
    assert set(patch_op["requestBody"]["content"]) == {"application/merge-patch+json", "application/json"}
    assert {"200", "412", "415", "428"} <= set(patch_op["responses"])
    read = spec["paths"]["/api/v1/devices/{device_id}"]["get"]
    assert "ETag" in read["responses"]["200"]["headers"]
    assert read["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DevicePublic"
    }
    imports = spec["paths"]["/api/v1/devices/import"]["post"]
    assert set(imports["requestBody"]["content"]) == {"text/csv", "application/json"}
    assert "409" in spec["paths"]["/api/v1/device-types/{type_id}"]["delete"]["responses"]
