"""A gateway's status reports: what they say, and what they do to ``last_seen``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from cloud_core.gateway_status import StatusError, StatusReport, parse_status, record_status
from tests.cloud_core.cloudkit import Cloud, running_cloud

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(tmp_path) as cloud:
        yield cloud


async def report(cloud: Cloud, body: dict[str, object], received_at: datetime) -> dict[str, object]:
    status = parse_status(orjson.dumps(body), "gw-1")
    assert status is not None
    async with cloud.services.database.session() as session:
        await record_status(session, cloud.services.bus, "gw-1", status, received_at)
    async with cloud.client("viewer") as viewer:
        return (await viewer.get("/api/v1/gateways/gw-1")).json()


def seen(gateway: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(gateway["last_seen"]))


def test_parse_status() -> None:
    assert parse_status(b"", "gw-1") is None
    assert parse_status(b'{"state": "online", "ts": 1.5e9, "agent_version": "1.2"}', "gw-1") == StatusReport(
        "online", "1.2", None, 1.5e9
    )
    assert parse_status(b'{"state": "offline", "gateway": "gw-1"}', "gw-1") == StatusReport("offline")
    for payload, reason in [
        (b"[1]", "not a JSON object"),
        (b"{", "not JSON"),
        (b'{"state": "asleep"}', "state must be online or offline"),
        (b'{"state": "online", "gateway": "gw-2"}', "names gateway 'gw-2'"),
        (b'{"state": "online", "ts": "yesterday"}', "ts must be epoch seconds"),
        (b'{"state": "online", "ts": -1}', "ts must be epoch seconds"),
        (b'{"state": "online", "agent_version": {"x": 1}}', "agent_version must be a short string"),
    ]:
        with pytest.raises(StatusError, match=reason):
            parse_status(payload, "gw-1")


async def test_last_will_leaves_last_seen_where_the_gateway_left_it(cloud: Cloud) -> None:
    online = await report(cloud, {"state": "online", "ts": T0.timestamp()}, T0)
    assert online["status"] == "online"
    assert seen(online) == T0, "an online status is the gateway's connection, seen when it arrives"

    will = await report(cloud, {"state": "offline", "gateway": "gw-1"}, T0 + timedelta(hours=3))
    assert will["status"] == "offline"
    assert seen(will) == T0, "the broker's last will, hours later, is not the gateway speaking"

    replayed = await report(cloud, {"state": "offline", "gateway": "gw-1"}, T0 + timedelta(days=1))
    assert seen(replayed) == T0, "a retained will replayed at the cloud's restart changes nothing"


async def test_clean_shutdown_is_seen_at_its_own_time(cloud: Cloud) -> None:
    await report(cloud, {"state": "online", "ts": T0.timestamp()}, T0)
    said = T0 + timedelta(minutes=5)
    offline = await report(cloud, {"state": "offline", "ts": said.timestamp()}, said + timedelta(seconds=2))
    assert offline["status"] == "offline"
    assert seen(offline) == said
    ahead = await report(cloud, {"state": "offline", "ts": (T0 + timedelta(days=9)).timestamp()}, said)
    assert seen(ahead) == said, "a gateway clock running ahead is capped at the arrival time"


async def test_retained_online_replayed_means_connected_now(cloud: Cloud) -> None:
    await report(cloud, {"state": "online", "ts": T0.timestamp()}, T0)
    later = T0 + timedelta(hours=2)
    again = await report(cloud, {"state": "online", "ts": T0.timestamp()}, later)
    assert again["status"] == "online"
    assert seen(again) == later
