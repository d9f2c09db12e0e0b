"""Errors shared by every Fieldline package.

    FieldlineError                 base of every error Fieldline raises on purpose
    ├── ConfigError                a YAML file failed to load or validate (carries every issue found)
    └── WireError                  bytes on the wire do not follow the contract
        ├── PayloadError           a device payload cannot be decoded or validated
        └── BatchDecodeError       an uplink batch cannot be decoded

Each package derives its own tree from ``FieldlineError``. ``retryable`` tells a caller whether trying the
same thing again later can succeed (a broker outage) or never will (a malformed payload): the outbox, the uplink
and the workflow retry policies decide from it, never from message strings.
"""

from __future__ import annotations

from dataclasses import dataclass


class FieldlineError(Exception):
    """Base class; ``retryable`` is False unless a subclass says otherwise."""

    retryable: bool = False


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a YAML file, positioned as ``file:line:column: path: message``."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str = "error"
    """``error`` makes the file invalid; ``warning`` (an unreachable state) does not."""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        severity = " warning:" if self.severity == "warning" else ""
        return f"{where}:{severity}{field} {self.message}"


class ConfigError(FieldlineError):
    """Raised when a configuration file cannot be read, parsed or validated; lists every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class WireError(FieldlineError):
    """Raised when bytes received do not follow the wire contract."""


class PayloadError(WireError):
    """Raised when a device payload cannot be decoded or fails validation.

    ``reason`` is a short machine-readable class (``bad_json``, ``bad_cbor``, ``bad_type``, ``too_large``,
    ``bad_timestamp``, ``bad_device_id``, ``empty``, ``bad_senml``, ``bad_shape``) used as a metric label and
    quarantine column; the message is the human diagnostic.
    """

    def __init__(self, reason: str, message: str, *, device_id: str | None = None, field: str | None = None):
        self.reason = reason
        self.device_id = device_id
        self.field = field
        super().__init__(message if field is None else f"{field}: {message}")


class BatchDecodeError(WireError):
    """Raised when an uplink batch is not a valid envelope of a supported protocol version."""
