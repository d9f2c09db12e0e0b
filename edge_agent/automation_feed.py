"""The bounded queue between ingest and the local rules and workflows.

Ingest (on the loop thread) appends cleaned points and device state changes; the automation appends the events
it emits (alerts, ``emit`` actions, instance ends), to feed them back; one consumer task takes them out. There
are two lanes, each holding at most ``automation.queue_size`` items: readings, and the rarer events that say
something happened (state changes, alerts). The consumer empties the events lane first, so a flood of readings
never delays or crowds out an alert. Appending never blocks: when a lane is full its oldest item is dropped and
counted by event type (``fieldline_edge_automation_dropped``), since the newest readings say most about the
devices now. A point is queued as is and becomes a ``telemetry`` event only when consumed: the hot path costs one
append.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

from fieldline.wire import Point
from workflows import Event
from workflows.events import DEVICE_STATE, TELEMETRY


class AutomationFeed:
    """The bounded lanes between ingest and the engines; used on the loop thread only."""

    __slots__ = ("_events", "_points", "_size", "_wake", "dropped")

    def __init__(self, size: int) -> None:
        self._points: deque[Point] = deque()
        self._events: deque[tuple[Event, bool]] = deque()
        self._size = size
        self._wake = asyncio.Event()
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._points) + len(self._events)

    def point(self, point: Point) -> None:
        """A cleaned reading (the pipelines' tap); it becomes a ``telemetry`` event when consumed."""
        points = self._points
        if len(points) >= self._size:
            points.popleft()
            self.dropped[TELEMETRY] += 1
        points.append(point)
        self._wake.set()

    def event(self, event: Event, *, to_engine: bool = True) -> None:
        """Any other event; ``to_engine`` False: for the rules only."""
        events = self._events
        if len(events) >= self._size:
            self.dropped[events.popleft()[0].type] += 1
        events.append((event, to_engine))
        self._wake.set()

    def state(
        self,
        device_id: str,
        device_type: str | None,
        previous: str | None,
        state: str,
        attributes: dict[str, Any],
        ts: float,
    ) -> None:
        """A device changed state: ``device.state`` with ``from``, ``to`` and the state's attributes."""
        data = {**attributes, "from": previous, "to": state}
        self.event(Event(DEVICE_STATE, data, device_id=device_id, device_type=device_type, ts=ts))

    def pop(self) -> Point | tuple[Event, bool] | None:
        """The oldest event, else the oldest reading, else None."""
        if self._events:
            return self._events.popleft()
        return self._points.popleft() if self._points else None

    async def wait(self) -> None:
        """Return once something was queued since the previous call."""
        await self._wake.wait()
        self._wake.clear()

    def discard(self) -> int:
        """Drop everything queued (at shutdown), counted like overflow; returns how many."""
        count = len(self)
        self.dropped[TELEMETRY] += len(self._points)
        self.dropped.update(event.type for event, _ in self._events)
        self._points.clear()
        self._events.clear()
        return count
