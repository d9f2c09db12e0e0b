"""Load mode: a fleet's telemetry at a target aggregate rate, many devices multiplexed over few connections.

What is measured and how (docs/simulator.md has the prose):

- Payloads are computed before the clock starts: each MQTT device of the fleet plays ``payloads_per_device`` ticks
  of its model (faults included), and each connection gets one flat list of ready PUBLISH packets, devices
  interleaved round-robin. Sending is slicing that list and writing the slice in one ``write``: the generator
  is never the bottleneck.
- Pacing is a token bucket over the monotonic clock: tokens accrue at ``rate`` per second up to ``burst_seconds``
  worth (a short stall of the loop is caught up, a longer one is not); a turn sends as many whole tokens as
  there are, spread over the connections, then sleeps until the next token. When the broker pushes back (a
  connection's unsent buffer is full, or at QoS 1 its receive window: Mosquitto allows 20 unacknowledged
  publishes per connection by default), the pacer waits, the bucket overflows and the achieved rate falls short
  of the target, which the report shows.
- ``acknowledged`` counts PUBACKs (QoS 1); ``ack_latency_ms`` is publish-to-PUBACK.
- With ``measure``, a subscriber in this process receives the same topics from the same broker: ``received``,
  its rate, and ``latency_ms`` from publish to arrival for one message in ``sample_every`` (a sampled
  (topic, payload) is remembered with its send time and matched on arrival). It shares this process's CPU.

Dropouts, reconnect storms, state messages and commands belong to live mode (``runner.py``); CoAP devices of the
fleet are not played here (the report counts them as ``skipped_coap_devices``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from device_sim.errors import TransportError
from device_sim.fleet import Fleet
from device_sim.mqtt_client import InboundMessage, MqttClient
from device_sim.mqtt_transport import Broker, DeviceLinks
from device_sim.population import build_devices
from device_sim.progress import Progress
from fieldline.mqtt_packets import publish_packet, varint

WRITE_BUFFER = 4 << 20
"""Bytes a load connection may hold unsent before it waits for the broker (asyncio's default is 64 KiB)."""


@dataclass(frozen=True)
class LoadOptions:
    rate: float
    """Target messages per second, all connections together."""
    duration: float
    connections: int | None = None
    """None: as the fleet's ``devices_per_connection`` groups its devices."""
    qos: int | None = None
    """None: each template's ``qos`` (the highest of a connection's devices)."""
    seed: int | None = None
    measure: bool = False
    payloads_per_device: int = 4
    burst_seconds: float = 0.5
    sample_every: int = 97


@dataclass
class _Stream:
    """One connection's ready packets: QoS 0 packets whole; QoS 1 ones as (head, tail) around the packet id."""

    link_id: str
    qos: int
    packets: list[bytes] = field(default_factory=list)
    split: list[tuple[bytes, bytes]] = field(default_factory=list)
    keys: list[tuple[str, bytes]] = field(default_factory=list)
    position: int = 0

    def __len__(self) -> int:
        return len(self.packets) if self.qos == 0 else len(self.split)


@dataclass
class LoadReport:
    target_rate: float
    duration_s: float
    qos: list[int]
    connections: int
    devices: int
    skipped_coap_devices: int = 0
    sent: int = 0
    acknowledged: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    ack_latency_ms: dict[str, float] | None = None
    received: int | None = None
    receive_rate: float | None = None
    latency_ms: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of ``samples`` (seconds) in milliseconds, with the sample count."""
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 3)

    return {"count": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


class LoadRun:
    """One load run; build it, then ``await run()`` for the report."""

    def __init__(self, fleet: Fleet, broker: Broker, options: LoadOptions, *, progress: bool = True) -> None:
        self.fleet = fleet
        self.broker = broker
        self.options = options
        self.show_progress = progress
        self.sent = 0
        self.acknowledged = 0
        self.ack_samples: list[float] = []
        self.latency_samples: list[float] = []
        self.pending: dict[tuple[str, bytes], float] = {}
        self.received = 0
        self.first_received = 0.0
        self.last_received = 0.0
        self.errors: dict[str, int] = {}
        self.streams: list[_Stream] = []
        self.devices = 0
        self.skipped = 0

    # ------------------------------------------------------------------ preparation

    def prepare(self) -> None:
        """Play every MQTT device's first ticks and lay the packets out per connection."""
        opts = self.options
        models = build_devices(self.fleet, seed=opts.seed)
        mqtt = [m for m in models if m.transport == "mqtt"]
        self.skipped = len(models) - len(mqtt)
        self.devices = len(mqtt)
        if not mqtt:
            raise ValueError("the fleet has no MQTT device to play in load mode")
        per_connection = {d: t.devices_per_connection for t in self.fleet.devices for d in t.device_ids()}
        if opts.connections is not None:
            count = max(1, min(opts.connections, len(mqtt)))
            groups: list[list[Any]] = [mqtt[i::count] for i in range(count)]
        else:
            groups, current = [], []
            for model in mqtt:
                current.append(model)
                if len(current) >= per_connection[model.device_id]:
                    groups.append(current)
                    current = []
            if current:
                groups.append(current)
        start = time.time()
        tag = f"{os.getpid()}"
        for index, group in enumerate(groups):
            qos = opts.qos if opts.qos is not None else max(m.qos for m in group)
            stream = _Stream(f"fl-sim-load-{tag}-{index}", qos)
            plays = [self._play(model, start) for model in group]
            for round_ in range(max(len(p) for p in plays)):
                for played in plays:
                    if round_ < len(played):
                        self._add(stream, *played[round_])
            self.streams.append(stream)

    def _play(self, model: Any, start: float) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        now = model.first_tick_at(start)
        for _ in range(self.options.payloads_per_device):
            tick = model.tick(now)
            out.extend(
                (f"devices/{model.device_id}/{m.topic_suffix}", m.payload)
                for m in tick.messages
                if m.kind == "telemetry"
            )
            now = tick.next_at
        return out

    @staticmethod
    def _add(stream: _Stream, topic: str, payload: bytes) -> None:
        stream.keys.append((topic, payload))
        if stream.qos == 0:
            stream.packets.append(publish_packet(topic, payload))
            return
        topic_bytes = topic.encode()
        body_length = 2 + len(topic_bytes) + 2 + 1 + len(payload)
        head = b"\x32" + varint(body_length) + len(topic_bytes).to_bytes(2, "big") + topic_bytes
        stream.split.append((head, b"\x00" + payload))

    # ------------------------------------------------------------------ the run

    async def run(self) -> LoadReport:
        if not self.streams:
            self.prepare()
        opts = self.options
        links = DeviceLinks(self.broker, concurrency=min(64, len(self.streams)))
        async with links:
            for stream in self.streams:
                links.add(stream.link_id, will=None, subscriptions=[])
            async with asyncio.timeout(60):
                await links.wait_connected(len(self.streams))
            measurer = await self._measurer() if opts.measure else None
            try:
                async with Progress(
                    "fieldline sim load", self._snapshot, rates=("sent",), enabled=self.show_progress
                ):
                    elapsed = await self._pace(links)
                    await self._settle(links)
            finally:
                if measurer is not None:
                    await measurer.disconnect()
        return self._report(elapsed, links)

    async def _pace(self, links: DeviceLinks) -> float:
        opts = self.options
        capacity = max(1.0, opts.rate * opts.burst_seconds)
        tokens, started = 0.0, time.monotonic()
        last, end = started, started + opts.duration
        turn = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            tokens = min(capacity, tokens + (now - last) * opts.rate)
            last = now
            whole = int(tokens)
            if whole < 1:
                await asyncio.sleep((1 - tokens) / opts.rate)
                continue
            tokens -= whole
            share, extra = divmod(whole, len(self.streams))
            sent_now, blocked = 0, None
            for i, stream in enumerate(self.streams):
                n = share + (1 if (i - turn) % len(self.streams) < extra else 0)
                if not n:
                    continue
                client = links.client(stream.link_id)
                if client is None:
                    self._error("not_connected", n)
                    continue
                if client.on_ack is None:  # a new connection (the first, or after a reconnection)
                    client.on_ack = self._acked
                    client.set_write_buffer(WRITE_BUFFER)
                if not client.writable.is_set():
                    # the broker reads slower than we write: wait (tokens past the bucket's size are lost)
                    await client.writable.wait()
                if stream.qos:
                    room = client.receive_maximum - len(client.inflight)
                    if room < n:  # the broker's receive window is full: these wait for the next turn
                        tokens += n - max(room, 0)
                        n = max(room, 0)
                        blocked = client
                if n:
                    self._send(client, stream, n)
                    sent_now += n
            turn += extra
            if not sent_now and blocked is not None:
                with contextlib.suppress(TransportError):  # lost: the next turn counts it as not connected
                    await blocked.wait_window()  # every window is full: wait for a PUBACK, not in a busy loop
            else:
                await asyncio.sleep(0)  # let PUBACKs and the subscriber in
        return time.monotonic() - started

    def _send(self, client: MqttClient, stream: _Stream, n: int) -> None:
        size = len(stream)
        pos = stream.position
        indices = [(pos + k) % size for k in range(n)] if pos + n > size else range(pos, pos + n)
        if self.options.measure:
            step = self.options.sample_every
            sent_at = time.perf_counter()
            for k in range((-self.sent) % step, n, step):
                key = stream.keys[indices[k]]
                self.pending.setdefault(key, sent_at)
        if stream.qos == 0:
            if isinstance(indices, range):
                client.write(b"".join(stream.packets[pos : pos + n]))
            else:
                packets = stream.packets
                client.write(b"".join([packets[i] for i in indices]))
        else:
            parts = []
            split = stream.split
            for i in indices:
                head, tail = split[i]
                parts.append(head + client.next_id().to_bytes(2, "big") + tail)
            client.write(b"".join(parts))
        stream.position = (pos + n) % size
        self.sent += n

    def _acked(self, sent: float) -> None:
        self.acknowledged += 1
        if len(self.ack_samples) < 200_000:
            self.ack_samples.append(asyncio.get_running_loop().time() - sent)

    def _error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n

    async def _settle(self, links: DeviceLinks, within: float = 10.0) -> None:
        """After the last publish: wait for the PUBACKs and (with ``measure``) for the subscriber to catch up."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            clients = [links.client(s.link_id) for s in self.streams]
            waiting_acks = any(c is not None and c.inflight for c in clients)
            waiting_sub = self.options.measure and self.received < self.sent
            if not waiting_acks and not waiting_sub:
                return
            await asyncio.sleep(0.05)

    async def _measurer(self) -> MqttClient:
        client = MqttClient(
            self.broker.host,
            self.broker.port,
            f"fl-sim-measure-{os.getpid()}",
            tls=self.broker.tls,
            on_message=self._arrived,
        )
        await client.connect()
        suffixes = {topic.split("/", 2)[2] for s in self.streams for topic, _ in s.keys[:50]}
        await client.subscribe([(f"devices/+/{suffix}", 0) for suffix in sorted(suffixes)])
        return client

    def _arrived(self, message: InboundMessage) -> None:
        now = time.perf_counter()
        self.received += 1
        if self.received == 1:
            self.first_received = now
        self.last_received = now
        if self.pending:
            sent = self.pending.pop((message.topic, message.payload), None)
            if sent is not None:
                self.latency_samples.append(now - sent)

    def _snapshot(self) -> dict[str, int | float | str]:
        figures: dict[str, int | float | str] = {"sent": self.sent, "errors": sum(self.errors.values())}
        if self.options.measure:
            figures["received"] = self.received
        return figures

    def _report(self, elapsed: float, links: DeviceLinks) -> LoadReport:
        opts = self.options
        errors = dict(self.errors)
        if links.counters.lost:
            errors["connections_lost"] = links.counters.lost
        if links.counters.failures:
            errors["connect_failures"] = links.counters.failures
        report = LoadReport(
            target_rate=opts.rate,
            duration_s=round(elapsed, 3),
            qos=sorted({s.qos for s in self.streams}),
            connections=len(self.streams),
            devices=self.devices,
            skipped_coap_devices=self.skipped,
            sent=self.sent,
            acknowledged=self.acknowledged,
            errors=errors,
            achieved_rate=round(self.sent / elapsed, 1) if elapsed else 0.0,
        )
        if any(s.qos for s in self.streams):
            report.ack_latency_ms = percentiles(self.ack_samples)
        if opts.measure:
            span = self.last_received - self.first_received
            report.received = self.received
            report.receive_rate = round(self.received / span, 1) if span > 0 else 0.0
            report.latency_ms = percentiles(self.latency_samples)
        return report
