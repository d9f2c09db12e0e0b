"""Errors raised by the device simulator.

FieldlineError (fieldline.errors)
├── ConfigError (fieldline.errors)  a fleet file failed to load or validate (file:line:field, every issue)
└── SimError                        base of the simulator's own errors
    ├── CommandRejected             a device refused a command (unknown, bad params, expired, malformed)
    ├── TransportError              a connection to the broker or the CoAP endpoint failed (retryable)
    │   └── ConnectRefused          the broker answered CONNECT with a refusal (``code``: its reason code)
    └── ReplayError                 a recorded telemetry file cannot be replayed (bad row, unknown format)

A fleet file's problems are ``fieldline.errors.ConfigError`` like every other YAML file of Fieldline.
"""

from __future__ import annotations

from fieldline.errors import FieldlineError


class SimError(FieldlineError):
    """Base class of the simulator's errors."""


class CommandRejected(SimError):
    """Raised by a device model when it refuses a command; ``code`` is ``unknown_command``, ``bad_params``,
    ``expired`` or ``malformed``, sent back in the acknowledgement with the message."""

    def __init__(self, code: str, message: str, *, device_id: str, command: str | None = None) -> None:
        self.code = code
        self.device_id = device_id
        self.command = command
        super().__init__(message)


class TransportError(SimError):
    """Raised when a simulated device cannot reach its broker or CoAP endpoint, or loses its connection; the
    message names the endpoint or the client."""

    retryable = True


class ConnectRefused(TransportError):
    """Raised when the broker refuses a device's CONNECT; ``code`` is the CONNACK reason code."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


class ReplayError(SimError):
    """Raised when a recorded telemetry file cannot be replayed; ``path`` and ``line`` locate the problem."""

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")
