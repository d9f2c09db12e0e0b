"""The registry API on both engines, SQLite and PostgreSQL: what depends on the database (JSON label queries,
NULL ordering and keyset cursors, concurrent writes, foreign keys, the read path without the ORM) must behave
the same on each. PostgreSQL runs on 127.0.0.1:5432 (skipped when absent, a failure under
FIELDLINE_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_core import registry
from cloud_core.labels import parse_selector
from cloud_core.schemas.devices import DeviceCreate
from cloud_core.settings import CloudSettings, DatabaseSettings
from tests.cloud_core.cloudkit import Cloud, postgres_database, running_cloud

PATCH = {"content-type": "application/merge-patch+json"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CloudSettings]:
    """Settings of a fresh cloud core on each engine."""
    if request.param == "sqlite":
        yield CloudSettings(data_dir=tmp_path / "cloud")
        return
    async with postgres_database() as url:
        yield CloudSettings(data_dir=tmp_path / "cloud", database=DatabaseSettings(url=url))


@pytest.fixture
async def cloud(backend: CloudSettings, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path, backend) as cloud:
        yield cloud


@pytest.fixture
async def operator(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with cloud.client("operator") as client:
        yield client


async def all_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    found, cursor = [], None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/v1/devices", params=query)
        assert response.status_code == 200, response.text
        found += [d["id"] for d in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


async def test_crud_etags_and_merge_patch(operator: httpx.AsyncClient) -> None:
    assert (await operator.post("/api/v1/gateways", json={"id": "gw-1"})).status_code == 201
    body = {"id": "dev-1", "gateway": "gw-1", "labels": {"env": "prod", "site": "a"}, "capabilities": ["t"]}
    created = await operator.post("/api/v1/devices", json=body)
    assert created.status_code == 201
    read = await operator.get("/api/v1/devices/dev-1")
    assert read.json() == created.json(), "the read path without the ORM answers exactly what the ORM wrote"
    assert read.json()["created_at"].endswith("Z")
    changed = await operator.patch(
        "/api/v1/devices/dev-1",
        json={"labels": {"site": None, "tier": "1"}, "name": "Boiler"},
        headers=PATCH | {"If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200
    assert changed.json()["labels"] == {"env": "prod", "tier": "1"}
    assert (await operator.get("/api/v1/devices/dev-1")).json() == changed.json()
    stale = await operator.patch(
        "/api/v1/devices/dev-1", json={"name": "x"}, headers=PATCH | {"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["current_etag"] == 'W/"2"'
    assert (await operator.post("/api/v1/devices", json={"id": "dev-1"})).status_code == 409
    assert (await operator.delete("/api/v1/devices/dev-1")).status_code == 204
    assert (await operator.get("/api/v1/devices/dev-1")).status_code == 404


async def test_selectors_agree_with_the_matcher(operator: httpx.AsyncClient) -> None:
    rng = random.Random(3)
    keys, values = ["env", "site", "tier", "app.io/name"], ["prod", "dev", "a", "b", "", "1.2"]
    fleet = {
        f"d{n:03d}": {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        for n in range(120)
    }
    rows = [{"id": device_id, "labels": labels} for device_id, labels in fleet.items()]
    assert (await operator.post("/api/v1/devices/import", json=rows)).json()["created"] == len(rows)
    selectors = [
        "env=prod",
        "env!=prod",
        "env=",
        "site in (a,b)",
        "site notin (a,b)",
        "tier",
        "!tier",
        "app.io/name=1.2",
        "env=prod,site in (a),!tier",
        "env!=dev,tier notin (prod,1.2),app.io/name",
    ]
    for text in selectors:
        selector = parse_selector(text)
        expected = sorted(d for d, labels in fleet.items() if selector.matches(labels))
        assert await all_ids(operator, selector=text, limit=1000) == expected, text


async def test_sorting_with_nulls_and_cursors_under_inserts(
    cloud: Cloud, operator: httpx.AsyncClient
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    names = ["delta", "Alpha", "charlie", "bravo", "alpha", "Echo"]
    for n, name in enumerate(names):
        assert (await operator.post("/api/v1/devices", json={"id": f"d{n}", "name": name})).status_code == 201
    seen = {"d0": 3, "d2": 1, "d3": 3, "d5": 2}  # d1 and d4 never seen; d0 and d3 tie
    async with cloud.services.database.session() as session:
        for device_id, minutes in seen.items():
            (await registry.get_device(session, device_id)).last_seen = base + timedelta(minutes=minutes)

    assert await all_ids(operator, sort="-last_seen", limit=1) == ["d0", "d3", "d5", "d2", "d1", "d4"]
    assert await all_ids(operator, sort="last_seen", limit=2) == ["d2", "d5", "d0", "d3", "d1", "d4"]
    by_name = sorted(range(len(names)), key=lambda n: (names[n].encode(), n))
    assert await all_ids(operator, sort="name", limit=1) == [f"d{n}" for n in by_name]
    assert await all_ids(operator, sort="-id", limit=4) == [f"d{n}" for n in reversed(range(len(names)))]

    first = (await operator.get("/api/v1/devices", params={"sort": "-last_seen", "limit": 3})).json()
    assert [d["id"] for d in first["items"]] == ["d0", "d3", "d5"]
    async with cloud.services.database.session() as session:
        for device_id, minutes in (("e-late", 9), ("e-tie", 2), ("e-early", 0)):
            await registry.create_device(session, cloud.services.bus, DeviceCreate(id=device_id))
            (await registry.get_device(session, device_id)).last_seen = base + timedelta(minutes=minutes)
    rest = await all_ids(operator, sort="-last_seen", limit=2, cursor=first["next_cursor"])
    assert rest == ["e-tie", "d2", "e-early", "d1", "d4"], "rows before the cursor stay behind; none repeat"


async def test_concurrent_patches_with_one_etag(operator: httpx.AsyncClient) -> None:
    assert (await operator.post("/api/v1/devices", json={"id": "d"})).status_code == 201

    async def change(n: int) -> httpx.Response:
        return await operator.patch(
            "/api/v1/devices/d", json={"name": f"writer {n}"}, headers=PATCH | {"If-Match": 'W/"1"'}
        )

    responses = await asyncio.gather(*(change(n) for n in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 7, [r.text for r in responses if r.status_code not in (200, 412)]
    winner = next(r for r in responses if r.status_code == 200).json()["name"]
    final = await operator.get("/api/v1/devices/d")
    assert (final.json()["name"], final.headers["etag"]) == (winner, 'W/"2"')


async def test_concurrent_status_reports_change_once(cloud: Cloud) -> None:
    services = cloud.services

    async def report() -> bool:
        async with services.database.session() as session:
            return await registry.set_gateway_status(
                session, services.bus, "gw-x", "online", agent_version="1"
            )

    async with services.bus.subscribe("gateway.online") as events:
        changed = await asyncio.gather(*(report() for _ in range(6)))
        assert sum(changed) == 1
        assert events.queue.qsize() == 1
    async with services.database.session() as session:
        gateway = await registry.get_gateway(session, "gw-x")
        assert (gateway.status, gateway.agent_version, gateway.version) == ("online", "1", 1)


async def test_delete_in_use_and_device_ids(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    assert (await operator.post("/api/v1/device-types", json={"id": "thermo"})).status_code == 201
    assert (await operator.post("/api/v1/gateways", json={"id": "gw-1"})).status_code == 201
    for n in range(3):
        body = {"id": f"d{n}", "type": "thermo", "gateway": "gw-1", "labels": {"n": str(n)}}
        assert (await operator.post("/api/v1/devices", json=body)).status_code == 201
    assert (await operator.delete("/api/v1/device-types/thermo")).json()["devices"] == 3
    assert (await operator.delete("/api/v1/gateways/gw-1")).status_code == 409
    async with cloud.services.database.session() as session:
        assert await registry.device_ids(session, gateway="gw-1", selector="n in (0,2)") == ["d0", "d2"]
        assert await registry.device_ids(session, type="thermo", ids=["d1", "d9"]) == ["d1"]
    assert (await operator.delete("/api/v1/device-types/thermo", params={"force": True})).status_code == 204
    assert (await operator.delete("/api/v1/gateways/gw-1", params={"force": True})).status_code == 204
    device = await operator.get("/api/v1/devices/d1")
    assert (device.json()["type"], device.json()["gateway"], device.headers["etag"]) == (None, None, 'W/"3"')


async def test_bulk_upsert(operator: httpx.AsyncClient) -> None:
    csv = "id,name,labels.env\nd1,One,prod\nd2,Two,dev\n"
    created = await operator.post("/api/v1/devices/import", content=csv, headers={"content-type": "text/csv"})
    assert created.json()["created"] == 2
    again = await operator.post(
        "/api/v1/devices/import",
        json=[{"id": "d1", "labels": {"site": "a"}}, {"id": "d3"}],
        params={"mode": "upsert"},
    )
    assert [(r["id"], r["status"], r["changed"]) for r in again.json()["rows"]] == [
        ("d1", "updated", ["labels"]),
        ("d3", "created", []),
    ]
    assert (await operator.get("/api/v1/devices/d1")).json()["labels"] == {"env": "prod", "site": "a"}
