"""A local MQTT broker for the demo and for development: Mosquitto when installed, else the embedded amqtt."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalBroker:
    port: int
    kind: str  # "mosquitto" or "amqtt"
    protocol: str  # MQTT protocol version the agent should speak to it

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@contextlib.asynccontextmanager
async def local_broker(port: int | None = None) -> AsyncIterator[LocalBroker]:
    """Start a broker on 127.0.0.1 for the duration of the block."""
    port = port or _free_port()
    binary = _mosquitto()
    if binary:
        with tempfile.TemporaryDirectory(prefix="fieldline-broker-") as tmp:
            conf = Path(tmp) / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                "max_inflight_messages 0\nlog_type error\n"
            )
            proc = await asyncio.create_subprocess_exec(
                binary, "-c", str(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                await _wait_port(port)
                yield LocalBroker(port, "mosquitto", "5")
            finally:
                proc.terminate()
                await proc.wait()
        return
    from amqtt.broker import Broker  # the [demo] extra; MQTT 3.1.1 only

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 1000}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield LocalBroker(port, "amqtt", "3.1.1")
    finally:
        await broker.shutdown()


async def _wait_port(port: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"broker did not open port {port}")
