"""Live mode: a fleet's devices on their own connections, on a simulated clock.

The runtime owns the clock: simulated time is ``start + elapsed_real * speed``. One task runs the scheduler, a heap
of ``(simulated time, device)``; it sleeps until the next entry is due (or a stop is asked), then asks that
device's model for its tick, publishes the tick's messages and carries out its connection change:

- ``DROP``: the connection is aborted without DISCONNECT, so the broker publishes the device's last will (its
  retained offline state); the device is connected again at ``offline_until`` (a heap entry of its own).
- ``RECONNECT``: abort and reconnect at once; many devices doing it together make a reconnect storm, which the
  transport's bounded connect waves absorb.

Each tick runs at its scheduled simulated time (not the time the task happened to wake), so with a fixed seed the
messages and faults the models produce do not depend on scheduling. What reaches the broker can still differ: a
device that is not connected when its tick is due (still reconnecting after a dropout) does not publish, and
the summary counts those messages as ``unsent``. A device on its way to a connection (at the start, back from a
dropout, in a storm, after a broker restart) keeps up to ``BUFFERED`` messages and sends them once connected,
as a device with a small buffer would; beyond that, and while it is offline on purpose, messages are unsent.

Commands (``devices/{id}/commands``) and discovery requests (``discovery/request``) are answered from the
transport's receive callback, at the current simulated time: ``on_command``'s acknowledgement on
``devices/{id}/commands/ack``, the description on ``discovery/response/{id}``. On stop (duration reached, or
:meth:`LiveRun.stop` from a signal) every connected device publishes its offline state and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from device_sim.coap_transport import CoapSender
from device_sim.device import DISCOVERY_REQUEST, Connection, DeviceModel, Message
from device_sim.fleet import Fleet
from device_sim.mqtt_client import InboundMessage, Will
from device_sim.mqtt_transport import Broker, DeviceLinks
from device_sim.population import build_devices
from device_sim.progress import Progress
from fieldline.wire import Topics

_TICK, _RECONNECT = 0, 1
BUFFERED = 32


@dataclass(frozen=True)
class RunOptions:
    broker: str | None = None
    """``mqtt://host:port``; required when the fleet has MQTT devices (the fleet file's ``broker`` otherwise)."""
    coap: str | None = None
    duration: float | None = None
    """Simulated seconds to play; None runs until :meth:`LiveRun.stop`."""
    speed: float = 1.0
    seed: int | None = None
    start: float | None = None
    """Simulated epoch time at the start (default: now)."""
    connect_within: float = 60.0
    """How long to wait for every MQTT device's first connection before the clock starts anyway."""
    concurrency: int = 64
    progress: bool = True


@dataclass
class RunStats:
    produced: Counter[str] = field(default_factory=Counter)
    """Messages the models produced, by kind (deterministic for a seed)."""
    published: int = 0
    unsent: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    acks: Counter[str] = field(default_factory=Counter)
    discovery_answers: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": dict(self.produced),
            "published": self.published,
            "unsent": self.unsent,
            "faults": dict(sorted(self.faults.items())),
            "commands": self.commands,
            "acks": dict(self.acks),
            "discovery_answers": self.discovery_answers,
        }


