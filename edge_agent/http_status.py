"""A tiny HTTP server for operations: ``GET /healthz`` (JSON) and ``GET /metrics`` (Prometheus text).

The agent must not need a web framework on a Pi, so this speaks just enough HTTP/1.1 for probes and scrapers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from edge_agent.metrics import exposition

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]


class StatusServer:
    """Async context manager serving health and metrics on ``bind:port`` (port 0 picks a free one)."""

    def __init__(self, bind: str, port: int, health: HealthProbe, registry: CollectorRegistry) -> None:
        self.bind = bind
        self.port = port
        self.health = health
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StatusServer:
        self._server = await asyncio.start_server(self._handle, self.bind, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"method not allowed\n"
            elif path == "/healthz":
                ok, details = self.health()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = (
                    "application/json",
                    orjson.dumps({"status": "ok" if ok else "failing", **details}),
                )
            elif path == "/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = exposition(self.registry)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
