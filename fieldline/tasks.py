"""Stopping background tasks without losing the caller's own cancellation.

The usual ``task.cancel()`` then ``with suppress(CancelledError): await task`` has a flaw: while the caller
waits, a cancellation of the *caller* (a shutdown deadline, Ctrl-C) also arrives as ``CancelledError`` and is
swallowed with the task's, so the caller goes on as if nothing happened. ``cancel_and_wait`` waits with
``asyncio.wait``, which lets the caller's cancellation through, and then re-raises what the task itself raised,
other than its cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until all have finished.

    The first exception a task ended with, other than ``CancelledError``, is raised once all are done.
    """
    pending = [task for task in tasks if task is not None]
    if not pending:
        return
    for task in pending:
        task.cancel()
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
