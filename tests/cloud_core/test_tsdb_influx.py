"""The InfluxDB 2 copy of every write. No InfluxDB 2 server can be installed on the test machines (Debian ships
InfluxDB 1.6, which has no ``/api/v2/write``), so most tests run against a recording HTTP server that checks the
request InfluxDB 2 documents, and one writes through InfluxDB 2's write API as VictoriaMetrics implements it (a
real server parsing the lines, with ``org``, ``bucket``, ``precision`` and the token header) and reads the values
back. Neither shows that InfluxDB itself accepts the lines; the line protocol is the one both document."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest

from cloud_core.settings import CloudSettings, InfluxSettings
from cloud_core.tsdb import InfluxDBTarget, Point, Query, open_timeseries
from tests.cloud_core.tsdbkit import recent_hour, victoria_server
from tests.factories import eventually


@dataclass
class Recorder:
    """Answers each write with the next status of ``statuses`` (204 once they run out) and records it."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)


@pytest.fixture
def influx() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            recorder.requests.append((self.path, self.headers.get("Authorization", ""), body))
            status = recorder.statuses.pop(0) if recorder.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def settings(recorder: Recorder) -> InfluxSettings:
    return InfluxSettings(url=recorder.url, token="s3cret", org="fleet", bucket="telemetry")


async def test_every_write_is_copied_as_line_protocol(tmp_path: Path, influx: Recorder) -> None:
    t0 = recent_hour(2)
    config = CloudSettings.model_validate(
        {"data_dir": str(tmp_path), "timeseries": {"influxdb": settings(influx).model_dump()}}
    )
    async with open_timeseries(config) as store:
        await store.write([Point("dev-1", t0, {"temperature": 21.5, "temperature@max": 23.0})])
        await store.write([Point("dev-2", t0 + 1000, {"rssi": -70.0})])
        answer = await store.query(Query.aligned(["dev-1"], ["temperature"], t0, t0 + 60_000, 60_000, "max"))
        assert answer.series["dev-1"]["temperature"] == [23.0]  # queries read the primary store
        # the server records a request before it answers, and the target counts the points once answered
        await eventually(lambda: store.stats()["influxdb_points_written"] == 3)
        assert len(influx.requests) == 2
    path, auth, body = influx.requests[0]
    assert path.startswith("/api/v2/write?")
    assert {"org=fleet", "bucket=telemetry", "precision=ms"} <= set(path.split("?", 1)[1].split("&"))
    assert auth == "Token s3cret"
    assert body == f"fieldline,device=dev-1 temperature=21.5,temperature@max=23.0 {t0}".encode()
    assert influx.requests[1][2] == f"fieldline,device=dev-2 rssi=-70.0 {t0 + 1000}".encode()


async def test_unavailable_influxdb_is_retried_and_refused_writes_are_dropped(influx: Recorder) -> None:
    influx.statuses = [503, 503, 400]
    t0 = recent_hour(2)
    async with InfluxDBTarget(settings(influx), retry_delays=(0.01, 0.05)) as target:
        target.submit([Point("dev-1", t0, {"v": 1.0})])  # 503, 503, then 400: dropped
        target.submit([Point("dev-1", t0 + 1, {"v": 2.0, "w": 3.0})])  # 204
        await eventually(lambda: target.stats()["queued_batches"] == 0)
        assert len(influx.requests) == 4
        assert influx.requests[-1][2] == f"fieldline,device=dev-1 v=2.0,w=3.0 {t0 + 1}".encode()
        assert target.stats() == {
            "points_written": 2,
            "points_dropped": 1,
            "write_errors": 3,
            "queued_batches": 0,
        }


async def test_a_full_queue_drops_the_oldest_and_shutdown_drops_what_cannot_be_sent(influx: Recorder) -> None:
    influx.statuses = [503] * 1000
    async with InfluxDBTarget(
        settings(influx), max_batches=2, retry_delays=(0.01, 0.01), drain_timeout=0.2
    ) as target:
        for i in range(4):
            target.submit([Point("dev-1", recent_hour(2) + i, {"v": float(i)})])
        assert target.stats()["points_dropped"] == 2
    assert target.stats()["points_dropped"] == 4


async def test_a_server_speaking_the_v2_write_api_stores_what_is_copied(tmp_path: Path) -> None:
    t0 = recent_hour(2)
    with victoria_server(tmp_path / "vm") as server:
        target_settings = InfluxSettings(url=server.url, token="s3cret", org="fleet", bucket="telemetry")
        async with InfluxDBTarget(target_settings) as target:
            target.submit([Point("dev-1", t0, {"temperature": 21.5, "door": 1.0})])
            target.submit([Point("dev-1", t0 + 1000, {"temperature": 21.75})])
            await eventually(lambda: target.stats()["queued_batches"] == 0)
            assert target.stats()["points_written"] == 3
            assert target.stats()["write_errors"] == 0
        server.flush()
        async with httpx.AsyncClient(base_url=server.url) as http:
            exported = (await http.post("/api/v1/export", data={"match[]": '{device="dev-1"}'})).text
    series = {
        line["metric"]["__name__"]: list(zip(line["timestamps"], line["values"], strict=True))
        for line in map(orjson.loads, exported.splitlines())
    }
    assert series == {
        "fieldline_temperature": [(t0, 21.5), (t0 + 1000, 21.75)],
        "fieldline_door": [(t0, 1.0)],
    }
