"""/healthz and /metrics over real HTTP while the agent runs."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent.agent import Agent
from tests.factories import Publisher, agent_config, eventually
from tests.servicekit import Mosquitto


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_health_and_metrics(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = agent_config(tmp_path, mosquitto.url, None)
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set())
        pub = Publisher(mosquitto.port)
        pub.wait_all(
            [pub.telemetry("dev-1", time.time(), {"t": 1.5}), pub.publish("devices/dev-1/telemetry", b"{")]
        )
        pub.close()
        await eventually(lambda: agent.metrics.committed == 2)
        port = agent.status_server.port
        status, body = await asyncio.to_thread(get, port, "/healthz")
        health = json.loads(body)
        assert status == 200
        assert health["status"] == "ok"
        assert health["gateway"] == "gw-test"
        assert health["southbound_connected"] is True
        assert health["uplink_connected"] is False  # disabled: store-and-forward keeps the agent healthy
        assert health["outbox_records"] == 1
        assert health["quarantine_rows"] == 1
        status, text = await asyncio.to_thread(get, port, "/metrics")
        assert status == 200
        assert 'fieldline_edge_messages_received_total{transport="mqtt"} 2.0' in text
        assert 'fieldline_edge_quarantined_total{reason="bad_json"} 1.0' in text
        assert "fieldline_edge_outbox_records 1.0" in text
        assert "fieldline_edge_commit_seconds_bucket" in text
        assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404


async def test_health_fails_while_the_store_cannot_commit_and_recovers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = agent_config(tmp_path, mosquitto.url, None)
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set())
        port = agent.status_server.port
        # Every write now fails inside SQLite, as on a full or failing card.
        await agent.thread.run(agent.conn.execute, "PRAGMA query_only=1")
        pub = Publisher(mosquitto.port)
        pub.wait_all([pub.telemetry("dev-1", time.time(), {"t": i}) for i in range(5)])
        await eventually(lambda: agent.metrics.commit_errors >= 1)
        status, body = await asyncio.to_thread(get, port, "/healthz")
        assert status == 503
        assert "readonly" in json.loads(body)["last_error"]
        # The card comes back: the writes that failed are retried and nothing is lost.
        await agent.thread.run(agent.conn.execute, "PRAGMA query_only=0")
        await eventually(lambda: agent.metrics.committed == 5, within=15)
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        assert agent.outbox.stats.total_records == 5
        pub.close()
