"""How much of a certificate's life is left, and when to renew it (the agent renews below a third)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

RENEW_BELOW = 1 / 3


def remaining_fraction(cert: x509.Certificate, now: datetime) -> float:
    """1.0 at ``notBefore`` (or before), 0.0 at ``notAfter`` (or after), linear in between."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = (end - start).total_seconds()
    if lifetime <= 0:
        return 0.0
    return min(1.0, max(0.0, (end - now).total_seconds() / lifetime))


def needs_renewal(cert: x509.Certificate, now: datetime, threshold: float = RENEW_BELOW) -> bool:
    """True once less than ``threshold`` of the validity remains (and for an expired certificate)."""
    return remaining_fraction(cert, now) < threshold


def renewal_time(cert: x509.Certificate, threshold: float = RENEW_BELOW) -> datetime:
    """The instant from which :func:`needs_renewal` is true."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - (end - start) * threshold


def time_left(cert: x509.Certificate, now: datetime) -> timedelta:
    """Time until ``notAfter``; negative once expired."""
    return cert.not_valid_after_utc - now


def is_current(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
