"""One MQTT connection per simulated device, thousands of them in one process.

``DeviceLinks`` connects devices in waves: a fixed number of connector tasks take devices from a queue, so at
most ``concurrency`` CONNECTs are in flight however many devices ask at once (a reconnect storm, a broker
restart). A failed attempt waits an exponential backoff with jitter before it is queued again. A connection the
broker loses (a restart, a keepalive timeout) is reconnected the same way; a device the model takes offline
(:meth:`DeviceLinks.drop`) stays down until it is connected again on purpose. One task sends every connection's
keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

from device_sim.errors import ConnectRefused, TransportError
from device_sim.mqtt_client import InboundMessage, MqttClient, Will


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (one socket per device); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the devices connect: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS with the system's CAs)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an MQTT broker URL (mqtt://host:port or mqtts://host:port): {url}")
        tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(slots=True)
class LinkCounters:
    connects: int = 0
    failures: int = 0
    """Connection attempts that failed (refused, unreachable, timed out)."""
    lost: int = 0
    """Connections the broker or the network ended without the model asking."""
    dropped: int = 0
    """Connections the model ended abruptly (dropouts, reconnect storms)."""
    last_error: str = ""


@dataclass(slots=True)
class _Link:
    device_id: str
    will: Will | None
    subscriptions: list[tuple[str, int]]
    client: MqttClient | None = None
    wanted: bool = False
    queued: bool = False
    attempts: int = 0


@dataclass
class DeviceLinks:
    """Connections of many devices to one broker (an async context manager).

    ``on_message(device_id, message)`` receives what a device's subscriptions deliver; ``on_connected(device_id)``
    runs after each successful CONNACK (the runner publishes the device's online state from it).
    """

    broker: Broker
    on_message: Callable[[str, InboundMessage], None] | None = None
    on_connected: Callable[[str], None] | None = None
    concurrency: int = 64
    keepalive: int = 60
    protocol: int = 5
    backoff: tuple[float, float] = (0.5, 30.0)
    """First and longest wait between attempts; each failure doubles it, with jitter in [50%, 100%]."""
    counters: LinkCounters = field(default_factory=LinkCounters, init=False)
    _links: dict[str, _Link] = field(default_factory=dict, init=False)
    _queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _rng: random.Random = field(default_factory=lambda: random.Random(0), init=False)
    _connected: int = field(default=0, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def __aenter__(self) -> DeviceLinks:
        raise_open_files_limit()
        self._tasks = [asyncio.create_task(self._connector()) for _ in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._keepalive()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.disconnect_all()

    # ------------------------------------------------------------------ what the runner asks

    @property
    def connected(self) -> int:
        return self._connected

    async def wait_connected(self, count: int) -> None:
        """Wait until exactly ``count`` devices are connected (bound it with ``asyncio.timeout``)."""
        while self._connected != count:
            self._changed.clear()
            await self._changed.wait()

    def add(self, device_id: str, *, will: Will | None, subscriptions: list[tuple[str, int]]) -> None:
        """Register a device and queue its first connection."""
        self._links[device_id] = _Link(device_id, will, subscriptions)
        self.connect(device_id)

    def connect(self, device_id: str) -> None:
        """Queue a connection for this device (no-op when it is connected or already queued)."""
        link = self._links[device_id]
        link.wanted = True
        link.attempts = 0
        if not link.queued and not self.is_connected(device_id):
            link.queued = True
            self._queue.put_nowait(device_id)

    def client(self, device_id: str) -> MqttClient | None:
        """The device's connection when it is up (load mode writes prebuilt packets on it)."""
        client = self._links[device_id].client
        return client if client is not None and client.connected else None

    def is_wanted(self, device_id: str) -> bool:
        """True while the device should be connected (connected, or on its way: queued, backing off)."""
        return self._links[device_id].wanted

    def is_connected(self, device_id: str) -> bool:
        client = self._links[device_id].client
        return client is not None and client.connected

    def publish(self, device_id: str, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish on the device's own connection; False when it is not connected (or its window is full)."""
        client = self._links[device_id].client
        return client is not None and client.publish(topic, payload, qos, retain)

    def drop(self, device_id: str, *, reconnect: bool = False) -> None:
        """End the device's connection abruptly so that the broker publishes its last will. With ``reconnect``
        it joins the connect queue right away (a reconnect storm); otherwise it stays offline until
        :meth:`connect`."""
        link = self._links[device_id]
        link.wanted = False
        client = link.client
        if client is not None and client.connected:
            self.counters.dropped += 1
            client.abort()
        if reconnect:
            self.connect(device_id)

    async def disconnect_all(self) -> None:
        """Disconnect every device normally (DISCONNECT: no will), a few hundred at a time."""
        clients = [
            link.client for link in self._links.values() if link.client is not None and link.client.connected
        ]
        for link in self._links.values():
            link.wanted = False
        for start in range(0, len(clients), 500):
            await asyncio.gather(*(client.disconnect() for client in clients[start : start + 500]))

    # ------------------------------------------------------------------ internals

    async def _connector(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            device_id = await self._queue.get()
            link = self._links[device_id]
            link.queued = False
            if not link.wanted or self.is_connected(device_id):
                continue
            client = MqttClient(
                self.broker.host,
                self.broker.port,
                device_id,
                will=link.will,
                keepalive=self.keepalive,
                protocol=self.protocol,
                tls=self.broker.tls,
                on_message=(lambda m, d=device_id: self.on_message(d, m)) if self.on_message else None,
                on_close=self._closed,
            )
            subscribe = client.subscribe_packet(link.subscriptions) if link.subscriptions else b""
            try:
                await client.connect(then=subscribe)
            except TransportError as exc:
                self.counters.failures += 1
                self.counters.last_error = str(exc)
                link.attempts += 1
                low, high = self.backoff
                wait = min(high, low * 2 ** (link.attempts - 1)) * (0.5 + self._rng.random() / 2)
                if isinstance(exc, ConnectRefused):
                    wait = high
                link.queued = True
                loop.call_later(wait, self._queue.put_nowait, device_id)
                continue
            if not link.wanted:  # taken offline while connecting
                client.abort()
                continue
            link.client = client
            link.attempts = 0
            self._connected += 1
            self._changed.set()
            self.counters.connects += 1
            if self.on_connected is not None:
                self.on_connected(device_id)

    def _closed(self, client: MqttClient, reason: TransportError | None) -> None:
        link = self._links.get(client.client_id)
        if link is None or link.client is not client:
            return
        self._connected -= 1
        self._changed.set()
        if reason is not None and link.wanted and not link.queued:
            self.counters.lost += 1
            self.counters.last_error = str(reason)
            link.queued = True
            wait = self.backoff[0] * (0.5 + self._rng.random())  # spread a broker restart's reconnects
            asyncio.get_running_loop().call_later(wait, self._queue.put_nowait, link.device_id)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        step = max(1.0, min(5.0, self.keepalive / 4))
        while True:
            await asyncio.sleep(step)
            now = loop.time()
            for link in list(self._links.values()):
                if link.client is not None:
                    link.client.keepalive(now)
