"""Bounded per-device and per-metric state for the stateful cleaning steps.

A step keeps its per-device state in a ``DeviceTable``: at most ``MAX_DEVICES`` devices, the device first
seen longest ago being forgotten when a new one arrives. Per-metric state lives in a plain dict per device,
grown with ``add_series``: at most ``MAX_SERIES_PER_DEVICE`` metrics per device, likewise oldest first. Each
entry has a fixed size, so a step's memory is bounded by ``MAX_DEVICES * MAX_SERIES_PER_DEVICE`` entries.
Forgetting state only makes a step start over for that device or metric (a dedupe window empties, an
outlier window refills); it never drops data by itself. The caps are far above what one gateway serves;
they stop a flood of made-up device ids or metric names from exhausting memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

MAX_DEVICES = 100_000
MAX_SERIES_PER_DEVICE = 1024

S = TypeVar("S")


class DeviceTable(OrderedDict[str, S]):
    """State per device id, oldest-inserted device evicted beyond ``max_devices``; read it with ``get``."""

    __slots__ = ("max_devices",)

    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        super().__init__()
        self.max_devices = max_devices

    def add(self, device_id: str, state: S) -> S:
        """Store the state of a device not in the table yet and return it."""
        if len(self) >= self.max_devices:
            self.popitem(last=False)
        self[device_id] = state
        return state


def add_series(series: dict[str, S], metric: str, state: S, limit: int = MAX_SERIES_PER_DEVICE) -> S:
    """Store the state of a metric not in ``series`` yet (the oldest goes beyond ``limit``) and return it."""
    if len(series) >= limit:
        del series[next(iter(series))]
    series[metric] = state
    return state
