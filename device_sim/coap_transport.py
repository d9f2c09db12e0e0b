"""CoAP devices: each reading is a confirmable ``POST /t/{device_id}`` to the gateway's CoAP endpoint, with the
Content-Format of the device's codec (JSON 50, CBOR 60, SenML+JSON 110, SenML+CBOR 112).

All devices share one aiocoap client context (one UDP socket). Requests run as tasks so that the scheduler never
waits for an answer; at most ``max_pending`` are outstanding, and a reading that would exceed that is not sent
and counted as ``skipped`` (the drop policy: a device whose gateway does not answer loses readings, as a real
one with a small buffer would). Answers are counted by code: ``2.04`` is success, anything else (``4.00``,
``4.13``, ``4.15`` ...) is counted under its code, and a request without an answer under ``timeout``/``error``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType
from urllib.parse import urlsplit

import aiocoap
from aiocoap import Code, Message
from aiocoap.error import Error as CoapError

from device_sim.errors import TransportError


def coap_base(url: str) -> str:
    """``coap://host:port`` from a URL (the path, if any, is dropped); raises ValueError for other schemes."""
    parts = urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise ValueError(f"not a CoAP endpoint URL (coap://host:port): {url}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"coap://{host}:{parts.port or 5683}"


class CoapSender:
    """An async context manager posting device readings to one CoAP endpoint."""

    def __init__(self, url: str, *, max_pending: int = 1000, within: float = 30.0) -> None:
        self.base = coap_base(url)
        self.max_pending = max_pending
        self.within = within
        self.codes: Counter[str] = Counter()
        """Answers by code (``2.04``, ``4.00`` ...), plus ``timeout``, ``error`` and ``skipped``."""
        self.sent = 0
        self._context: aiocoap.Context | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CoapSender:
        try:
            self._context = await aiocoap.Context.create_client_context(transports=["udp6"])
        except OSError as exc:
            raise TransportError(f"cannot open a CoAP client socket: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain()
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def succeeded(self) -> int:
        return self.codes["2.04"]

    def post(self, device_id: str, payload: bytes, content_format: int | None) -> bool:
        """Start one POST; False (counted as ``skipped``) when ``max_pending`` requests are outstanding."""
        if self._context is None or len(self._pending) >= self.max_pending:
            self.codes["skipped"] += 1
            return False
        message = Message(
            code=Code.POST,
            uri=f"{self.base}/t/{device_id}",
            payload=payload,
            content_format=content_format,
        )
        task = asyncio.create_task(self._request(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self.sent += 1
        return True

    async def drain(self) -> None:
        """Wait for every outstanding request's answer (or its timeout)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _request(self, message: Message) -> None:
        assert self._context is not None
        try:
            async with asyncio.timeout(self.within):
                response = await self._context.request(message).response
        except TimeoutError:
            self.codes["timeout"] += 1
        except (CoapError, OSError):
            self.codes["error"] += 1
        else:
            self.codes[response.code.dotted] += 1
