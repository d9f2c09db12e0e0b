"""Bulk import of devices (CSV and JSON) over real HTTP: a report line per row, bad rows never block good ones,
create and upsert modes, file-level refusals, events after commit, and the row-by-row retry of a chunk that
collides with a concurrent write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core import bulk_import, registry
from cloud_core.schemas.devices import DeviceCreate
from tests.cloud_core.cloudkit import Cloud, running_cloud

CSV = {"content-type": "text/csv"}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path) as cloud:
        async with cloud.client("operator") as client:
            for gateway in ("gw-1", "gw-2"):
                assert (await client.post("/api/v1/gateways", json={"id": gateway})).status_code == 201
            assert (await client.post("/api/v1/device-types", json={"id": "thermo"})).status_code == 201
        yield cloud


@pytest.fixture
async def operator(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with cloud.client("operator") as client:
        yield client


async def import_csv(client: httpx.AsyncClient, text: str, mode: str = "create") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/devices/import", content=text.encode(), headers=CSV, params={"mode": mode}
    )
    assert response.status_code == 200, response.text
    return response.json()


def outcomes(report: dict[str, Any]) -> list[tuple[int, str | None, str]]:
    return [(r["row"], r["id"], r["status"]) for r in report["rows"]]


async def test_csv_rows_are_reported_one_by_one(operator: httpx.AsyncClient) -> None:
    text = (
        "\ufeffid,name,type,gateway,capabilities,labels.env,labels.site,status\n"
        "dev-1,Boiler,thermo,gw-1,temperature; humidity,prod,a,\n"
        "dev-2,,,gw-9,,,,\n"
        "\n"
        "bad id,,,,,,,\n"
        'dev-3,"Hall\nnorth",,gw-2,,dev,,disabled\n'
        "dev-4,too,few\n"
        "dev-1,again,,,,,,\n"
        "dev-5,,nope,,,,,\n"
        "dev-6,,,,,prod,b,broken\n"
        "dev-7,  Seven  ,,,,,,\n"
    )
    report = await import_csv(operator, text)
    assert outcomes(report) == [
        (2, "dev-1", "created"),
        (3, "dev-2", "error"),
        (5, "bad id", "error"),
        (6, "dev-3", "created"),
        (8, "dev-4", "error"),
        (9, "dev-1", "error"),
        (10, "dev-5", "error"),
        (11, "dev-6", "error"),
        (12, "dev-7", "created"),
    ], "rows are numbered by line (the header is line 1), so a spreadsheet shows the same number"
    errors = {r["row"]: r["error"] for r in report["rows"] if r["error"]}
    assert errors[3] == "no gateway 'gw-9': register it first"
    assert errors[5].startswith("id: String should match pattern")
    assert errors[8] == "expected 8 fields, found 3"
    assert errors[9] == "device 'dev-1' is also on row 2"
    assert errors[10] == "no device type 'nope': register it first"
    assert errors[11].startswith("status: Input should be 'active', 'disabled' or 'quarantined'")
    assert (report["total"], report["created"], report["updated"], report["failed"]) == (9, 3, 0, 6)

    device = (await operator.get("/api/v1/devices/dev-1")).json()
    assert device["capabilities"] == ["temperature", "humidity"]
    assert device["labels"] == {"env": "prod", "site": "a"}
    assert (device["type"], device["gateway"], device["status"]) == ("thermo", "gw-1", "active")
    hall = (await operator.get("/api/v1/devices/dev-3")).json()
    assert (hall["name"], hall["status"], hall["labels"]) == ("Hall\nnorth", "disabled", {"env": "dev"})
    assert (await operator.get("/api/v1/devices/dev-7")).json()["name"] == "Seven"
    assert (await operator.get("/api/v1/devices/dev-2")).status_code == 404


async def test_upsert_merges_and_create_refuses(cloud: Cloud, operator: httpx.AsyncClient) -> None:
    await import_csv(operator, "id,name,labels.env,labels.site\nd1,One,prod,a\nd2,Two,prod,b\n")
    refused = await import_csv(operator, "id,name\nd1,Uno\nd3,Three\n")
    assert outcomes(refused) == [(2, "d1", "error"), (3, "d3", "created")]
    assert refused["rows"][0]["error"] == "device 'd1' is registered already (mode=upsert updates it)"

    async with cloud.services.bus.subscribe() as events:
        report = await import_csv(
            operator, "id,name,labels.env,gateway\nd1,Uno,,gw-1\nd2,Two,,\nd4,,,\n", "upsert"
        )
        got = [events.queue.get_nowait() for _ in range(events.queue.qsize())]
    assert outcomes(report) == [(2, "d1", "updated"), (3, "d2", "updated"), (4, "d4", "created")]
    assert report["rows"][0]["changed"] == ["name", "gateway"]
    assert report["rows"][1]["changed"] == [], "nothing to change: no write, no event"
    assert [(e.type, e.device_id) for e in got] == [("device.registered", "d4"), ("device.updated", "d1")]
    d1 = await operator.get("/api/v1/devices/d1")
    assert d1.json()["labels"] == {"env": "prod", "site": "a"}, "an empty cell keeps the stored value"
    assert d1.headers["etag"] == 'W/"2"'
    assert (await operator.get("/api/v1/devices/d2")).headers["etag"] == 'W/"1"'

    relabel = [{"id": "d2", "labels": {"env": "dev"}, "capabilities": []}]
    merged = await operator.post("/api/v1/devices/import", json=relabel, params={"mode": "upsert"})
    assert merged.json()["rows"][0]["changed"] == ["labels"]
    assert (await operator.get("/api/v1/devices/d2")).json()["labels"] == {"env": "dev", "site": "b"}


async def test_json_rows(operator: httpx.AsyncClient) -> None:
    rows = [
        {"id": "j1", "gateway": "gw-1", "labels": {"env": "prod"}},
        "not an object",
        {"id": "j2", "colour": "blue"},
        {"id": 7},
        {"name": "no id"},
        {"id": "j3", "type": "thermo", "firmware_version": "2.0"},
    ]
    response = await operator.post("/api/v1/devices/import", json=rows)
    report = response.json()
    assert outcomes(report) == [
        (1, "j1", "created"),
        (2, None, "error"),
        (3, "j2", "error"),
        (4, None, "error"),
        (5, None, "error"),
        (6, "j3", "created"),
    ]
    errors = [r["error"] for r in report["rows"]]
    assert errors[1] == "expected an object"
    assert errors[2] == "colour: Extra inputs are not permitted"
    assert errors[3] == "id: Input should be a valid string"
    assert errors[4] == "id: Field required"
    assert (await operator.post("/api/v1/devices/import", json=[])).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        (b"id,colour\nx,blue\n", CSV, 400, "unknown column 'colour'"),
        (b"name\nx\n", CSV, 400, "the header has no id column"),
        (b"id,name,name\nx,a,b\n", CSV, 400, "duplicate column(s): name"),
        (b"id,labels.bad key\nx,1\n", CSV, 400, "column 'labels.bad key'"),
        (b"id\n\xff\xfe\n", CSV, 400, "the CSV is not UTF-8"),
        (b'{"id": "x"}', {"content-type": "application/json"}, 400, "expected a JSON array of devices"),
        (b"[{", {"content-type": "application/json"}, 400, "invalid JSON"),
        (b"id\nx\n", {"content-type": "application/xml"}, 415, "send text/csv or application/json"),
    ],
)
async def test_unreadable_files_are_refused_whole(
    operator: httpx.AsyncClient, body: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    response = await operator.post("/api/v1/devices/import", content=body, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


async def test_size_limits(operator: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_import, "MAX_ROWS", 3)
    too_many = await import_csv_status(operator, "id\na\nb\nc\nd\n")
    assert too_many.status_code == 413
    assert "at most 3 rows" in too_many.json()["detail"]
    monkeypatch.setattr(bulk_import, "MAX_BYTES", 100)
    too_big = await import_csv_status(operator, "id\n" + "x\n" * 100)
    assert too_big.status_code == 413


async def import_csv_status(client: httpx.AsyncClient, text: str) -> httpx.Response:
    return await client.post("/api/v1/devices/import", content=text.encode(), headers=CSV)


async def test_many_rows_span_several_transactions(operator: httpx.AsyncClient) -> None:
    count = bulk_import.CHUNK * 2 + 17
    rows = "".join(f"dev-{n:05d},gw-{1 + n % 2},{'prod' if n % 3 else 'dev'}\n" for n in range(count))
    report = await import_csv(operator, "id,gateway,labels.env\n" + rows)
    assert report["created"] == count
    listed = await operator.get("/api/v1/devices", params={"selector": "env=dev", "limit": 1000})
    assert len(listed.json()["items"]) == len(range(0, count, 3))


async def test_a_chunk_that_collides_is_retried_row_by_row(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer registers ``c2`` between validation and the chunk's insert: the chunk's transaction fails,
    its rows are written one by one, and only ``c2`` is reported."""
    services = cloud.services
    existing_ids = bulk_import._existing_ids
    interfered = False

    async def interfering(session: AsyncSession, model: Any, ids: set[str]) -> set[str]:
        nonlocal interfered
        if not interfered:  # after the chunk looked up its devices, before it inserts them
            interfered = True
            async with services.database.session() as other:
                await registry.create_device(other, services.bus, DeviceCreate(id="c2", name="theirs"))
        return await existing_ids(session, model, ids)

    write, writes = bulk_import._write, []

    async def counted(session: AsyncSession, bus: Any, items: Any, mode: Any) -> Any:
        writes.append([item.data.id for item in items])
        return await write(session, bus, items, mode)

    monkeypatch.setattr(bulk_import, "_existing_ids", interfering)
    monkeypatch.setattr(bulk_import, "_write", counted)
    rows = [bulk_import.ParsedRow(n, {"id": f"c{n}"}) for n in range(1, 4)]
    async with services.bus.subscribe("device.registered") as events:
        report = await bulk_import.import_devices(services.database, services.bus, rows, mode="create")
        registered = sorted(events.queue.get_nowait().device_id for _ in range(events.queue.qsize()))
    assert [(r.row, r.status) for r in report.rows] == [(1, "created"), (2, "error"), (3, "created")]
    assert report.rows[1].error == "device 'c2' is registered already (mode=upsert updates it)"
    assert writes == [["c1", "c2", "c3"], ["c1"], ["c2"], ["c3"]]
    assert registered == ["c1", "c2", "c3"], "the failed chunk published nothing of its own"
    async with services.database.session() as session:
        assert (await registry.get_device(session, "c2")).name == "theirs"


def test_csv_parsing_alone() -> None:
    rows = bulk_import.parse_csv('id,labels.env,capabilities\n"a",prod,x;;y\n')
    assert rows == [
        bulk_import.ParsedRow(2, {"id": "a", "labels": {"env": "prod"}, "capabilities": ["x", "y"]})
    ]
    assert bulk_import.parse_csv("") == []
