"""The PKI service's refusals, as problem details whose ``detail`` says exactly which check failed::

    PkiError (Problem)
    ├── EnrollmentRefused     403  the enrollment token is unknown, used, expired, revoked or bound to another id
    ├── RenewalRefused        403  the current certificate or its proof of possession does not hold
    ├── CsrRefused            422  the CSR is unreadable or fails a check (signature, subject, key type or size)
    └── CertificateNotFound   404  no certificate with that serial

Each refusal is logged by the audit middleware with its detail (never the token or the CSR themselves).
"""

from __future__ import annotations

from cloud_core.problems import Problem


class PkiError(Problem):
    """Base of the PKI service's refusals."""


class EnrollmentRefused(PkiError):
    """Raised when an enrollment token cannot pay for this certificate; the detail names the reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, "Enrollment refused", detail, type="enrollment-refused")


class RenewalRefused(PkiError):
    """Raised when a renewal's current certificate or proof of possession is not accepted."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, "Renewal refused", detail, type="renewal-refused")


class CsrRefused(PkiError):
    """Raised when a CSR cannot be read or fails ``certs.check_csr``."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, "CSR rejected", detail, type="csr-rejected")


class CertificateNotFound(PkiError):
    """Raised when no issued certificate matches a serial or an owner."""

    def __init__(self, detail: str) -> None:
        super().__init__(404, "Certificate not found", detail, type="not-found")
