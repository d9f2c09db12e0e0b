"""Southbound CoAP: the gateway's CoAP server, where devices ``POST /t/{device_id}`` their telemetry.

Each request waits until its data is durable before the answer goes back, so a 2.04 Changed means the reading
is in the outbox (the same guarantee as the MQTT acknowledgement). Resources:

    POST /t/{device_id}     telemetry (JSON 50, CBOR 60, SenML JSON 110, SenML CBOR 112, or no Content-Format)
    GET  /health            2.05 "ok"
    GET  /.well-known/core  RFC 6690 link format listing

Size limits apply before anything is decoded: a declared Size1, a single datagram or the running total of
a block-wise (Block1) upload above ``max_payload`` gets 4.13 with a Size1 option naming the limit, so an
oversize upload is refused at the first block that crosses the limit and never reassembled. Observing and
polling devices that are CoAP servers themselves is ``edge_agent.coap_poller``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiocoap
from aiocoap import Code, Message
from aiocoap.meta import version as aiocoap_version
from aiocoap.pipe import Pipe
from aiocoap.resource import PathCapable, Resource, Site, WKCResource
from aiocoap.util.asyncio.recvmsg import RecvmsgSelectorDatagramTransport
from aiocoap.util.linkformat import Link, LinkFormat
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.errors import CoapBindError
from fieldline.durations import Duration, Size
from fieldline.errors import PayloadError
from fieldline.payloads import CONTENT_FORMATS
from fieldline.wire import ID_PATTERN, valid_id

log = logging.getLogger(__name__)

TEXT_PLAIN = 0
MAX_DIAGNOSTIC = 256  # bytes of diagnostic text in an error response: keeps it inside one datagram
UDP_HEADROOM = 1024  # bytes of CoAP header and options allowed on top of max_payload in one datagram

MetricsHook = Callable[[str], None]
"""Called with the code (``"2.04"``, ``"4.00"``, ``"4.13"`` ...) of every telemetry request answered."""


class TelemetryIngest(Protocol):
    """What the server and the poller hand device data to (the agent's ``Ingest``)."""

    async def submit(self, device_id: str, payload: bytes, content_format: str | None, *, source: str) -> int:
        """Decode, run the pipeline and wait until the data is durable; returns the number of points accepted.

        Raises ``fieldline.errors.PayloadError`` (after quarantining the message) when the payload is bad; its
        ``reason`` is ``too_large`` for oversize payloads.
        """
        ...

    def reject(self, device_id: str | None, payload: bytes, reason: str, detail: str, *, source: str) -> None:
        """Quarantine a request refused before decoding (oversize, bad device id, unknown content-format)."""
        ...


PayloadFormat = Literal["json", "cbor", "senml+json", "senml+cbor"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CoapObserveConfig(_Model):
    """One device resource the agent observes (RFC 7641) or polls with GET (``southbound.coap.observe[]``)."""

    device_id: str = Field(pattern=f"^{ID_PATTERN.pattern}$")
    uri: str
    mode: Literal["observe", "poll"] = "observe"
    interval: Duration = Field(30.0, gt=0)
    content_format: PayloadFormat | None = None

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "coap" or not parts.hostname:
            raise ValueError("expected coap://host[:port]/path")
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
        return value


class CoapConfig(_Model):
    """``southbound.coap`` in ``agent.yaml``."""

    enabled: bool = True
    bind: str = "0.0.0.0"
    port: int = Field(5683, ge=0, le=65535)
    max_payload: Size = Field(16 * 1024, gt=0, le=1024 * 1024)
    observe: list[CoapObserveConfig] = []


class CoapServer:
    """The CoAP server, as an async context manager: bound in ``__aenter__``, shut down in ``__aexit__``."""

    def __init__(
        self, config: CoapConfig, ingest: TelemetryIngest, *, metrics_hook: MetricsHook | None = None
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.metrics_hook = metrics_hook
        self.port: int | None = None
        self._context: aiocoap.Context | None = None

    def site(self) -> Site:
        site = Site()
        site.add_resource(["t"], _TelemetryResource(self))
        site.add_resource(["health"], _HealthResource())
        site.add_resource(
            [".well-known", "core"], WKCResource(site.get_resources_as_linkheader, impl_info=None)
        )
        return site

    async def __aenter__(self) -> CoapServer:
        cfg = self.config
        try:
            self._context = await aiocoap.Context.create_server_context(
                self.site(), bind=(cfg.bind, cfg.port), transports=["udp6"]
            )
        except (OSError, aiocoap.error.Error) as exc:
            detail = str(exc.args[-1]) if exc.args else type(exc).__name__
            raise CoapBindError(detail, endpoint=f"udp {cfg.bind}:{cfg.port}") from exc
        transport = _udp_transport(self._context)
        # aiocoap reads at most 4096 bytes per datagram and silently truncates the rest; make room for a full
        # max_payload datagram so that a large non-block-wise request is judged on its real size.
        transport.max_size = max(transport.max_size, min(65536, cfg.max_payload + UDP_HEADROOM))
        self.port = transport.get_extra_info("socket").getsockname()[1]
        log.info("coap server listening", extra={"bind": cfg.bind, "port": self.port})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
            log.info("coap server stopped", extra={"port": self.port})

    def answered(self, response: Message) -> Message:
        if self.metrics_hook is not None:
            self.metrics_hook(response.code.dotted)
        return response


class _TelemetryResource(PathCapable, Resource):
    """``/t/{device_id}``: the site hands it every request below ``/t/`` with the path stripped to the id."""

    rt = "fieldline.telemetry"
    ct = " ".join(str(number) for number in CONTENT_FORMATS)

    def __init__(self, server: CoapServer) -> None:
        super().__init__()
        self.server = server

    def get_resources_as_linkheader(self) -> LinkFormat:
        return LinkFormat([Link("", **self.get_link_description())])

    async def render_to_pipe(self, pipe: Pipe) -> None:
        # Checked on every block, before aiocoap's Block1 spool reassembles anything.
        refusal = self._refusal(pipe.request)
        if refusal is not None:
            self._quarantine_refused(pipe.request, refusal)
            refusal.opt.no_response = pipe.request.opt.no_response
            pipe.add_response(self.server.answered(refusal), is_last=True)
            return
        await super().render_to_pipe(pipe)

    def _refusal(self, request: Message) -> Message | None:
        path = request.opt.uri_path
        if len(path) != 1 or not path[0]:
            return _error(Code.NOT_FOUND, "use POST /t/{device_id}")
        if request.code != Code.POST:
            return _error(Code.METHOD_NOT_ALLOWED, "only POST is allowed on /t/{device_id}")
        if not valid_id(path[0]):
            return _error(Code.BAD_REQUEST, f"invalid device id {path[0]!r}")
        content_format = request.opt.content_format
        if content_format is not None and int(content_format) not in CONTENT_FORMATS:
            accepted = ", ".join(f"{n} ({name})" for n, name in CONTENT_FORMATS.items())
            return _error(
                Code.UNSUPPORTED_CONTENT_FORMAT, f"content-format {int(content_format)}; use {accepted}"
            )
        limit = self.server.config.max_payload
        block1 = request.opt.block1
        received = len(request.payload) + (block1.start if block1 is not None else 0)
        if max(received, request.opt.size1 or 0) > limit:
            response = _error(Code.REQUEST_ENTITY_TOO_LARGE, f"payload over {limit} bytes")
            response.opt.size1 = limit
            return response
        return None

    def _quarantine_refused(self, request: Message, refusal: Message) -> None:
        """Refused data is quarantined like any bad payload; wrong paths and methods are not data."""
        reason = {
            Code.REQUEST_ENTITY_TOO_LARGE: "too_large",
            Code.BAD_REQUEST: "bad_device_id",
            Code.UNSUPPORTED_CONTENT_FORMAT: "bad_content_format",
        }.get(refusal.code)
        if reason is not None:
            path = request.opt.uri_path
            device_id = path[0] if len(path) == 1 and valid_id(path[0]) else None
            self.server.ingest.reject(
                device_id,
                bytes(request.payload),
                reason,
                refusal.payload.decode("utf-8", "replace"),
                source="coap",
            )

    async def render_post(self, request: Message) -> Message:
        device_id = request.opt.uri_path[0]
        content_format = request.opt.content_format
        name = None if content_format is None else CONTENT_FORMATS[int(content_format)]
        try:
            await self.server.ingest.submit(device_id, bytes(request.payload), name, source="coap")
        except PayloadError as exc:
            log.debug("coap payload refused", extra={"device_id": device_id, "reason": exc.reason})
            code = Code.REQUEST_ENTITY_TOO_LARGE if exc.reason == "too_large" else Code.BAD_REQUEST
            return self.server.answered(_error(code, str(exc)))
        except Exception:  # an ingest bug costs this request a 5.00, never the server
            log.exception("coap ingest failed", extra={"device_id": device_id})
            return self.server.answered(_error(Code.INTERNAL_SERVER_ERROR, "internal error"))
        return self.server.answered(Message(code=Code.CHANGED))


class _HealthResource(Resource):
    """``/health``: 2.05 "ok" while the server answers, for device-side checks."""

    rt = "fieldline.health"
    ct = str(TEXT_PLAIN)

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=b"ok", content_format=TEXT_PLAIN)


def _error(code: Code, diagnostic: str) -> Message:
    """An error response with a text/plain diagnostic payload (RFC 7252 section 5.5.2)."""
    payload = diagnostic.encode("utf-8")[:MAX_DIAGNOSTIC].decode("utf-8", "ignore").encode("utf-8")
    return Message(code=code, payload=payload, content_format=TEXT_PLAIN)


def _udp_transport(context: aiocoap.Context) -> RecvmsgSelectorDatagramTransport:
    """The datagram transport under a udp6-only context (aiocoap exposes no public accessor for it)."""
    try:
        message_interface = context.request_interfaces[0].token_interface.message_interface
        transport = message_interface.transport
    except (AttributeError, IndexError) as exc:
        raise RuntimeError(f"cannot find the UDP socket of the aiocoap {aiocoap_version} context") from exc
    if not isinstance(transport, RecvmsgSelectorDatagramTransport):
        raise RuntimeError(f"unexpected aiocoap transport {type(transport).__name__}")
    return transport
