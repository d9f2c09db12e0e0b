"""Workflow and rule engine benchmarks; prints one JSON document.

    python bench/workflow_engine.py [--only rules --only conditions ...] [--out bench/results/workflow_engine.json]

Sections (each measures its own baselines in the same run):

    rules         telemetry messages/s through 100 rules over 20 metrics (~10 rules per message), against a bare
                  loop, an engine without rules and one plain ``compile_expression`` call
    conditions    µs per evaluation for each kind of condition; µs per message through one rule of each kind
    rule_memory   tracemalloc bytes per compiled rule and per (rule, device) state of each kind
    transitions   durable workflow transitions/s (SQLite, sync=full) against a memory store and bare commits
    memory        memory of parked workflow instances
    timers        lateness of durable timers under load
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _output import emit
from _rule_engine import bench_conditions, bench_rule_memory, bench_rules
from _workflow_runtime import bench_memory, bench_timers, bench_transitions

SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "rules": bench_rules,
    "conditions": bench_conditions,
    "rule_memory": bench_rule_memory,
    "transitions": bench_transitions,
    "memory": bench_memory,
    "timers": bench_timers,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(SECTIONS), help="run this section (repeatable)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "workflow_engine",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "jinja2": version("jinja2"),
        "sections": {},
    }
    for name in args.only or list(SECTIONS):
        start = time.perf_counter()
        result["sections"][name] = SECTIONS[name]()
        result["sections"][name]["section_seconds"] = round(time.perf_counter() - start, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
