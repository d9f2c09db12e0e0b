"""The simulator's MQTT transport against a real Mosquitto: publishing, last wills, subscriptions, reconnection."""

from __future__ import annotations

import asyncio

import pytest

from device_sim.errors import TransportError
from device_sim.mqtt_client import MqttClient, Will
from device_sim.mqtt_transport import Broker, DeviceLinks
from tests.device_sim.mqttkit import subscriber
from tests.servicekit import Mosquitto, free_port


def _will(device_id: str) -> Will:
    return Will(f"devices/{device_id}/state", b'{"online": false}')


async def _connected(links: DeviceLinks, count: int, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        await links.wait_connected(count)


@pytest.mark.parametrize("protocol", [5, 4])
async def test_publishes_at_qos_0_and_1_and_counts_pubacks(mosquitto: Mosquitto, protocol: int) -> None:
    async with subscriber(mosquitto.port, "devices/#") as (_, received):
        client = MqttClient("127.0.0.1", mosquitto.port, "d-1", protocol=protocol)
        acked = asyncio.Event()
        client.on_ack = lambda sent: acked.set()
        await client.connect()
        assert client.publish("devices/d-1/telemetry", b'{"n": 0}', qos=0)
        assert client.publish("devices/d-1/telemetry", b'{"n": 1}', qos=1)
        await received.wait_for(lambda r: len(r.messages) == 2)
        await asyncio.wait_for(acked.wait(), 10)
        assert client.acked == 1
        assert not client.inflight
        await client.disconnect()
    assert [m.payload for m in received.messages] == [b'{"n": 0}', b'{"n": 1}']
    assert not client.publish("devices/d-1/telemetry", b"late")


@pytest.mark.parametrize("protocol", [5, 4])
async def test_last_will_fires_on_abrupt_drop_only(mosquitto: Mosquitto, protocol: int) -> None:
    async with subscriber(mosquitto.port, "devices/+/state") as (_, received):
        polite = MqttClient("127.0.0.1", mosquitto.port, "polite", will=_will("polite"), protocol=protocol)
        abrupt = MqttClient("127.0.0.1", mosquitto.port, "abrupt", will=_will("abrupt"), protocol=protocol)
        await polite.connect()
        await abrupt.connect()
        await polite.disconnect()
        abrupt.abort()
        await received.wait_for(lambda r: len(r.on("devices/abrupt/state")) == 1)
        await asyncio.sleep(0.3)  # a will for `polite` would have arrived by now
    assert received.on("devices/polite/state") == []
    will = received.on("devices/abrupt/state")[0]
    assert will.payload == b'{"online": false}'
    # retained: a late subscriber sees it too
    async with subscriber(mosquitto.port, "devices/abrupt/state") as (_, late):
        await late.wait_for(lambda r: len(r.messages) == 1)
        assert late.messages[0].retain


async def test_subscriptions_deliver_commands_to_the_device(mosquitto: Mosquitto) -> None:
    inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    client = MqttClient(
        "127.0.0.1", mosquitto.port, "d-2", on_message=lambda m: inbox.put_nowait((m.topic, m.payload))
    )
    await client.connect()
    assert await client.subscribe([("devices/d-2/commands", 1)]) == [1]
    async with subscriber(mosquitto.port) as (other, _):
        await other.publish("devices/d-2/commands", b'{"id": "c1"}', qos=1)
        assert await asyncio.wait_for(inbox.get(), 10) == ("devices/d-2/commands", b'{"id": "c1"}')
    await client.disconnect()


async def test_refused_or_unreachable_connect_raises_transport_error() -> None:
    client = MqttClient("127.0.0.1", free_port(), "nobody")
    with pytest.raises(TransportError):
        await client.connect(within=2)


async def test_device_links_connect_publish_drop_and_survive_a_broker_restart(mosquitto: Mosquitto) -> None:
    devices = [f"dev-{i:03d}" for i in range(50)]
    commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    online: list[str] = []
    links = DeviceLinks(
        Broker.parse(mosquitto.url),
        on_message=lambda d, m: commands.put_nowait((d, m.payload)),
        on_connected=online.append,
        concurrency=8,
        backoff=(0.1, 1.0),
    )
    async with links:
        for device_id in devices:
            links.add(device_id, will=_will(device_id), subscriptions=[(f"devices/{device_id}/commands", 1)])
        await _connected(links, 50)
        async with subscriber(mosquitto.port, "devices/#") as (other, received):
            assert all(links.publish(d, f"devices/{d}/telemetry", b"{}", qos=1) for d in devices)
            await received.wait_for(lambda r: len(r.on("devices/+/telemetry")) == 50)

            links.drop("dev-007")
            await received.wait_for(lambda r: len(r.on("devices/dev-007/state")) == 1)
            assert not links.is_connected("dev-007")
            assert not links.publish("dev-007", "devices/dev-007/telemetry", b"")
            await asyncio.sleep(0.5)
            assert not links.is_connected("dev-007")  # a dropout stays down until connected on purpose
            links.connect("dev-007")
            await _connected(links, 50)

            await other.publish("devices/dev-003/commands", b"cool", qos=1)
            assert await asyncio.wait_for(commands.get(), 10) == ("dev-003", b"cool")

        mosquitto.stop()
        await _connected(links, 0)
        mosquitto.start()
        await _connected(links, 50, within=30)
        assert links.publish("dev-049", "devices/dev-049/telemetry", b"{}")
    assert links.counters.lost == 50
    assert links.counters.dropped == 1
    assert online.count("dev-007") == 3
    assert online.count("dev-001") == 2
