"""One simulated device: what it sends at each moment, how it answers commands, its state and description.

The model is pure and deterministic: every method takes the simulated time ``now`` (epoch seconds), it never
reads a clock, and its randomness comes from its own ``random.Random`` seeded from (fleet seed, device id). The
runtime asks ``first_tick_at`` once, then calls ``tick`` at each ``Tick.next_at`` it is given (passing that
time as ``now``), and does all the I/O: publishing the returned messages on ``devices/{id}/<topic_suffix>``
(``Message.topic``), dropping or renewing the connection as ``Tick.connection`` says.

What a template shares (generators, faults, commands, attributes) lives once in a ``DeviceKind``; a device
holds only its id, random source, a few numbers and the state slots of its generators.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import orjson

from device_sim import codecs
from device_sim.actuators import ActuatorState, Command
from device_sim.errors import CommandRejected
from device_sim.faults import ENCODING_FAULTS, FaultPlan, FaultState
from device_sim.fleet import DeviceTemplate
from fieldline.wire import Topics

MessageKind = Literal["telemetry", "state", "command_ack", "discovery"]


@dataclass(slots=True)
class Message:
    """Something a device publishes. ``topic`` is the full topic (``devices/{id}/<topic_suffix>``, or
    ``discovery/response/{id}``); ``content_format`` is the CoAP Content-Format of a telemetry payload; ``fault``
    names the faults that shaped it (``outlier``, ``truncated_json+duplicate``), None for a good message."""

    kind: MessageKind
    topic_suffix: str
    payload: bytes
    retain: bool = False
    fault: str | None = None
    topic: str = ""
    content_format: int | None = None


class Connection(Enum):
    """What the runtime does with the device's connection at a tick."""

    KEEP = "keep"
    DROP = "drop"  # abrupt: no DISCONNECT, the broker publishes the last will; back at ``offline_until``
    RECONNECT = "reconnect"  # a storm: disconnect and connect again at once


@dataclass(slots=True)
class Tick:
    messages: list[Message]
    next_at: float
    connection: Connection = Connection.KEEP
    offline_until: float | None = None


@dataclass(slots=True)
class DeviceCounters:
    """What the model produced: ``readings`` taken, messages ``sent`` (duplicates included), ``faults`` by
    type, ``commands`` by outcome (``ok``, ``duplicate``, ``malformed`` and the rejection codes)."""

    readings: int = 0
    sent: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


class DeviceKind:
    """The compiled, shared part of a device template."""

    __slots__ = (
        "attributes",
        "commands",
        "content_format",
        "faults",
        "generators",
        "names",
        "numeric",
        "order",
        "slots",
        "state_size",
        "template",
        "units",
    )

    def __init__(self, template: DeviceTemplate) -> None:
        self.template = template
        self.names = list(template.metrics)
        self.generators = dict(template.metrics)
        slots: dict[str, int] = {}
        spreads: dict[str, int | None] = {}
        size = 0
        for name, generator in self.generators.items():
            slots[name] = size
            size += generator.width()
            spreads[name] = size if generator.spread else None
            size += 1 if generator.spread else 0
        self.state_size = size
        self.slots = [(name, slots[name], spreads[name]) for name in self.names]
        self.order = [
            (name, self.generators[name], slots[name], spreads[name]) for name in template.evaluation_order()
        ]
        self.units = {name: g.unit for name, g in self.generators.items() if g.unit is not None}
        self.numeric = [name for name, g in self.generators.items() if g.kind() == "number"]
        self.faults = FaultPlan(list(template.faults)) if template.faults else None
        self.commands: dict[str, Command] = dict(template.commands)
        self.attributes = {"type": template.type, **template.attributes}
        self.content_format = codecs.CONTENT_FORMATS[template.codec]


