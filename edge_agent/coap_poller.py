"""Observing and polling devices that are CoAP servers (``southbound.coap.observe`` in ``agent.yaml``).

One task per configured resource, each submitting what it receives to the ingest with source ``coap-observe``:

- ``observe`` registers with RFC 7641 Observe and submits the first response and every notification. When no
  notification arrives within the last Max-Age (60 s when absent) plus ``interval``, the device may have
  rebooted and forgotten the registration, so the agent registers again. A resource that answers without an
  Observe option is fetched again every ``interval``. Observe is lossy by design: notifications arriving while
  the previous one is being made durable are coalesced into the latest; a device whose every sample matters
  POSTs to ``/t/{device_id}`` instead.
- ``poll`` GETs the resource every ``interval``.

A device that cannot be reached, or that answers with an error code, is tried again after a jittered
exponential backoff starting at ``interval`` and capped at ``max(interval, 2 min)``; a success resets it. Bad
payloads are quarantined by the ingest and only counted here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import aiocoap
from aiocoap import Code, Message

from edge_agent.backoff import Backoff
from edge_agent.southbound_coap import CoapObserveConfig, TelemetryIngest
from fieldline.errors import PayloadError
from fieldline.payloads import CONTENT_FORMATS
from fieldline.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SOURCE = "coap-observe"
DEFAULT_MAX_AGE = 60.0  # RFC 7252 section 5.10.5
MAX_BACKOFF = 120.0


@dataclass
class SourceStatus:
    """What happened to one observed or polled resource; read by the status page and the tests."""

    device_id: str
    uri: str
    mode: str
    responses: int = 0  # responses and notifications received
    points: int = 0  # points the ingest accepted from them
    payload_errors: int = 0  # payloads the ingest refused (and quarantined)
    ingest_errors: int = 0  # unexpected ingest failures
    failures: int = 0  # unreachable device, timeouts, error codes
    registrations: int = 0  # successful observe registrations, or successful polls
    last_error: str | None = None


class CoapPoller:
    """Observes or polls the configured device resources, as an async context manager."""

    def __init__(
        self,
        sources: Sequence[CoapObserveConfig],
        ingest: TelemetryIngest,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.sources = list(sources)
        self.ingest = ingest
        self.status = [SourceStatus(s.device_id, s.uri, s.mode) for s in self.sources]
        self._rng = rng or random.Random()
        self._context: aiocoap.Context | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> CoapPoller:
        if not self.sources:
            return self
        self._context = await aiocoap.Context.create_client_context(transports=["udp6"])
        for config, status in zip(self.sources, self.status, strict=True):
            follower = _Follower(config, status, self._context, self.ingest, self._rng)
            run = follower.observe() if config.mode == "observe" else follower.poll()
            self._tasks.append(asyncio.create_task(run, name=f"coap-{config.mode}-{config.device_id}"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._context is not None:
            await self._context.shutdown()
            self._context = None


class _ErrorResponse(Exception):
    """The device answered with an error code."""

    def __init__(self, response: Message) -> None:
        super().__init__(
            f"device answered {response.code}: {response.payload[:100].decode('utf-8', 'replace')}"
        )


class _Follower:
    """The loop of one resource: registration or polls, submissions and backoff."""

    def __init__(
        self,
        config: CoapObserveConfig,
        status: SourceStatus,
        context: aiocoap.Context,
        ingest: TelemetryIngest,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.status = status
        self.context = context
        self.ingest = ingest
        self.backoff = Backoff(config.interval, max(config.interval, MAX_BACKOFF), rng)
        self._said_not_observable = False

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                response = _successful(
                    await self.context.request(Message(code=Code.GET, uri=self.config.uri)).response
                )
            except (aiocoap.error.Error, _ErrorResponse) as exc:
                await asyncio.sleep(self._failed(exc))
                continue
            self._succeeded()
            await self._submit(response)
            await asyncio.sleep(max(0.0, started + self.config.interval - loop.time()))

    async def observe(self) -> None:
        while True:
            try:
                delay = await self._observe_once()
            except (aiocoap.error.Error, _ErrorResponse) as exc:
                delay = self._failed(exc)
            await asyncio.sleep(delay)

    async def _observe_once(self) -> float:
        """Register and follow the notifications; returns how long to wait before registering again."""
        request = self.context.request(Message(code=Code.GET, uri=self.config.uri, observe=0))
        observation = request.observation
        assert observation is not None  # aiocoap creates one for every request with an Observe option
        try:
            response = _successful(await request.response)
            self._succeeded()
            await self._submit(response)
            if response.opt.observe is None:
                if not self._said_not_observable:
                    self._said_not_observable = True
                    log.info(
                        "coap resource is not observable, fetching it every interval", extra=self._extra()
                    )
                return self.config.interval
            notifications = aiter(observation)
            while True:
                try:
                    async with asyncio.timeout(_max_age(response) + self.config.interval):
                        response = await anext(notifications)
                except StopAsyncIteration:
                    log.info("coap observation ended by the device", extra=self._extra())
                    return self.config.interval
                except TimeoutError:
                    log.info("coap observation silent past max-age, registering again", extra=self._extra())
                    return 0.0
                await self._submit(_successful(response))
        finally:
            if not observation.cancelled:
                observation.cancel()

    async def _submit(self, response: Message) -> None:
        status = self.status
        status.responses += 1
        try:
            status.points += await self.ingest.submit(
                self.config.device_id, bytes(response.payload), self._payload_format(response), source=SOURCE
            )
        except PayloadError as exc:
            status.payload_errors += 1
            status.last_error = f"{exc.reason}: {exc}"
            log.info("coap device payload refused", extra={**self._extra(), "reason": exc.reason})
        except Exception as exc:  # an ingest bug must not stop following this device: count and surface it
            status.ingest_errors += 1
            status.last_error = f"ingest failed: {exc!r}"
            log.exception("coap ingest failed", extra=self._extra())

    def _payload_format(self, response: Message) -> str | None:
        """The response's Content-Format if it names a telemetry codec, else the configured one."""
        number = response.opt.content_format
        if number is not None and int(number) in CONTENT_FORMATS:
            return CONTENT_FORMATS[int(number)]
        return self.config.content_format

    def _succeeded(self) -> None:
        self.status.registrations += 1
        self.backoff.reset()

    def _failed(self, exc: Exception) -> float:
        delay = self.backoff.next_delay()
        self.status.failures += 1
        # str() of an aiocoap error is a generic "Network error: ..."; its first argument says what happened
        self.status.last_error = str(exc.args[0]) if exc.args else type(exc).__name__
        log.warning(
            "coap device request failed",
            extra={**self._extra(), "error": self.status.last_error, "retry_in": round(delay, 2)},
        )
        return delay

    def _extra(self) -> dict[str, str]:
        return {"device_id": self.config.device_id, "uri": self.config.uri, "mode": self.config.mode}


def _successful(response: Message) -> Message:
    if not response.code.is_successful():
        raise _ErrorResponse(response)
    return response


def _max_age(response: Message) -> float:
    max_age = response.opt.max_age
    return DEFAULT_MAX_AGE if max_age is None else float(max_age)
