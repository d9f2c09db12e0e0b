"""A queue of deadlines served by one task on an injected clock.

Entries are ``(deadline, key)``; ``key`` says what to do and carries a token so that an entry made stale by a
later transition is recognised and ignored by the callback. Waking is event-driven: the task sleeps until the
earliest deadline or until an earlier entry arrives; it never polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable

from fieldline.tasks import cancel_and_wait
from workflows.clock import Clock


class TimerQueue:
    def __init__(self, clock: Clock, fire: Callable[[Hashable, float], Awaitable[None]]) -> None:
        self.clock = clock
        self._fire = fire
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self.fired = 0
        self.lateness: list[float] = []
        """Seconds between each deadline and its firing, most recent last (bounded), for metrics and benches."""

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, key: Hashable) -> None:
        first = not self._heap or deadline < self._heap[0][0]
        heapq.heappush(self._heap, (deadline, next(self._order), key))
        if first:
            self._changed.set()

    async def run(self) -> None:
        """Fire entries as they fall due, until cancelled."""
        while True:
            if not self._heap:
                self._changed.clear()
                await self._changed.wait()
                continue
            deadline = self._heap[0][0]
            if deadline > self.clock.now():
                self._changed.clear()
                sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
                waker = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(sleeper, waker)
                continue
            due, _, key = heapq.heappop(self._heap)
            self.fired += 1
            self.lateness.append(self.clock.now() - due)
            if len(self.lateness) > 10_000:
                del self.lateness[:5_000]
            await self._fire(key, due)