class DeviceModel:
    """A simulated device; see the module docstring for how the runtime drives it."""

    __slots__ = (
        "_actuators",
        "_faults",
        "_last_reading",
        "_next_reading",
        "_offline_until",
        "_phase",
        "_start",
        "counters",
        "device_id",
        "kind",
        "rng",
        "state",
    )

    def __init__(self, kind: DeviceKind, device_id: str, rng: random.Random) -> None:
        self.kind = kind
        self.device_id = device_id
        self.rng = rng
        self.counters = DeviceCounters()
        self.state: list[Any] = [None] * kind.state_size
        generators = kind.generators
        for name, slot, spread_slot in kind.slots:
            generator = generators[name]
            generator.init(self, slot)
            if spread_slot is not None:
                self.state[spread_slot] = rng.uniform(-generator.spread, generator.spread)
        self._phase = rng.uniform(0.0, kind.template.interval)
        self._faults = FaultState(len(kind.faults.faults)) if kind.faults is not None else None
        self._actuators: ActuatorState | None = None
        self._start: float | None = None
        self._next_reading = 0.0
        self._last_reading: float | None = None
        self._offline_until: float | None = None

    @property
    def transport(self) -> Literal["mqtt", "coap"]:
        return self.kind.template.transport

    @property
    def codec(self) -> Literal["json", "cbor", "senml", "senml_cbor"]:
        return self.kind.template.codec

    @property
    def qos(self) -> int:
        return self.kind.template.qos

    @property
    def device_type(self) -> str:
        return self.kind.template.type

    def __repr__(self) -> str:
        return f"DeviceModel({self.device_id!r}, {self.device_type!r})"

    # ------------------------------------------------------------------ schedule

    def first_tick_at(self, start: float) -> float:
        """The run starts at ``start``: the device's first reading comes within one interval of it (each device at
        its own phase, so a fleet does not publish in bursts)."""
        self._start = start
        self._next_reading = start + self._phase
        if self.kind.faults is not None and self._faults is not None:
            self.kind.faults.begin(self._faults, start)
        return self._next_at()

    def _next_at(self) -> float:
        plan, state = self.kind.faults, self._faults
        if plan is None or state is None or not plan.connection or self._start is None:
            return self._next_reading
        event = plan.next_connection_event(state, self._start)
        return self._next_reading if event is None else min(event, self._next_reading)

    def tick(self, now: float) -> Tick:
        """What the device does at ``now`` (a time it was given as ``next_at``)."""
        if self._start is None:
            self.first_tick_at(now)
        start = self._start
        assert start is not None
        plan, fstate = self.kind.faults, self._faults
        connection = Connection.KEEP
        if plan is not None and fstate is not None and plan.connection:
            offline = self._offline_until is not None and now < self._offline_until
            for fault in plan.due_connection(fstate, start, now):
                if offline:
                    continue
                _bump(self.counters.faults, fault.type)
                if fault.type == "dropout":
                    return self._drop(now, fault.offline)
                connection = Connection.RECONNECT
        messages: list[Message] = []
        if now >= self._next_reading:
            template = self.kind.template
            jitter = self.rng.uniform(-template.jitter, template.jitter) if template.jitter else 0.0
            self._next_reading = now + template.interval + jitter
            if plan is not None:
                for _, fault in plan.connection:
                    if fault.probability is not None and self.rng.random() < fault.probability:
                        _bump(self.counters.faults, fault.type)
                        return self._drop(now, fault.offline)
            messages = self._reading(now, start)
        return Tick(messages, self._next_at(), connection)

    def _drop(self, now: float, offline: float) -> Tick:
        back = now + offline
        self._offline_until = back
        self._next_reading = max(self._next_reading, back)
        return Tick([], self._next_at(), Connection.DROP, back)

    # ------------------------------------------------------------------ readings

    def _reading(self, now: float, start: float) -> list[Message]:
        kind = self.kind
        t = now - start
        dt = 0.0 if self._last_reading is None else now - self._last_reading
        self._last_reading = now
        values: dict[str, Any] = {}
        actuators = self._actuators
        state = self.state
        for name, generator, slot, spread_slot in kind.order:
            value = generator.sample(self, slot, now, t, dt, values)
            if spread_slot is not None:
                value += state[spread_slot]
            values[name] = value if actuators is None else actuators.apply(name, value, now)
        if actuators is not None:
            actuators.finish(now)
        generators = kind.generators
        metrics = {name: generators[name].finish(values[name]) for name in kind.names}
        skew = kind.template.clock_skew
        ts = round(now + skew.offset + t * skew.drift_ppm * 1e-6, 3)
        self.counters.readings += 1
        if kind.faults is None:
            payload = codecs.encode(kind.template.codec, self.device_id, ts, metrics, kind.units)
            self.counters.sent += 1
            return [self._telemetry(payload, None, kind.content_format)]
        return self._faulty_reading(now, start, ts, metrics)

    def _telemetry(self, payload: bytes, fault: str | None, content_format: int) -> Message:
        return Message(
            "telemetry",
            "telemetry",
            payload,
            False,
            fault,
            Topics.device_telemetry(self.device_id),
            content_format,
        )

    def _faulty_reading(self, now: float, start: float, ts: float, metrics: dict[str, Any]) -> list[Message]:
        kind, rng, state = self.kind, self.rng, self._faults
        plan = kind.faults
        assert plan is not None
        assert state is not None
        applied: list[str] = []
        if state.stuck_values is not None:  # an episode in progress: labelled, counted once when it began
            if state.stuck_readings > 0 or now < state.stuck_until:
                metrics.update(state.stuck_values)
                state.stuck_readings -= 1
                applied.append("stuck")
            else:
                state.stuck_values = None
        encoding: Any = None
        duplicate = False
        for index, fault in plan.reading:
            if not plan.fires(index, fault, state, rng, start, now):
                continue
            kind_name = fault.type
            if kind_name in ENCODING_FAULTS:
                if encoding is not None:
                    continue
                encoding = fault
            elif kind_name == "duplicate":
                duplicate = True
            elif kind_name == "out_of_order":
                ts = round(ts - fault.lag, 3)
            elif not self._value_fault(fault, metrics, now, state):
                continue
            if kind_name not in applied:
                applied.append(kind_name)
            _bump(self.counters.faults, kind_name)
        codec = kind.template.codec
        content_format = kind.content_format
        if encoding is None:
            payload = codecs.encode(codec, self.device_id, ts, metrics, kind.units)
        elif encoding.type == "truncated_json":
            payload, content_format = codecs.truncated_json(ts, metrics, rng), codecs.JSON_FORMAT
        elif encoding.type == "invalid_cbor":
            payload, content_format = codecs.invalid_cbor(ts, metrics, rng), codecs.CBOR_FORMAT
        elif encoding.type == "oversize":
            payload = codecs.oversize(codec, self.device_id, ts, metrics, encoding.size, kind.units)
        else:
            name = self._pick(encoding.metrics, list(metrics))
            payload = codecs.wrong_type(codec, self.device_id, ts, metrics, name, kind.units)
        if duplicate:  # the copy is labelled duplicate alone, so labels count each fault once
            original = "+".join(a for a in applied if a != "duplicate") or None
            messages = [
                self._telemetry(payload, original, content_format),
                self._telemetry(payload, "duplicate", content_format),
            ]
        else:
            messages = [self._telemetry(payload, "+".join(applied) or None, content_format)]
        self.counters.sent += len(messages)
        return messages

    def _pick(self, chosen: list[str], eligible: list[str]) -> str:
        return chosen[0] if len(chosen) == 1 else self.rng.choice(chosen or eligible)

    def _value_fault(self, fault: Any, metrics: dict[str, Any], now: float, state: FaultState) -> bool:
        """Apply an outlier, null or stuck fault to ``metrics``; False when no metric can take it."""
        kind = self.kind
        if fault.type == "outlier":
            eligible = [n for n in kind.numeric if isinstance(metrics.get(n), int | float)]
            names = [n for n in fault.metrics if n in eligible] if fault.metrics else eligible[:]
            if not names:
                return False
            if not fault.metrics:
                names = [self.rng.choice(names)]
            for name in names:
                sign = 1 if self.rng.random() < 0.5 else -1
                metrics[name] = kind.generators[name].finish(float(metrics[name]) + sign * fault.magnitude)
            return True
        names = list(fault.metrics) if fault.metrics else [self.rng.choice(kind.names)]
        if fault.type == "null":
            for name in names:
                metrics[name] = None
            return True
        # stuck: these metrics keep their current value for a number of readings or a while
        frozen = {name: metrics[name] for name in names}
        if state.stuck_values is not None:
            frozen = {**state.stuck_values, **frozen}
        state.stuck_values = frozen
        if fault.readings is not None:
            state.stuck_readings, state.stuck_until = fault.readings - 1, 0.0
        else:
            state.stuck_readings, state.stuck_until = 0, now + fault.duration
        return True

    # ------------------------------------------------------------------ commands

    def on_command(self, payload: bytes, now: float) -> Message | None:
        """Run a command received on ``devices/{id}/commands`` and return the acknowledgement to publish on
        ``commands/ack``: ``{"id", "status": "ok", "result"}`` or ``{"id", "status": "error", "error", "code"}``.
        A command id already answered gets the same answer again without running twice. A payload without an
        id cannot be answered: None (counted as ``malformed``)."""
        counts = self.counters.commands
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = None
        command_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(command_id, str) or not command_id:
            _bump(counts, "malformed")
            return None
        assert isinstance(data, dict)
        if self._actuators is None:
            self._actuators = ActuatorState()
        actuators = self._actuators
        answer = actuators.recent.get(command_id)
        if answer is not None:
            _bump(counts, "duplicate")
            return self._ack(answer)
        name = data.get("name")
        try:
            case, params = self._check_command(data, name, now)
        except CommandRejected as exc:
            _bump(counts, exc.code)
            reply: dict[str, Any] = {"id": command_id, "status": "error", "error": str(exc), "code": exc.code}
        else:
            actuators.advance(now)
            assert isinstance(name, str)
            if case is None:
                actuators.active.pop(name, None)
            else:
                actuators.active[name] = (case, params)
            _bump(counts, "ok")
            reply = {"id": command_id, "status": "ok", "result": {"command": name, "params": params}}
        answer = codecs.dump_json(reply)
        actuators.remember(command_id, answer)
        return self._ack(answer)

    def _check_command(self, data: dict[str, Any], name: Any, now: float) -> tuple[Any, dict[str, Any]]:
        device_id = self.device_id
        if not isinstance(name, str):
            raise CommandRejected("malformed", "name must be a string", device_id=device_id)
        expires_at = data.get("expires_at")
        if expires_at is not None:
            if type(expires_at) not in (int, float):
                raise CommandRejected(
                    "malformed", "expires_at must be a number", device_id=device_id, command=name
                )
            if now > expires_at:
                raise CommandRejected(
                    "expired",
                    f"{name} expired {now - expires_at:.3f}s before it arrived",
                    device_id=device_id,
                    command=name,
                )
        command = self.kind.commands.get(name)
        if command is None:
            accepted = ", ".join(self.kind.commands) or "none"
            raise CommandRejected(
                "unknown_command",
                f"unknown command {name!r} (accepted: {accepted})",
                device_id=device_id,
                command=name,
            )
        return command.check(name, data.get("params", {}), device_id)

    def _ack(self, payload: bytes) -> Message:
        return Message(
            "command_ack", "commands/ack", payload, False, None, Topics.device_command_ack(self.device_id)
        )

    # ------------------------------------------------------------------ state and discovery

    def state_message(self, online: bool, now: float) -> Message:
        """The retained state: ``{"state": "online"|"offline", "attributes": {...}, "ts"}``."""
        body = {
            "state": "online" if online else "offline",
            "attributes": self.kind.attributes,
            "ts": round(now, 3),
        }
        return Message(
            "state", "state", codecs.dump_json(body), True, None, Topics.device_state(self.device_id)
        )

    def will_message(self) -> Message:
        """The last will the runtime registers at CONNECT: the offline state, without a time."""
        body = {"state": "offline", "attributes": self.kind.attributes}
        return Message(
            "state", "state", codecs.dump_json(body), True, None, Topics.device_state(self.device_id)
        )

    def discovery_message(self, now: float) -> Message:
        """The answer to ``discovery/request``, on ``discovery/response/{id}``: the device's description."""
        kind = self.kind
        template = kind.template
        attributes = kind.attributes
        body = {
            "id": self.device_id,
            "type": template.type,
            "transport": template.transport,
            "codec": template.codec,
            "interval": template.interval,
            "firmware": attributes.get("firmware", attributes.get("fw")),
            "attributes": attributes,
            "metrics": {name: {"kind": g.kind(), "unit": g.unit} for name, g in kind.generators.items()},
            "commands": {
                name: {
                    "params": {p: param.model_dump(exclude_none=True) for p, param in command.params.items()}
                }
                for name, command in kind.commands.items()
            },
            "ts": round(now, 3),
        }
        return Message(
            "discovery",
            "discovery/response",
            codecs.dump_json(body),
            False,
            None,
            discovery_topic(self.device_id),
        )


DISCOVERY_REQUEST = "discovery/request"


def discovery_topic(device_id: str) -> str:
    """Where a device answers a discovery request."""
    return f"discovery/response/{device_id}"
