"""Errors raised by the edge agent.

FieldlineError (fieldline.errors)
└── AgentError                 base of the agent's own errors
    ├── LinkError              an MQTT connection failed or dropped (retryable)
    │   └── LinkRefused        the broker refused the connection (bad credentials, not authorised)
    ├── StoreError             the agent's SQLite store failed (disk full, corrupt file)
    ├── PkiError               the cloud refused an enrollment or renewal, or could not be reached
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


class PkiError(AgentError):
    """Raised when an enrollment or renewal fails; ``url`` names the endpoint, ``status`` the HTTP status of a
    refusal (None when the cloud could not be reached), ``retryable`` is true for an unreachable cloud or a 5xx."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        self.retryable = status is None or status >= 500 or status == 429
        super().__init__(f"{url}: {message}")


class CoapBindError(AgentError):
    """Raised when the CoAP server cannot bind its address (in use, not local, unresolvable); ``endpoint``."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")
