"""The garbage-collector policy of a long-running Fieldline process (``fieldline cloud serve``, ``fieldline edge run``).

Profiling the ingest into VictoriaMetrics (``bench/cloud_ingest.py``) showed CPython's collector taking 30 to 35 %
of the store path's CPU with its default settings: the decoded records of every uplink batch trigger young
collections by the thousand, and each full collection rescans the ~145,000 long-lived objects that imports and
start-up created. The edge agent's per-message path is the same story at a smaller scale: 8.0 -> 6.6 µs of CPU a
message with this policy (``bench/edge_pipeline_cpu.py``, compiled modules). Once the process is up, ``apply()``
moves everything alive into the permanent generation (``gc.freeze()``, so full collections skip it) and raises
the generation-0 threshold so that young collections run less often; a collection then still finds every cycle
made later, only in larger steps. Memory held by frozen objects is never returned, which is why only a process
that serves one app or agent for its whole life applies it, once (tests and the demo, which build many in one
process, do not).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
"""Allocations (minus deallocations) between young collections; Python's default is 700."""


def apply() -> None:
    """Freeze what is alive now and make young collections rarer (idempotent)."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GEN0_THRESHOLD), *threshold[1:])
