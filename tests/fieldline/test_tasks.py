"""cancel_and_wait: stops tasks and never swallows the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from fieldline.tasks import cancel_and_wait


async def test_cancels_every_task_and_waits_for_them() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    await cancel_and_wait(*tasks, None)
    assert all(task.cancelled() for task in tasks)


async def test_a_task_that_ignores_the_cancellation_is_waited_for() -> None:
    finished = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleans up first
            finished.set()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert finished.is_set()
    assert task.done()


async def test_the_error_a_task_ended_with_is_raised() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    """A deadline around a stop that hangs fires, where ``suppress(CancelledError)`` would have eaten it."""

    give_up = asyncio.Event()

    async def hangs_on_cancel() -> None:
        while not give_up.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue  # a task that will not stop (until the test lets it)

    task = asyncio.create_task(hangs_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await cancel_and_wait(task)
    give_up.set()
    await cancel_and_wait(task)
    assert task.done()
