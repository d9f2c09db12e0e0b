"""What pipeline stages share: the step protocol, the output sink and the drop/flag context.

A pipeline is a list of cleaning steps (``cleaning.py``) followed by a downsampler (``downsample.py``). Steps
work on one ``Point`` at a time and keep bounded per-device/per-metric state; a step that removes a metric or a
whole point says so through ``StepContext.drop`` so every drop is counted by step and reason.
"""

from __future__ import annotations

from typing import Protocol

from fieldline.wire import FlagRecord, Point, Record


class RecordSink(Protocol):
    """Where pipeline output goes (the agent's committer, or a list in tests)."""

    def emit(self, record: Record) -> None:
        """Accept one output record (raw point, aggregate, flag)."""

    def mark(self, device_id: str, metric: str, ts: float) -> None:
        """Everything of ``(device_id, metric)`` with a timestamp ``<= ts`` is now represented in emitted output.

        The agent persists marks with the records, so that replaying its journal after a crash skips points that
        were already emitted.
        """


class DropCounter(Protocol):
    def __call__(self, step: str, reason: str, n: int = 1) -> None: ...


class StepContext:
    """Handed to every step: counts drops and emits data-quality flags."""

    __slots__ = ("_count", "sink")

    def __init__(self, sink: RecordSink, count_drop: DropCounter) -> None:
        self.sink = sink
        self._count = count_drop

    def drop(self, step: str, reason: str, n: int = 1) -> None:
        """Count ``n`` values (metrics or points) removed by ``step`` for ``reason``."""
        self._count(step, reason, n)

    def flag(self, device_id: str, metric: str, ts: float, flag: str, detail: str = "") -> None:
        self.sink.emit(FlagRecord(device_id, metric, ts, flag, detail))


class Step(Protocol):
    """A cleaning step. Returns the (possibly modified) point, or None when the whole point is dropped.

    Steps may mutate ``point.metrics`` in place. A point left with no metrics is dropped by the pipeline.
    """

    name: str

    def apply(self, point: Point, ctx: StepContext) -> Point | None: ...


class ListSink:
    """A ``RecordSink`` that keeps everything in lists (tests, the ``check`` command's dry runs)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.marks: dict[tuple[str, str], float] = {}

    def emit(self, record: Record) -> None:
        self.records.append(record)

    def mark(self, device_id: str, metric: str, ts: float) -> None:
        self.marks[(device_id, metric)] = ts
