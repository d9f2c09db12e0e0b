"""The internal event bus: registry changes and ingested events, fanned out to subscribers (global workflows,
the dashboard's live view). Each subscriber has a bounded queue; when it is full the oldest event is dropped and
counted, so a slow subscriber never blocks the API or ingest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from workflows.events import Event

DEVICE_REGISTERED = "device.registered"
DEVICE_UPDATED = "device.updated"
DEVICE_DELETED = "device.deleted"
GATEWAY_ONLINE = "gateway.online"
GATEWAY_OFFLINE = "gateway.offline"


@dataclass
class Subscription:
    queue: asyncio.Queue[Event]
    types: frozenset[str] | None
    dropped: int = 0

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()


@dataclass
class EventBus:
    queue_size: int = 1000
    published: int = 0
    _subscriptions: list[Subscription] = field(default_factory=list)

    def publish(self, event: Event) -> None:
        """Hand the event to every subscriber interested in its type (never blocks)."""
        self.published += 1
        for sub in self._subscriptions:
            if sub.types is not None and event.type not in sub.types:
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)

    def emit(
        self, type: str, data: dict[str, Any], *, device_id: str | None = None, ts: float | None = None
    ) -> None:
        self.publish(Event(type, data, device_id=device_id, ts=ts, source="cloud"))

    @asynccontextmanager
    async def subscribe(self, *types: str) -> AsyncIterator[Subscription]:
        """``async with bus.subscribe("device.registered") as events: async for event in events: ...``"""
        sub = Subscription(asyncio.Queue(self.queue_size), frozenset(types) if types else None)
        self._subscriptions.append(sub)
        try:
            yield sub
        finally:
            self._subscriptions.remove(sub)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subscriptions)
