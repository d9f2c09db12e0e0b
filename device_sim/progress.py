"""Live progress of a simulator run: a rich table refreshed in place on a terminal, a plain line every few
seconds otherwise (CI logs, pipes).

The run hands a ``snapshot`` function returning its cumulative counters; ``Progress`` derives per-second rates for
the counters named in ``rates`` from two successive snapshots, so the run itself keeps no rate state.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

Snapshot = Callable[[], dict[str, int | float | str]]


class Progress:
    """An async context manager showing ``snapshot()`` every ``interval`` seconds (``plain_interval`` when the
    stream is not a terminal)."""

    def __init__(
        self,
        title: str,
        snapshot: Snapshot,
        *,
        rates: tuple[str, ...] = (),
        stream: TextIO | None = None,
        interval: float = 0.5,
        plain_interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.title = title
        self.snapshot = snapshot
        self.rates = rates
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.interval = interval if self.live else plain_interval
        self.enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self._previous: tuple[float, dict[str, int | float | str]] | None = None

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def figures(self) -> dict[str, int | float | str]:
        """The snapshot with ``<name>/s`` for each rate counter, measured since the previous call."""
        now, values = time.monotonic(), self.snapshot()
        figures = dict(values)
        if self._previous is not None:
            then, before = self._previous
            span = max(now - then, 1e-9)
            for name in self.rates:
                figures[f"{name}/s"] = round((float(values[name]) - float(before[name])) / span, 1)
        self._previous = (now, values)
        return figures

    async def _run(self) -> None:
        if not self.live:
            while True:
                await asyncio.sleep(self.interval)
                figures = self.figures()
                line = " ".join(f"{key}={value}" for key, value in figures.items())
                print(f"{self.title}: {line}", file=self.stream, flush=True)
        console = Console(file=self.stream)
        with Live(self._table(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(self.interval)
                live.update(self._table(), refresh=True)

    def _table(self) -> Table:
        table = Table(title=self.title, show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in self.figures().items():
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
        return table
