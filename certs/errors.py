"""Errors raised by the PKI package.

FieldlineError (fieldline.errors)
└── CertsError                 base of the PKI package's errors
    ├── CsrRejected            a certificate signing request failed a check (``reason`` says which)
    ├── CaError                CA files are missing or corrupt, or the passphrase is wrong (``path``)
    ├── CertificateFileError   a certificate, key, CSR or CRL file cannot be read or parsed (``path``)
    ├── StoreError             the CA directory's registry of issued certificates is unreadable (``path``)
    └── CrlError               a CRL is unusable: bad signature, not from our CA, fetch failed (``source``)

None of them is retryable except ``CrlError`` raised for a failed fetch: a CSR or a CA file does not get better
by trying again.
"""

from __future__ import annotations

from pathlib import Path

from fieldline.errors import FieldlineError


class CertsError(FieldlineError):
    """Base class of the PKI package's errors."""


class CsrRejected(CertsError):
    """Raised when a CSR fails a check; ``reason`` is a precise sentence an operator or a gateway can act on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CaError(CertsError):
    """Raised when the CA directory's files are missing, corrupt, already present, or the passphrase is wrong."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class CertificateFileError(CertsError):
    """Raised when a PEM/DER file (certificate, key, CSR, CRL) cannot be read or parsed; ``path`` names it."""

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class StoreError(CertsError):
    """Raised when the CA directory's ``index.json`` cannot be read or an unknown serial is asked for."""

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class CrlError(CertsError):
    """Raised when a CRL cannot be fetched (retryable) or is not signed by the CA chain (not retryable)."""

    def __init__(self, message: str, *, source: str, retryable: bool = False) -> None:
        self.source = source
        self.retryable = retryable
        super().__init__(f"{source}: {message}")
