"""A subscriber for the simulator's tests: aiomqtt (an independent client) collecting what the devices publish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiomqtt


@dataclass
class Received:
    messages: list[aiomqtt.Message] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.matches(topic)]

    async def wait_for(self, predicate: Callable[[Received], bool], within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def subscriber(
    port: int, *filters: str, qos: int = 1
) -> AsyncIterator[tuple[aiomqtt.Client, Received]]:
    received = Received()
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-sub-{port}") as client:
        for topic in filters:
            await client.subscribe(topic, qos=qos)

        async def collect() -> None:
            async for message in client.messages:
                received.messages.append(message)
                received.changed.set()

        task = asyncio.create_task(collect())
        try:
            yield client, received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
