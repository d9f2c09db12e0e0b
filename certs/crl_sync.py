"""Keep the broker's ``crlfile`` in step with the CRL the cloud publishes (``GET /api/v1/pki/crl``).

Each round fetches the CRL (or, after an intermediate rotation, one CRL per issuing intermediate in one PEM
file), checks every signature against the CA chain, and replaces the file atomically when it
carries a higher CRL number and either revokes a different set of certificates or the installed one has used up
half of its life; then it makes the broker reload. Mosquitto 2.0 re-reads ``crlfile`` on SIGHUP for new
connections (verified with 2.0.11, see docs/security.md); sessions already open survive a SIGHUP, so cutting a
stolen gateway at once takes a restart (``--reload-command "systemctl restart mosquitto"``). Replacing the file
only when it matters keeps reloads rare: each SIGHUP adds the CRL to the listener's OpenSSL store.

A CRL that has already expired is never installed (Mosquitto would then refuse every client), and a fetch that
fails leaves the installed file alone and is retried at the next round."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from certs.crl import crl_bundle, crl_number, parse_crls, revoked_serials, verify_crl
from certs.errors import CertsError, CrlError
from certs.keys import load_certificates, write_atomic
from certs.tls import client_context

log = logging.getLogger("certs.crl_sync")

Reload = Callable[[], None]
FETCH_TIMEOUT = 15.0
MAX_CRL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SyncOutcome:
    """What one round did: ``installed`` tells whether the file was replaced (and the broker reloaded)."""

    installed: bool
    number: int
    previous: int | None
    detail: str


def fetch_crl(url: str, *, ca_file: Path, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The body of ``GET url``; an ``https`` URL is verified against ``ca_file``. Failures raise a retryable
    :class:`CrlError`."""
    context: ssl.SSLContext | None = client_context(ca_file=ca_file) if url.startswith("https:") else None
    request = urllib.request.Request(url, headers={"Accept": "application/x-pem-file"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            body = answer.read(MAX_CRL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise CrlError(f"HTTP {exc.code} {exc.reason}", source=url, retryable=True) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CrlError(f"cannot fetch: {reason}", source=url, retryable=True) from exc
    if len(body) > MAX_CRL_BYTES:
        raise CrlError(f"answer larger than {MAX_CRL_BYTES} bytes", source=url)
    return body


def install_crl(
    data: bytes,
    *,
    chain: list[x509.Certificate],
    out: Path,
    now: datetime,
    source: str,
) -> SyncOutcome:
    """Write ``data`` (a DER CRL, or PEM with one CRL per issuing intermediate) to ``out`` as PEM if every CRL in
    it is signed by ``chain`` and still valid, and it is worth replacing what is installed (module docstring).
    The CRL number compared is the highest of the bundle."""
    crls = parse_crls(data, source=source)
    for crl in crls:
        verify_crl(crl, chain, source=source)
        if crl.next_update_utc is not None and crl.next_update_utc <= now:
            raise CrlError(
                f"CRL {crl_number(crl)} expired at {crl.next_update_utc:%Y-%m-%d %H:%M} UTC; not installed",
                source=source,
            )
    number = max(crl_number(crl) for crl in crls)
    current = _installed(out, chain)
    previous = max((crl_number(crl) for crl in current), default=None) if current else None
    if current and previous is not None:
        if number <= previous:
            return SyncOutcome(
                False, number, previous, f"CRL {number} is not newer than the installed {previous}"
            )
        if _revocations(crls) == _revocations(current) and not any(_past_half_life(c, now) for c in current):
            return SyncOutcome(
                False, number, previous, "same revocations and the installed CRL is still fresh"
            )
    write_atomic(out, crl_bundle(crls), 0o644)
    revoked = len(set().union(*(revoked_serials(crl) for crl in crls)))
    return SyncOutcome(True, number, previous, f"installed CRL {number} ({revoked} revoked)")


def signal_reload(pid_file: Path) -> Reload:
    """A reload that sends SIGHUP to the process whose id is in ``pid_file`` (Mosquitto's ``pid_file``)."""

    def reload() -> None:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise CrlError(f"cannot signal the broker: {exc}", source=str(pid_file), retryable=True) from exc

    return reload


def command_reload(command: str) -> Reload:
    """A reload that runs ``command`` (split like a shell would, not run by one) and requires exit status 0."""
    argv = shlex.split(command)

    def reload() -> None:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CrlError(f"reload command failed: {exc}", source=command, retryable=True) from exc
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise CrlError(
                f"reload command exited {result.returncode}: {last[0]}", source=command, retryable=True
            )

    return reload


def sync_once(
    url: str, *, ca_file: Path, out: Path, reload: Reload | None, now: datetime | None = None
) -> SyncOutcome:
    """One round: fetch, verify, install when newer, reload the broker when installed."""
    chain = load_certificates(ca_file)
    outcome = install_crl(
        fetch_crl(url, ca_file=ca_file), chain=chain, out=out, now=now or datetime.now(UTC), source=url
    )
    if outcome.installed and reload is not None:
        reload()
    return outcome


def run(
    url: str,
    *,
    ca_file: Path,
    out: Path,
    reload: Reload | None,
    interval: float,
    stop: threading.Event,
    on_outcome: Callable[[SyncOutcome], None] = lambda outcome: None,
) -> None:
    """Sync every ``interval`` seconds until ``stop`` is set; failures are logged and retried next round, except
    non-retryable ones about our own setup (a CA file that cannot be read), which end the loop."""
    while not stop.is_set():
        try:
            outcome = sync_once(url, ca_file=ca_file, out=out, reload=reload)
        except CrlError as exc:
            log.warning("CRL sync failed", extra={"error": str(exc), "retryable": exc.retryable})
        else:
            log.info(outcome.detail, extra={"crl_number": outcome.number, "installed": outcome.installed})
            on_outcome(outcome)
        _warn_if_stale(out, ca_file)
        stop.wait(interval)


def _installed(out: Path, chain: list[x509.Certificate]) -> list[x509.CertificateRevocationList]:
    """The CRLs in ``out`` if all are ours and readable; otherwise none (the file will be replaced)."""
    try:
        crls = parse_crls(out.read_bytes(), source=str(out))
        for crl in crls:
            verify_crl(crl, chain, source=str(out))
    except (OSError, CrlError):
        return []
    return crls


def _revocations(crls: list[x509.CertificateRevocationList]) -> set[tuple[str, int]]:
    return {(crl.issuer.rfc4514_string(), serial) for crl in crls for serial in revoked_serials(crl)} | {
        (crl.issuer.rfc4514_string(), -1) for crl in crls
    }


def _past_half_life(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    if crl.next_update_utc is None:
        return False
    return now >= crl.last_update_utc + (crl.next_update_utc - crl.last_update_utc) / 2


def _warn_if_stale(out: Path, ca_file: Path) -> None:
    try:
        installed = _installed(out, load_certificates(ca_file))
    except CertsError:
        return
    updates = [crl.next_update_utc for crl in installed if crl.next_update_utc is not None]
    if updates:
        left = min(updates) - datetime.now(UTC)
        if left.total_seconds() < 6 * 3600:
            log.warning(
                "the installed CRL expires soon: the broker will refuse every client once it has",
                extra={"crl_file": str(out), "seconds_left": int(left.total_seconds())},
            )
