"""Automatic certificate renewal: ``async with Renewal(...)`` runs one task that keeps the uplink's certificate
current (docs/enrollment.md).

The task sleeps until less than ``pki.renew_below`` (a third) of the certificate's validity remains (waking at
least every ``pki.check_interval`` to read the file again), then asks the cloud for a new certificate for the same
key, proving possession of it (``POST /api/v1/pki/renew``). While the cloud is unreachable (or answers 5xx) it
retries with jittered exponential backoff and the agent keeps using the current certificate; a refusal (revoked,
expired, not ours) is logged as an error and tried again after ``check_interval``. The new certificate replaces the
file atomically and ``on_renewed`` makes the uplink reconnect with it (``Uplink.reconnect``: nothing in the outbox
is lost or sent twice). Below ``pki.warn_below`` (a sixth) of the validity every check logs a warning.

Metrics: ``fieldline_edge_certificate_expiry_seconds`` (gauge, seconds until notAfter),
``fieldline_edge_certificate_renewal_attempts``, ``..._renewal_failures`` and ``..._renewals`` (counters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from certs import (
    CertsError,
    PrivateKey,
    load_certificates,
    load_private_key,
    make_csr,
    needs_renewal,
    remaining_fraction,
)
from certs.validity import renewal_time
from edge_agent.backoff import Backoff
from edge_agent.config import PkiConfig
from edge_agent.enrollment import RENEW_PATH, IdentityFiles, PkiClient, check_issued
from edge_agent.errors import PkiError
from fieldline.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Renewal:
    """Keeps ``files.cert`` renewed for ``gateway_id`` against ``config.cloud_url``."""

    def __init__(
        self,
        config: PkiConfig,
        files: IdentityFiles,
        gateway_id: str,
        *,
        on_renewed: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.cloud_url is not None
        self.config = config
        self.files = files
        self.gateway_id = gateway_id
        self.on_renewed = on_renewed
        self.clock = clock
        self.attempts = 0
        self.failures = 0
        self.renewals = 0
        self.not_after: datetime | None = None
        self.last_error: str | None = None
        self._backoff = Backoff(config.backoff.initial, config.backoff.max)
        self._client: PkiClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Renewal:
        assert self.config.cloud_url is not None
        self._client = PkiClient(self.config.cloud_url, ca_file=self.config.ca, timeout=self.config.timeout)
        self._task = asyncio.create_task(self._run(), name="certificate-renewal")
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _run(self) -> None:
        while True:  # noqa: ASYNC110 - sleeps until the renewal deadline, it does not poll a condition
            await asyncio.sleep(await self.check())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def check(self) -> float:
        """Renew if due; returns the seconds to wait before the next check."""
        try:
            current = load_certificates(self.files.cert)[0]
        except CertsError as exc:
            self.last_error = str(exc)
            log.error("cannot read the certificate to renew", extra={"error": str(exc)})
            return self.config.check_interval
        now = self._now()
        self.not_after = current.not_valid_after_utc
        fraction = remaining_fraction(current, now)
        if fraction < self.config.warn_below:
            log.warning(
                "certificate expires soon",
                extra={
                    "serial": format(current.serial_number, "x"),
                    "not_after": self.not_after.isoformat(),
                    "remaining": round(fraction, 3),
                    "last_error": self.last_error,
                },
            )
        if not needs_renewal(current, now, self.config.renew_below):
            due = (renewal_time(current, self.config.renew_below) - now).total_seconds()
            return min(self.config.check_interval, max(0.0, due))
        try:
            key = load_private_key(self.files.key)
        except CertsError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("cannot read the key to renew with", extra={"error": str(exc)})
            return self.config.check_interval
        try:
            await self._renew(current, key)
        except PkiError as exc:
            self.failures += 1
            self.last_error = str(exc)
            if not exc.retryable:
                log.error("certificate renewal refused", extra={"error": str(exc)})
                return self.config.check_interval
            delay = self._backoff.next_delay()
            log.warning("certificate renewal failed", extra={"error": str(exc), "retry_in": round(delay, 2)})
            return delay
        self._backoff.reset()
        return 0.0

    async def _renew(self, current: x509.Certificate, key: PrivateKey) -> None:
        assert self._client is not None
        self.attempts += 1
        issued = await self._client.renew(current, key, make_csr(key, self.gateway_id))
        check_issued(issued, key, self.gateway_id, url=f"{self._client.cloud_url}{RENEW_PATH}")
        self.files.store(issued)
        self.renewals += 1
        self.last_error = None
        self.not_after = issued.certificate.not_valid_after_utc
        log.info(
            "certificate renewed",
            extra={
                "serial": issued.serial,
                "previous": format(current.serial_number, "x"),
                "not_after": self.not_after.isoformat(),
            },
        )
        self.on_renewed()

    def health(self) -> dict[str, Any]:
        return {
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "renewals": self.renewals,
            "renewal_failures": self.failures,
            "last_error": self.last_error,
        }

    def collect(self) -> Iterator[Metric]:
        if self.not_after is not None:
            yield GaugeMetricFamily(
                "fieldline_edge_certificate_expiry_seconds",
                "Seconds until the uplink certificate expires (negative once expired).",
                value=(self.not_after - self._now()).total_seconds(),
            )
        for name, doc, value in (
            ("renewal_attempts", "Certificate renewal requests sent to the cloud.", self.attempts),
            ("renewal_failures", "Certificate renewals that failed (unreachable or refused).", self.failures),
            ("renewals", "Certificates renewed.", self.renewals),
        ):
            family = CounterMetricFamily(f"fieldline_edge_certificate_{name}", doc)
            family.add_metric([], value)
            yield family
