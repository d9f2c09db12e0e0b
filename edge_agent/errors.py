"""Errors raised by the edge agent.

FieldlineError (fieldline.errors)
└── AgentError                 base of the agent's own errors
    ├── LinkError              an MQTT connection failed or dropped (retryable)
    │   └── LinkRefused        the broker refused the connection (bad credentials, not authorised)
    ├── StoreError             the agent's SQLite store failed (disk full, corrupt file)
    └── CoapBindError          the CoAP server cannot bind its address
"""

from __future__ import annotations

from fieldline.errors import FieldlineError


class AgentError(FieldlineError):
    """Base class of the edge agent's errors."""


class LinkError(AgentError):
    """Raised when an MQTT connection cannot be made or is lost; ``endpoint`` names the broker."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")


class LinkRefused(LinkError):
    """Raised when the broker answers CONNECT with a refusal; retried, but with the longest backoff."""


class StoreError(AgentError):
    """Raised when the SQLite store cannot be opened or written; ``path`` names the database file."""

    retryable = True

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class CoapBindError(AgentError):
    """Raised when the CoAP server cannot bind its address (in use, not local, unresolvable); ``endpoint``."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")
