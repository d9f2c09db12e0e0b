"""The audit log over real HTTP: every write (refused ones too) is recorded before its response is sent, reads
are not, secrets never are; admins read it with filters and cursor pagination, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cloud_core.api.deps import OperatorDep
from cloud_core.app import create_app
from cloud_core.audit import _resource
from cloud_core.auth import Role, create_key
from cloud_core.models import AuditEntry
from cloud_core.services import open_services
from cloud_core.settings import CloudSettings, DatabaseSettings
from tests.cloud_core.cloudkit import Cloud, postgres_database, running_cloud


@contextlib.asynccontextmanager
async def cloud_on(backend: str, tmp_path: Path) -> AsyncIterator[Cloud]:
    if backend == "sqlite":
        async with running_cloud(tmp_path) as cloud:
            yield cloud
        return
    async with postgres_database() as url:
        settings = CloudSettings(data_dir=tmp_path / "cloud", database=DatabaseSettings(url=url))
        async with running_cloud(tmp_path, settings) as cloud:
            yield cloud


async def entries(admin: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await admin.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_every_write_is_recorded_refused_ones_too_and_reads_are_not(tmp_path: Path) -> None:
    async with (
        running_cloud(tmp_path) as cloud,
        cloud.client() as admin,
        cloud.client("viewer") as viewer,
        cloud.client(None) as anonymous,
    ):
        admin_key = f"key:{cloud.keys['admin'].split('_')[1]}"
        viewer_key = f"key:{cloud.keys['viewer'].split('_')[1]}"
        before = datetime.now(UTC)
        created = (await admin.post("/api/v1/keys", json={"role": "operator", "name": "plc"})).json()
        # The entry is committed before the response is sent: readable at once, no waiting.
        [first] = await entries(admin)
        assert first["principal"] == admin_key
        assert first["role"] == "admin"
        assert (first["method"], first["path"], first["status_code"]) == ("POST", "/api/v1/keys", 201)
        assert (first["resource"], first["resource_id"]) == ("keys", created["id"])
        assert first["detail"] == {"fields": ["name", "role"]}
        assert before <= datetime.fromisoformat(first["ts"]) <= datetime.now(UTC)

        await admin.get("/api/v1/keys")
        await admin.get(f"/api/v1/keys/{created['id']}")
        await viewer.post("/api/v1/keys", json={"role": "admin"})
        await anonymous.delete(f"/api/v1/keys/{created['id']}")
        await anonymous.post("/api/v1/keys", json={}, headers={"X-API-Key": f"fl_{created['id']}_guess"})
        await admin.post("/api/v1/keys", json={"role": "root", "token": "do-not-log-me"})
        await admin.delete("/api/v1/keys/nosuchkey")
        await admin.post("/api/v1/nothing/here", json={})
        await admin.delete(f"/api/v1/keys/{created['id']}")

        log = await entries(admin)
        assert [(e["method"], e["path"], e["status_code"], e["principal"], e["role"]) for e in log] == [
            ("DELETE", f"/api/v1/keys/{created['id']}", 200, admin_key, "admin"),
            ("POST", "/api/v1/nothing/here", 404, "anonymous", None),
            ("DELETE", "/api/v1/keys/nosuchkey", 404, admin_key, "admin"),
            ("POST", "/api/v1/keys", 422, admin_key, "admin"),
            ("POST", "/api/v1/keys", 401, "anonymous", None),
            ("DELETE", f"/api/v1/keys/{created['id']}", 401, "anonymous", None),
            ("POST", "/api/v1/keys", 403, viewer_key, "viewer"),
            ("POST", "/api/v1/keys", 201, admin_key, "admin"),
        ]
        revoked, unrouted, missing, invalid, guessed, anonymous_delete, forbidden, _ = log
        assert (revoked["resource"], revoked["resource_id"], revoked["detail"]) == ("keys", created["id"], {})
        assert (unrouted["resource"], unrouted["resource_id"]) == (None, None)
        assert missing["detail"]["problem"]["type"] == "urn:fieldline:problem:not-found"
        assert invalid["detail"]["fields"] == ["role", "token"]
        assert invalid["detail"]["problem"]["type"] == "urn:fieldline:problem:validation"
        assert guessed["detail"]["claimed"] == f"key:{created['id']}"
        assert anonymous_delete["detail"]["problem"]["detail"].startswith("credentials required")
        assert "claimed" not in anonymous_delete["detail"]
        assert forbidden["detail"]["problem"] == {
            "type": "urn:fieldline:problem:forbidden",
            "detail": f"this needs the admin role; {viewer_key} is viewer",
        }
        text = (await admin.get("/api/v1/audit")).text
        for secret in (created["token"], created["token"].split("_", 2)[2], "do-not-log-me", "guess"):
            assert secret not in text

        metrics = (await anonymous.get("/metrics")).text
        assert "fieldline_cloud_audit_entries_written 8.0" in metrics
        assert "fieldline_cloud_audit_write_failures 0.0" in metrics


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_filters_and_cursor_pagination(tmp_path: Path, backend: str) -> None:
    async with (
        cloud_on(backend, tmp_path) as cloud,
        cloud.client() as admin,
        cloud.client("viewer") as viewer,
    ):
        created = [
            (await admin.post("/api/v1/keys", json={"role": "viewer", "name": f"k{i}"})).json()
            for i in range(5)
        ]
        middle = datetime.now(UTC)
        for key in created[:3]:
            await admin.delete(f"/api/v1/keys/{key['id']}")
        await viewer.post("/api/v1/keys", json={"role": "viewer"})
        all_entries = await entries(admin)
        assert len(all_entries) == 9

        pages, cursor = [], None
        while True:
            params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
            page = (await admin.get("/api/v1/audit", params=params)).json()
            pages.append([e["id"] for e in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [4, 4, 1]
        assert [i for p in pages for i in p] == [e["id"] for e in all_entries]
        assert all_entries == sorted(all_entries, key=lambda e: e["id"], reverse=True)

        viewer_key = f"key:{cloud.keys['viewer'].split('_')[1]}"
        assert [e["status_code"] for e in await entries(admin, principal=viewer_key)] == [403]
        assert len(await entries(admin, resource="keys")) == 9
        assert await entries(admin, resource="key") == []
        assert await entries(admin, resource="devices") == []
        by_id = await entries(admin, resource_id=created[0]["id"])
        assert [e["method"] for e in by_id] == ["DELETE", "POST"]
        assert len(await entries(admin, since=middle.isoformat())) == 4
        assert len(await entries(admin, until=middle.isoformat())) == 5
        local = middle.astimezone(timezone(timedelta(hours=-5)))
        assert len(await entries(admin, since=local.isoformat())) == 4
        assert len(await entries(admin, since=middle.isoformat(), principal=viewer_key)) == 1
        assert (
            len(await entries(admin, since="0001-01-01T00:00:00+05:00", until="9999-12-31T23:59-05:00")) == 9
        )

        for bad in ("abc", "0", "-3", "1" * 40, ""):
            bad_cursor = await admin.get("/api/v1/audit", params={"cursor": bad})
            assert bad_cursor.status_code == 422
            assert bad_cursor.json()["errors"][0]["loc"] == ["query", "cursor"]
        assert (await admin.get("/api/v1/audit", params={"limit": 0})).status_code == 422
        assert (await admin.get("/api/v1/audit", params={"since": "yesterday"})).status_code == 422


async def test_an_unhandled_error_in_a_write_is_recorded_as_500(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path / "cloud")
    app = create_app(settings)

    async def explode(payload: dict[str, int], principal: OperatorDep) -> None:
        raise RuntimeError("boom")

    app.router.add_api_route("/api/v1/explode/{thing_id}", explode, methods=["PUT"])
    async with open_services(settings) as services:
        app.state.services = services
        operator = (await create_key(services.database, Role.OPERATOR)).token
        admin = (await create_key(services.database, Role.ADMIN)).token
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            failed = await client.put("/api/v1/explode/t-1", json={"a": 1}, headers={"X-API-Key": operator})
            assert failed.status_code == 500
            assert failed.json()["type"] == "urn:fieldline:problem:internal"
            log = (await client.get("/api/v1/audit", headers={"X-API-Key": admin})).json()["items"]
    assert [(e["method"], e["resource"], e["resource_id"], e["status_code"], e["role"]) for e in log] == [
        ("PUT", "explode", "t-1", 500, "operator")
    ]
    assert log[0]["detail"] == {"fields": ["a"]}


def test_resource_and_id_come_from_the_route_template() -> None:
    assert _resource("/api/v1/devices/{device_id}/commands", {"device_id": "dev-1"}) == (
        "devices/commands",
        "dev-1",
    )
    assert _resource(
        "/api/v1/gateways/{gateway_id}/devices/{device_id}", {"gateway_id": "g", "device_id": "d"}
    ) == (
        "gateways/devices",
        "g/d",
    )
    assert _resource("/api/v2/files/{path:path}", {"path": "a/b"}) == ("files", "a/b")
    assert _resource("/api/v1/keys", {}) == ("keys", None)
    assert _resource(None, {}) == (None, None)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_entries_past_the_retention_are_pruned(backend: str, tmp_path: Path) -> None:
    async with cloud_on(backend, tmp_path) as cloud, cloud.client("admin") as admin:
        for n in range(3):
            assert (await admin.post("/api/v1/gateways", json={"id": f"gw-{n}"})).status_code == 201
        audit = cloud.services.parts["audit"]
        assert audit.settings.retention == 365 * 86400
        now = datetime.now(UTC)
        async with cloud.services.database.session() as session:
            ids = (await session.execute(select(AuditEntry.id).order_by(AuditEntry.id))).scalars().all()
            assert len(ids) == 3
            for entry_id, age in zip(ids, (400, 366, 10), strict=True):
                await session.execute(
                    update(AuditEntry).where(AuditEntry.id == entry_id).values(ts=now - timedelta(days=age))
                )
        assert await audit.prune(now) == 2
        assert await audit.prune(now) == 0
        kept = (await admin.get("/api/v1/audit")).json()["items"]
        assert [e["resource_id"] for e in kept] == ["gw-2"]
        metrics = (await admin.get("/metrics")).text
        assert "fieldline_cloud_audit_entries_pruned 2.0" in metrics
