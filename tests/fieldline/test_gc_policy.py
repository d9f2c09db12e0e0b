"""The service's garbage-collector policy, applied and undone in this process."""

from __future__ import annotations

import gc

from fieldline import gc_policy


def test_apply_freezes_what_is_alive_and_makes_young_collections_rarer() -> None:
    threshold = gc.get_threshold()
    try:
        gc_policy.apply()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (max(threshold[0], gc_policy.GEN0_THRESHOLD), *threshold[1:])
        gc_policy.apply()  # idempotent: a second call changes nothing but what it freezes
        assert gc.get_threshold()[0] == max(threshold[0], gc_policy.GEN0_THRESHOLD)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
