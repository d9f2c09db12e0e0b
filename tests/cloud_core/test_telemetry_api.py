"""The telemetry API over real HTTP: one device's aligned series, many devices by selector, latest values, the
streamed CSV export, errors as problem details; on SQLite and on a real VictoriaMetrics."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_core.settings import CloudSettings
from cloud_core.tsdb import Point
from tests.cloud_core.cloudkit import Cloud, running_cloud
from tests.cloud_core.tsdbkit import HOUR, raw_points, recent_hour, victoria_server

MINUTE = 60_000
T0 = recent_hour(3)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def to_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def fleet(cloud: Cloud) -> list[Point]:
    """Gateways and devices registered through the API, and an hour of 1 Hz data written to the store."""
    async with cloud.client("operator") as operator:
        for gateway in ("gw-north", "gw-south"):
            assert (await operator.post("/api/v1/gateways", json={"id": gateway})).status_code == 201
        for device, gateway, site in (
            ("d1", "gw-north", "north"),
            ("d2", "gw-north", "north"),
            ("d3", "gw-south", "south"),
        ):
            body = {"id": device, "gateway": gateway, "labels": {"site": site}}
            assert (await operator.post("/api/v1/devices", json=body)).status_code == 201
    points = raw_points(["d1", "d2", "d3"], T0, 3600)
    await cloud.services.parts["tsdb"].write(points)
    return points


async def test_one_device_in_aligned_buckets(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud, cloud.client("viewer") as viewer:
        points = await fleet(cloud)
        params = {
            "metrics": "temperature,rssi",
            "start": iso(T0 + 30_000),
            "end": iso(T0 + 10 * MINUTE),
            "every": "1m",
        }
        body = (await viewer.get("/api/v1/devices/d1/telemetry", params=params)).json()
        assert (body["start"], body["end"]) == (iso(T0), iso(T0 + 10 * MINUTE))  # rounded to whole buckets
        assert (body["every_ms"], body["agg"]) == (MINUTE, "mean")
        assert body["timestamps"] == [T0 + i * MINUTE for i in range(10)]
        first = [p.values["temperature"] for p in points if p.device_id == "d1" and p.ts < T0 + MINUTE]
        assert body["series"]["temperature"][0] == pytest.approx(sum(first) / len(first), rel=1e-12)
        assert set(body["series"]) == {"temperature", "rssi"}

        everything = await viewer.get(
            "/api/v1/devices/d1/telemetry",
            params={"start": str(T0 / 1000), "end": str(T0 / 1000 + 3600), "every": "1h", "agg": "count"},
        )
        assert everything.json()["series"] == {
            m: [3600.0] for m in ("door", "humidity", "rssi", "temperature")
        }
        p95 = await viewer.get(
            "/api/v1/devices/d1/telemetry", params={**params, "agg": "p95", "every": "30s"}
        )
        assert p95.json()["timestamps"][0] == T0 + 30_000  # 30 s buckets: the start was on one
        assert len(p95.json()["series"]["temperature"]) == 19

        for query, status in (
            ({"every": "7 parsecs"}, 422),
            ({"every": "0s"}, 422),
            ({"agg": "median"}, 422),
            ({"metrics": "bad name"}, 422),
            ({"start": iso(T0), "end": iso(T0)}, 422),
            ({"start": iso(T0 - 400 * 86_400_000), "end": iso(T0), "every": "1s"}, 422),  # too many buckets
        ):
            response = await viewer.get("/api/v1/devices/d1/telemetry", params=query)
            assert response.status_code == status, (query, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        missing = await viewer.get("/api/v1/devices/nobody/telemetry")
        assert missing.status_code == 404
        async with cloud.client(None) as anonymous:
            assert (await anonymous.get("/api/v1/devices/d1/telemetry")).status_code == 401


async def test_many_devices_by_selector_and_latest_values(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud, cloud.client("viewer") as viewer:
        points = await fleet(cloud)
        params = {
            "selector": "site=north",
            "metrics": "humidity",
            "start": iso(T0),
            "end": iso(T0 + HOUR),
            "every": "15m",
            "agg": "max",
        }
        body = (await viewer.get("/api/v1/telemetry", params=params)).json()
        assert [d["device_id"] for d in body["devices"]] == ["d1", "d2"]
        want = max(p.values["humidity"] for p in points if p.device_id == "d2" and p.ts < T0 + 15 * MINUTE)
        assert body["devices"][1]["series"]["humidity"][0] == want
        by_gateway = await viewer.get(
            "/api/v1/telemetry", params={**params, "selector": None, "gateway": "gw-south"}
        )
        assert [d["device_id"] for d in by_gateway.json()["devices"]] == ["d3"]
        by_id = await viewer.get(
            "/api/v1/telemetry", params={**params, "selector": None, "devices": "d3,d1,ghost"}
        )
        assert [d["device_id"] for d in by_id.json()["devices"]] == ["d1", "d3"]  # registered ones, sorted
        bad = await viewer.get("/api/v1/telemetry", params={"selector": "site in (north"})
        assert bad.status_code == 400

        latest = (
            await viewer.get("/api/v1/telemetry/latest", params={"gateway": "gw-north", "within": "1d"})
        ).json()
        assert [d["device_id"] for d in latest["devices"]] == ["d1", "d2"]
        newest = max((p for p in points if p.device_id == "d2"), key=lambda p: p.ts)
        rssi = latest["devices"][1]["metrics"]["rssi"]
        assert (to_ms(rssi["time"]), rssi["value"]) == (newest.ts, newest.values["rssi"])
        assert set(latest["devices"][0]["metrics"]) == {"door", "humidity", "rssi", "temperature"}
        short = (
            await viewer.get("/api/v1/telemetry/latest", params={"devices": "d1", "within": "1s"})
        ).json()
        assert short["devices"] == [{"device_id": "d1", "metrics": {}}]  # nothing in the last second

        metrics = (await viewer.get("/metrics")).text
        assert "fieldline_cloud_tsdb_points_written 43200.0" in metrics
        assert (await viewer.get("/readyz")).json()["checks"]["tsdb"] == "ok"


async def test_csv_export_streams_in_pieces(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud, cloud.client("viewer") as viewer:
        points = await fleet(cloud)
        params = {"start": iso(T0), "end": iso(T0 + HOUR), "every": "250ms", "agg": "last"}  # 14,400 buckets
        async with viewer.stream("GET", "/api/v1/devices/d3/telemetry.csv", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            assert response.headers["content-disposition"] == 'attachment; filename="d3.csv"'
            text = "".join([chunk async for chunk in response.aiter_text()])
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["time", "door", "humidity", "rssi", "temperature"]
        mine = sorted((p for p in points if p.device_id == "d3"), key=lambda p: p.ts)
        assert len(rows) == 1 + len(
            mine
        )  # one row per sample: 250 ms buckets hold one each, empty ones left out
        assert float(rows[1][4]) == mine[0].values["temperature"]
        assert rows[-1][3] == repr(mine[-1].values["rssi"])

        named = await viewer.get(
            "/api/v1/devices/d3/telemetry.csv",
            params={"metrics": "rssi", "start": iso(T0), "end": iso(T0 + 2 * MINUTE), "agg": "count"},
        )
        assert named.text.splitlines() == ["time,rssi", f"{iso(T0)},60.0", f"{iso(T0 + MINUTE)},60.0"]
        assert (await viewer.get("/api/v1/devices/nobody/telemetry.csv")).status_code == 404


async def test_the_same_answers_on_victoriametrics(tmp_path: Path) -> None:
    params = {"start": iso(T0), "end": iso(T0 + HOUR), "every": "5m"}
    answers = []
    with victoria_server(tmp_path / "vm") as server:
        for backend in ("sqlite", "victoriametrics"):
            settings = CloudSettings.model_validate(
                {"data_dir": str(tmp_path / backend), "timeseries": {"backend": backend, "url": server.url}}
            )
            async with running_cloud(tmp_path / backend, settings) as cloud, cloud.client("viewer") as viewer:
                await fleet(cloud)
                server.flush()
                assert (await viewer.get("/readyz")).json()["checks"]["tsdb"] == "ok"
                body = (await viewer.get("/api/v1/telemetry", params={**params, "agg": "max"})).json()
                answers.append(body)
    assert answers[0] == answers[1]
    assert answers[0]["devices"][0]["series"]["temperature"][0] is not None
