"""The garbage-collector policy of a cloud-core process (``fieldline cloud serve``).

Profiling the ingest into VictoriaMetrics (``bench/cloud_ingest.py``) showed CPython's collector taking 30 to 35 %
of the store path's CPU with its default settings: the decoded records of every uplink batch trigger young
collections by the thousand, and each full collection rescans the ~145,000 long-lived objects that imports and
start-up created. Once the service is up, ``apply()`` moves everything alive into the permanent generation
(``gc.freeze()``, so full collections skip it) and raises the generation-0 threshold so that young collections
run less often; a collection then still finds every cycle made later, only in larger steps. Memory held by
frozen objects is never returned, which is why only a long-lived service process applies it once (tests and the
demo, which build many apps in one process, do not).
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
