"""Jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial * 2**n`` capped at ``maximum``, each scaled by a random factor in [0.5, 1.0]."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return base * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempts = 0
