"""A stand-in gateway for cloud tests: it speaks the real uplink (``fieldline.wire`` batches, sealed the way the
agent's outbox seals them, published at QoS 1 on ``uplink_topic``), keeps a retained status with an offline last
will like ``edge_agent.uplink``, and receives the commands the cloud routes to it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import orjson

from cloud_core.settings import CloudSettings
from fieldline.wire import (
    EventRecord,
    RawRecord,
    Record,
    RecordKind,
    Topics,
    encode_batch,
    encode_body_items,
    encode_record,
    uplink_topic,
)

T = TypeVar("T")


def cloud_settings(tmp_path: Path, broker_port: int, **sections: Any) -> CloudSettings:
    """Settings of a cloud core on SQLite under ``tmp_path`` whose ingest reads ``broker_port``; a client id of its
    own, so that several clouds (or replicas) in one test never take over each other's session."""
    data: dict[str, Any] = {
        "data_dir": tmp_path / "cloud",
        "broker": {"host": "127.0.0.1", "port": broker_port, "client_id": f"cloud-{uuid.uuid4().hex[:8]}"},
        "api": {"shutdown_grace": 5},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return CloudSettings.model_validate(data)


async def until(check: Callable[[], Awaitable[T]], within: float = 20.0, message: str = "") -> T:
    """Await ``check()`` until it returns something truthy, and return that; fails the test after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.05)


def uplink_payload(
    gateway: str, seq: int, kind: RecordKind, records: Sequence[Record], *, backfill: bool = False
) -> bytes:
    """One batch as the agent publishes it: records CBOR-encoded one by one (as the outbox stores them),
    sealed into a body, wrapped in the envelope at send time."""
    body = encode_body_items([encode_record(r) for r in records])
    return encode_batch(gateway, seq, kind, len(records), body, backfill=backfill, sent_at=time.time())


def readings(device: str, n: int, *, start: float | None = None, metric: str = "temperature") -> list[Record]:
    """``n`` raw readings of one device, one second apart."""
    t0 = start if start is not None else time.time() - n
    return [RawRecord(device, t0 + i, {metric: 20.0 + i * 0.1}) for i in range(n)]


class FakeGateway:
    """``async with FakeGateway(port, "gw-1") as gw: await gw.send(RecordKind.RAW, records)``."""

    def __init__(self, port: int, gateway_id: str, *, agent_version: str = "test-1.0") -> None:
        self.port = port
        self.id = gateway_id
        self.agent_version = agent_version
        self.seq = 0
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> FakeGateway:
        offline = orjson.dumps({"state": "offline", "gateway": self.id})
        self._client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"fl-gw-{self.id}",
            will=aiomqtt.Will(Topics.up_status(self.id), offline, qos=1, retain=True),
        )
        await self._stack.enter_async_context(self._client)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None:
            raise RuntimeError("not connected")
        return self._client

    async def online(self) -> None:
        body = {"state": "online", "gateway": self.id, "ts": time.time(), "agent_version": self.agent_version}
        await self.client.publish(Topics.up_status(self.id), orjson.dumps(body), qos=1, retain=True)

    async def offline(self) -> None:
        """What the broker publishes as the last will when the gateway vanishes."""
        body = {"state": "offline", "gateway": self.id}
        await self.client.publish(Topics.up_status(self.id), orjson.dumps(body), qos=1, retain=True)

    async def vanish(self) -> None:
        """Drop the connection without a DISCONNECT, as a gateway losing power does: the broker then publishes
        the last will (paho's socket, under aiomqtt); returns once the client saw the connection go."""
        sock = self.client._client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in self.client.messages:
                pass

    async def send(self, kind: RecordKind, records: Sequence[Record], *, seq: int | None = None) -> int:
        """Publish one batch (the next seq unless given) and wait for the broker's PUBACK; returns its seq."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        await self.publish(uplink_topic(self.id, kind), uplink_payload(self.id, seq, kind, records))
        return seq

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    async def report(self, device: str, type: str, data: dict[str, Any], *, source: str | None = None) -> int:
        """One event record, as the agent's rules and command handling raise them."""
        return await self.send(RecordKind.EVENT, [EventRecord(device, time.time(), type, data, source)])

    @contextlib.asynccontextmanager
    async def commands(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Subscribe to ``fl/<id>/down/commands``; yields a queue of the decoded commands."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await self.client.subscribe(Topics.down_commands(self.id), qos=1)

        async def receive() -> None:
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                await queue.put(orjson.loads(message.payload))

        task = asyncio.create_task(receive())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
