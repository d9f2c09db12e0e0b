"""Clocks the engine is given: the system clock, or a fake one that tests and dry runs move by hand.

The engine never reads the time itself. ``FakeClock.advance(3 * 86400)`` wakes every sleeper whose deadline
falls inside the step, in deadline order, letting the event loop run between them, so days of workflow time pass
in milliseconds and timers fire in the order they would have.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return at or after ``deadline`` (epoch seconds)."""
        ...


class SystemClock:
    """Wall-clock time; sleeps are re-checked so a clock step does not fire timers early."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        while (remaining := deadline - time.time()) > 0:  # noqa: ASYNC110 - re-check after a clock step
            await asyncio.sleep(remaining)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    async def settle(self, rounds: int = 20) -> None:
        """Let every task that is ready run (several loop turns, so chains of awaits complete)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, target: float) -> None:
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()