class LiveRun:
    """One live run of a fleet: ``summary = await LiveRun(fleet, options).run()``."""

    def __init__(self, fleet: Fleet, options: RunOptions) -> None:
        self.fleet = fleet
        self.options = options
        self.models: dict[str, DeviceModel] = {
            m.device_id: m for m in build_devices(fleet, seed=options.seed)
        }
        self.mqtt = [m for m in self.models.values() if m.transport == "mqtt"]
        self.coap = [m for m in self.models.values() if m.transport == "coap"]
        broker = options.broker or fleet.broker
        if self.mqtt and not broker:
            raise ValueError(
                "the fleet has MQTT devices: give a broker (--broker or the fleet file's broker:)"
            )
        coap = options.coap or fleet.coap
        if self.coap and not coap:
            raise ValueError(
                "the fleet has CoAP devices: give an endpoint (--coap or the fleet file's coap:)"
            )
        self.broker = Broker.parse(broker) if broker else None
        self.stats = RunStats()
        self.links = (
            DeviceLinks(
                self.broker,
                on_message=self._received,
                on_connected=self._connected,
                concurrency=options.concurrency,
            )
            if self.broker and self.mqtt
            else None
        )
        self.sender = CoapSender(coap) if self.coap and coap else None
        self._buffers: dict[str, list[Message]] = {}
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._start = 0.0
        self._real_elapsed = 0.0
        self._connect_seconds = 0.0
        self._connected_at_end = 0

    # ------------------------------------------------------------------ clock and control

    def now(self) -> float:
        """Current simulated time."""
        return self._start + (time.monotonic() - self._t0) * self.options.speed

    def stop(self) -> None:
        """Ask the run to end (safe from a signal handler on the loop)."""
        self._stop.set()

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        """Play the fleet until the duration is reached or :meth:`stop`; returns the summary."""
        self._start = self.options.start if self.options.start is not None else time.time()
        self._t0 = time.monotonic()
        links, sender = self.links, self.sender
        async with contextlib.AsyncExitStack() as stack:
            if sender is not None:
                await stack.enter_async_context(sender)
            if links is not None:
                await stack.enter_async_context(links)
            await stack.enter_async_context(
                Progress(
                    "fieldline sim run", self._snapshot, rates=("published",), enabled=self.options.progress
                )
            )
            if links is not None:
                await self._connect_all(links)
            self._start = self.options.start if self.options.start is not None else time.time()
            self._t0 = time.monotonic()
            await self._schedule()
            self._real_elapsed = time.monotonic() - self._t0
            if links is not None:
                self._connected_at_end = links.connected
                self._say_goodbye(links)
        return self.summary()

    async def _connect_all(self, links: DeviceLinks) -> None:
        started = time.monotonic()
        for model in self.mqtt:
            will = model.will_message()
            links.add(
                model.device_id,
                will=Will(will.topic, will.payload, 1, will.retain),
                subscriptions=[(Topics.device_commands(model.device_id), 1), (DISCOVERY_REQUEST, 0)],
            )
        try:
            async with asyncio.timeout(self.options.connect_within):
                await links.wait_connected(len(self.mqtt))
        except TimeoutError:
            pass  # the summary shows how many connected; the rest keep trying in the background
        self._connect_seconds = time.monotonic() - started

    async def _schedule(self) -> None:
        opts = self.options
        end = self._start + opts.duration if opts.duration is not None else float("inf")
        heap: list[tuple[float, int, int, str]] = []
        seq = 0
        for model in self.models.values():
            heap.append((model.first_tick_at(self._start), seq, _TICK, model.device_id))
            seq += 1
        heapq.heapify(heap)
        handled = 0
        while heap and not self._stop.is_set():
            at, _, kind, device_id = heap[0]
            if at > end:
                break
            delay = (at - self.now()) / opts.speed
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                    break
                except TimeoutError:
                    pass
            heapq.heappop(heap)
            seq += 1
            if kind == _RECONNECT:
                assert self.links is not None
                self.links.connect(device_id)
            else:
                followup = self._tick(self.models[device_id], at)
                for next_at, next_kind in followup:
                    heapq.heappush(heap, (next_at, seq, next_kind, device_id))
                    seq += 1
            handled += 1
            if handled % 200 == 0:
                await asyncio.sleep(0)  # a burst of due ticks still lets commands and acks through
        if not self._stop.is_set() and opts.duration is not None:
            # the last ticks are done: the run still lasts its full duration
            remaining = (end - self.now()) / opts.speed
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    def _tick(self, model: DeviceModel, at: float) -> list[tuple[float, int]]:
        tick = model.tick(at)
        for message in tick.messages:
            self._send(model, message)
        followup = [(tick.next_at, _TICK)]
        if model.transport != "mqtt" or tick.connection == Connection.KEEP:
            return followup
        assert self.links is not None
        if tick.connection == Connection.DROP:
            self.stats.faults["dropout"] += 1
            self.links.drop(model.device_id)
            if tick.offline_until is not None:
                # ahead of a tick at the same time, which then finds the device connecting and buffers
                followup.insert(0, (tick.offline_until, _RECONNECT))
        elif tick.connection == Connection.RECONNECT:
            self.stats.faults["reconnect"] += 1
            self.links.drop(model.device_id, reconnect=True)
        return followup

    def _send(self, model: DeviceModel, message: Message) -> None:
        self.stats.produced[message.kind] += 1
        if message.fault:
            self.stats.faults.update(message.fault.split("+"))
        if model.transport == "coap":
            assert self.sender is not None
            sent = message.kind == "telemetry" and self.sender.post(
                model.device_id, message.payload, message.content_format
            )
        else:
            assert self.links is not None
            sent = self.links.publish(
                model.device_id, message.topic, message.payload, model.qos, message.retain
            )
            if not sent and self.links.is_wanted(model.device_id):
                buffer = self._buffers.setdefault(model.device_id, [])
                if len(buffer) < BUFFERED:
                    buffer.append(message)
                    return
        if sent:
            self.stats.published += 1
        else:
            self.stats.unsent += 1

    # ------------------------------------------------------------------ transport callbacks

    def _connected(self, device_id: str) -> None:
        model = self.models[device_id]
        state = model.state_message(True, self.now())
        if self.links is None:
            return
        self.links.publish(device_id, state.topic, state.payload, 1, state.retain)
        for message in self._buffers.pop(device_id, []):
            if self.links.publish(device_id, message.topic, message.payload, model.qos, message.retain):
                self.stats.published += 1
            else:
                self.stats.unsent += 1

    def _received(self, device_id: str, inbound: InboundMessage) -> None:
        model = self.models[device_id]
        assert self.links is not None
        if inbound.topic == DISCOVERY_REQUEST:
            reply = model.discovery_message(self.now())
            self.stats.discovery_answers += 1
        else:
            self.stats.commands += 1
            answer = model.on_command(inbound.payload, self.now())
            if answer is None:
                return
            reply = answer
            self.stats.acks[_ack_status(answer.payload)] += 1
        self.links.publish(device_id, reply.topic, reply.payload, 1, reply.retain)

    def _say_goodbye(self, links: DeviceLinks) -> None:
        now = self.now()
        for buffer in self._buffers.values():
            self.stats.unsent += len(buffer)
        self._buffers.clear()
        for model in self.mqtt:
            if links.is_connected(model.device_id):
                state = model.state_message(False, now)
                links.publish(model.device_id, state.topic, state.payload, 1, state.retain)

    # ------------------------------------------------------------------ reporting

    def _snapshot(self) -> dict[str, int | float | str]:
        figures: dict[str, int | float | str] = {
            "sim_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.now())),
        }
        if self.links is not None:
            figures["connected"] = f"{self.links.connected}/{len(self.mqtt)}"
        figures["published"] = self.stats.published
        figures["commands"] = self.stats.commands
        figures["faults"] = sum(self.stats.faults.values())
        if self.sender is not None:
            figures["coap_2.04"] = self.sender.succeeded
        return figures

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "devices": {"mqtt": len(self.mqtt), "coap": len(self.coap)},
            "speed": self.options.speed,
            "simulated_seconds": round(self._real_elapsed * self.options.speed, 3),
            "real_seconds": round(self._real_elapsed, 3),
            **self.stats.as_dict(),
        }
        if self.links is not None:
            c = self.links.counters
            out["mqtt"] = {
                "broker": str(self.broker),
                "connect_seconds": round(self._connect_seconds, 3),
                "connected_at_end": self._connected_at_end,
                "connects": c.connects,
                "connect_failures": c.failures,
                "lost": c.lost,
                "dropped": c.dropped,
            }
            if c.last_error:
                out["mqtt"]["last_error"] = c.last_error
        if self.sender is not None:
            out["coap"] = {
                "endpoint": self.sender.base,
                "sent": self.sender.sent,
                "answers": dict(self.sender.codes),
            }
        return out


def _ack_status(payload: bytes) -> str:
    try:
        status = orjson.loads(payload).get("status")
    except (orjson.JSONDecodeError, AttributeError):
        return "unreadable"
    return status if isinstance(status, str) else "unreadable"
