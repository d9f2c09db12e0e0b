"""Progress without a terminal: plain lines with per-second rates derived from cumulative counters."""

from __future__ import annotations

import asyncio
import io

from device_sim.progress import Progress


async def test_plain_lines_with_rates() -> None:
    counters = {"published": 0, "connected": "0/2"}
    stream = io.StringIO()
    progress = Progress(
        "sim", lambda: dict(counters), rates=("published",), stream=stream, plain_interval=0.01
    )
    assert not progress.live
    async with progress:
        while stream.getvalue().count("\n") < 3:
            counters["published"] += 10
            await asyncio.sleep(0.005)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("sim: published=")
    assert "connected=0/2" in lines[0]
    assert "published/s=" in lines[1]  # from the second snapshot on


async def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    async with Progress("sim", dict, stream=stream, plain_interval=0.01, enabled=False):
        await asyncio.sleep(0.05)
    assert stream.getvalue() == ""
