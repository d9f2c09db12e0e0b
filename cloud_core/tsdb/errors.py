"""Errors of the time-series stores; every backend translates its own (sqlite3, HTTP) into these::

TimeSeriesError            raised when a store cannot do what was asked (``retryable`` says whether to retry)
├── StoreUnavailable       the backend cannot be reached or cannot write now (retryable)
└── WriteRejected          the backend refused the points themselves (not retryable: retrying fails again)
"""

from __future__ import annotations


class TimeSeriesError(Exception):
    """Raised when a time-series store fails; ``backend`` names it (``sqlite``, ``victoriametrics``)."""

    retryable = False

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class StoreUnavailable(TimeSeriesError):
    """Raised when the backend cannot be reached, answers with a server error, or its disk is full or locked."""

    retryable = True


class WriteRejected(TimeSeriesError):
    """Raised when the backend refuses the data (a client error such as a malformed line); not retryable."""
