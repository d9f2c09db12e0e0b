"""Fleet files and runs for the simulator's runtime tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from device_sim.fleet import Fleet, load_fleet
from device_sim.runner import LiveRun, RunOptions

START = 1_700_000_000.0

ROOMS = """\
seed: 7
devices:
  - type: thermo
    id: room-{n:02d}
    count: 5
    interval: 10s
    attributes: {firmware: "1.2.0"}
    metrics:
      temperature: {type: sine, period: 1h, amplitude: 2, offset: 21}
      humidity: {type: random_walk, start: 45, step: 0.5, min: 20, max: 80}
    faults:
      - {type: outlier, magnitude: 30, probability: 0.1}
      - {type: null, probability: 0.05}
      - {type: dropout, offline: 30s, schedule: {at: 60s}}
"""

COLD_ROOM = """\
seed: 3
devices:
  - type: coldroom
    id: cold-{n:02d}
    count: 2
    interval: 10s
    attributes: {firmware: "2.0.1"}
    metrics:
      temperature: {type: constant, value: 4.0}
    commands:
      cooling:
        params: {mode: {type: enum, values: [max, "off"]}}
        cases:
          - when: {mode: max}
            effects: [{type: rate, metric: temperature, per_minute: -3, floor: -25}]
          - when: {mode: "off"}
"""


def fleet_file(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def fleet(tmp_path: Path, text: str) -> Fleet:
    return load_fleet(fleet_file(tmp_path, text))


@contextlib.asynccontextmanager
async def running(the_fleet: Fleet, options: RunOptions) -> AsyncIterator[LiveRun]:
    """A live run in the background, stopped (cleanly) when the block ends."""
    run = LiveRun(the_fleet, options)
    task = asyncio.create_task(run.run())
    try:
        yield run
    finally:
        run.stop()
        await asyncio.wait_for(task, 30)
