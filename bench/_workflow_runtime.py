"""Workflow-runtime sections of ``bench/workflow_engine.py``: durable transitions per second, memory of parked
instances, timer lateness under load. Each section measures its own baseline in the same run."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workflows import Engine, Event, FakeClock, MemoryStore, SQLiteStore, SystemClock, load_workflow
from workflows.dryrun import RecordingHost

LOOP = """
id: loop
variables:
  n: {type: number, default: 0}
  rounds: {type: number, default: 20}
start_at: count
states:
  count:
    type: task
    actions:
      - {type: set, values: {n: "{{ n + 1 }}"}}
    next: check
  check:
    type: choice
    choices:
      - {when: n < rounds, next: count}
    default: done
  done: {type: succeed}
"""

PARKED = """
id: parked
variables:
  device_id: {type: string, required: true}
start_at: wait
states:
  wait:
    type: wait
    event: {type: telemetry, condition: "reading.device_id == device_id", timeout: 1h, on_timeout: done, result_as: reading}
    next: done
  done: {type: succeed}
"""

NAP = """
id: nap
start_at: nap
states:
  nap: {type: wait, seconds: 2, next: done}
  done: {type: succeed}
"""


class _CountingHost(RecordingHost):
    """Sets ``done`` once ``expected`` instances of ``workflow`` have succeeded."""

    def __init__(self, workflow: str, expected: int) -> None:
        super().__init__()
        self.workflow, self.expected, self.seen = workflow, expected, 0
        self.done = asyncio.Event()

    async def emit(self, event: Event) -> None:
        if event.type == "workflow.succeeded" and event.data["workflow_id"] == self.workflow:
            self.seen += 1
            if self.seen >= self.expected:
                self.done.set()


def _sqlite_baseline(path: Path, commits: int = 2000) -> float:
    """Transactions per second of one-row commits with synchronous=FULL: what durability costs without batching."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    started = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 200,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return commits / elapsed


async def _loop_rate(store: Any, instances: int, rounds: int) -> dict[str, Any]:
    clock = FakeClock()
    async with Engine(store=store, host=RecordingHost(), clock=clock) as engine:
        await engine.deploy(load_workflow("loop.yaml", text=LOOP))
        started = time.perf_counter()
        await asyncio.gather(*(engine.start("loop", {"rounds": rounds}) for _ in range(instances)))
        await engine.idle()
        elapsed = time.perf_counter() - started
        transitions = engine.stats.transitions
        commits = getattr(store, "commits", None)
    return {
        "instances": instances,
        "transitions": transitions,
        "seconds": round(elapsed, 3),
        "transitions_per_s": round(transitions / elapsed),
        **({"commits": commits, "saves_per_commit": round(store.saves / commits, 1)} if commits else {}),
    }


def bench_transitions(instances: int = 500, rounds: int = 20) -> dict[str, Any]:
    """Durable transitions per second: many instances looping task → choice, each transition saved."""
    with tempfile.TemporaryDirectory() as tmp:
        durable = asyncio.run(_loop_rate(SQLiteStore(Path(tmp) / "wf.db", sync="full"), instances, rounds))
        memory = asyncio.run(_loop_rate(MemoryStore(), instances, rounds))
        single = _sqlite_baseline(Path(tmp) / "baseline.db")
    return {
        "durable_sqlite_sync_full": durable,
        "baseline_memory_store": memory,
        "baseline_sqlite_one_row_commits_per_s": round(single),
        "target_transitions_per_s": 5000,
    }


async def _park(count: int, db: Path) -> None:
    async with Engine(store=SQLiteStore(db), host=RecordingHost(), clock=FakeClock()) as engine:
        await engine.deploy(load_workflow("parked.yaml", text=PARKED))
        gc.collect()
        before = _rss()
        for batch in range(0, count, 500):
            await asyncio.gather(
                *(
                    engine.start("parked", {"device_id": f"dev-{i:05d}"})
                    for i in range(batch, min(count, batch + 500))
                )
            )
        await engine.idle()
        gc.collect()
        after = _rss()
        waiting = sum(1 for i in engine.instances.values() if i.wait is not None)
        print(f"{count} {waiting} {before} {after}")


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_memory(count: int = 10_000) -> dict[str, Any]:
    """Resident memory of ``count`` instances parked in an event wait with a timeout (in a fresh process)."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import asyncio, sys; sys.path.insert(0, 'bench'); from _workflow_runtime import _park; "
            f"asyncio.run(_park({count}, __import__('pathlib').Path({str(Path(tmp) / 'park.db')!r})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[1],
        )
    parked, waiting, before, after = (int(x) for x in out.stdout.split())
    return {
        "instances": parked,
        "waiting": waiting,
        "rss_delta_mb": round((after - before) / 2**20, 1),
        "bytes_per_instance": round((after - before) / parked),
        "target_mb": 40,
    }


async def _timers(count: int, spread: float, load_instances: int) -> dict[str, Any]:
    clock = SystemClock()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        host = _CountingHost("nap", count)
        async with Engine(store=SQLiteStore(Path(tmp) / "t.db"), host=host, clock=clock) as engine:
            await engine.deploy(load_workflow("nap.yaml", text=NAP))
            await engine.deploy(load_workflow("loop.yaml", text=LOOP))
            await engine.deploy(load_workflow("parked.yaml", text=PARKED))
            for i in range(load_instances):
                await engine.start("parked", {"device_id": f"p{i}"})
            stop = asyncio.Event()

            async def load() -> int:
                """Telemetry for parked instances plus looping instances, until the timers are done."""
                sent = 0
                while not stop.is_set():
                    await engine.start("loop", {"rounds": 5})
                    for _ in range(20):
                        device = f"none-{rng.randrange(10_000)}"
                        await engine.handle(Event("telemetry", {"t": 1}, device_id=device))
                        sent += 1
                    await asyncio.sleep(0)
                return sent

            loader = asyncio.create_task(load())
            for _ in range(count):
                await asyncio.sleep(spread / count)
                await engine.start("nap")
            await host.done.wait()
            stop.set()
            events = await loader
            lateness = sorted(engine._timers.lateness)
            transitions = engine.stats.transitions
    return {
        "timers": len(lateness),
        "events_handled_meanwhile": events,
        "transitions_meanwhile": transitions,
        "lateness_ms": {
            "p50": round(statistics.median(lateness) * 1000, 2),
            "p99": round(lateness[int(len(lateness) * 0.99) - 1] * 1000, 2),
            "max": round(lateness[-1] * 1000, 2),
        },
        "target_p99_ms": 50,
    }


def bench_timers(count: int = 2000, spread: float = 5.0, load_instances: int = 2000) -> dict[str, Any]:
    """Lateness of durable timers on the real clock while the engine handles events and transitions."""
    return asyncio.run(_timers(count, spread, load_instances))


if __name__ == "__main__":
    os.chdir(Path(__file__).parents[1])
    print(bench_transitions())
    print(bench_memory())
    print(bench_timers())
