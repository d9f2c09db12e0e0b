"""Per-client rate limits for the endpoints anyone can call (``/pki/enroll``, ``/pki/renew``).

A token bucket per client address: ``per_minute`` requests a minute on average, ``burst`` at once. Past it the
API answers 429 with ``Retry-After``. Tokens are 192 bits, so the limit is not what stops guessing; it bounds
what one address can make the cloud do (a token lookup and a signature per request). The table of buckets is
bounded: beyond ``max_clients`` addresses the least recently seen is forgotten (it starts again with a full
bucket). Behind a reverse proxy the address is the proxy's unless uvicorn trusts its forwarded headers
(``--forwarded-allow-ips``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_second = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def wait(self, client: str) -> float:
        """0.0 when a request from ``client`` may go ahead now (it takes a token), else the seconds until one may."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.per_second
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
