"""Commands from the cloud: ``fl/{gateway}/down/commands`` → the device on the local broker → reports back up.

The uplink's connection (a persistent session: commands the cloud sent while the gateway was offline arrive when
it reconnects) hands every message on ``fl/{gateway}/down/commands`` to ``CloudCommands.receive``. A command
``{"id", "device", "name", "params", "expires_at"}`` (docs/protocol.md#commands) is:

1. validated: a malformed command is reported ``command.failed`` with the reason when it has an ``id``, else
   counted (``malformed``) and logged;
2. dropped when its ``id`` is among the last ``DUPLICATE_WINDOW`` ids received (a QoS 1 redelivery);
3. reported ``command.failed`` ``expired`` when ``expires_at`` has passed; the device gets nothing;
4. published to the device by ``DeviceCommands`` with the cloud's ``id`` (the device's idempotency key) and
   reported ``command.delivered`` once the local broker acknowledged it, then ``command.acknowledged``
   ``{id, result}``, or ``command.failed`` ``{id, error}`` when the device refuses, or does not answer, or the
   local broker cannot be reached, before the deadline: ``expires_at``, at most ``automation.command_ack_timeout``
   from now (the wait for the local broker counts).

Reports are ``EventRecord``s put in the outbox with the command's device, so they survive uplink outages and
restarts like any other record; ``on_report`` (the agent passes its automation's) sees each one too, so local
rules and workflows can react to a cloud command's outcome. The cloud broker's message is acknowledged once the command is handed to the
local broker or answered by a report; a command interrupted before that (the agent stopped or died) is delivered
again by the broker at the next connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.device_commands import DeviceCommands
from edge_agent.metrics import counter_family
from edge_agent.mqtt_link import Message
from edge_agent.pipeline.base import RecordSink
from fieldline.tasks import cancel_and_wait
from fieldline.wire import ID_PATTERN, EventRecord
from workflows import ActionError

log = logging.getLogger(__name__)

DELIVERED = "command.delivered"
ACKNOWLEDGED = "command.acknowledged"
FAILED = "command.failed"
SOURCE = "cloud"
"""The ``source`` of the report records."""
DUPLICATE_WINDOW = 10_000
"""How many recent command ids are remembered to drop redeliveries (in memory: a restart forgets them, and the
device's idempotency key covers that case)."""
MAX_IN_FLIGHT = 1_000
"""Commands forwarded and waiting for their device at once; beyond it a command is reported failed (``busy``)."""
OUTCOMES = {"Command.Nack": "refused", "Command.Timeout": "timeout", "Command.Unavailable": "unavailable"}


class CloudCommand(BaseModel):
    """One command as the cloud publishes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    device: Annotated[str, Field(strict=True, pattern=f"^{ID_PATTERN.pattern}$")]
    name: Annotated[str, Field(strict=True, min_length=1)]
    params: dict[str, Any] = {}
    expires_at: Annotated[float, Field(strict=True)]


class CloudCommands:
    """Async context manager: forwards the cloud's commands to the devices and reports what became of them.

    ``outcomes`` counts commands by how they ended: ``acknowledged``, ``refused`` (the device answered
    ``error``), ``timeout``, ``unavailable`` (local broker), ``expired``, ``malformed``, ``duplicate``, ``busy``,
    ``invalid`` (params the local client cannot encode).
    """

    def __init__(
        self,
        commands: DeviceCommands,
        sink: RecordSink,
        *,
        ack_timeout: float,
        device_types: Mapping[str, str] | None = None,
        on_report: Callable[[EventRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.commands = commands
        self.sink = sink
        self.on_report = on_report
        self.ack_timeout = ack_timeout
        self.device_types = device_types or {}
        self.clock = clock
        self.received = 0
        self.delivered = 0
        self.outcomes: Counter[str] = Counter()
        self.last_error: str | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = False

    async def __aenter__(self) -> CloudCommands:
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop taking commands and cancel those waiting for their device (the cloud expires them)."""
        self._open = False
        await cancel_and_wait(*self._tasks)

    # ------------------------------------------------------------------ receiving

    def receive(self, message: Message, ack: Callable[[Message], None]) -> None:
        """Handle one message of ``fl/{gateway}/down/commands``; ``ack`` acknowledges it to the cloud broker."""
        if not self._open:
            return  # not acknowledged: the broker delivers it again at the next connection
        self.received += 1
        try:
            command = CloudCommand.model_validate_json(message.payload)
        except ValidationError as exc:
            self._malformed(message.payload, exc)
            ack(message)
            return
        if command.id in self._seen:
            self.outcomes["duplicate"] += 1
            log.info(
                "cloud command: duplicate dropped", extra={"command": command.id, "device": command.device}
            )
            ack(message)
            return
        self._seen[command.id] = None
        if len(self._seen) > DUPLICATE_WINDOW:
            self._seen.popitem(last=False)
        if command.expires_at <= self.clock():
            self._fail(command.id, command.device, "expired", "expired")
            ack(message)
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            self._fail(command.id, command.device, f"busy: {MAX_IN_FLIGHT} commands in flight", "busy")
            ack(message)
        else:
            task = asyncio.create_task(self._forward(command, lambda: ack(message)), name=f"cmd-{command.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _malformed(self, payload: bytes, exc: ValidationError) -> None:
        reason = "malformed: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        command_id = body.get("id") if isinstance(body, dict) else None
        if isinstance(command_id, str) and command_id:
            device = body.get("device")
            device_id = device if isinstance(device, str) and ID_PATTERN.fullmatch(device) else None
            self._fail(command_id, device_id, reason, "malformed")
            return
        self.outcomes["malformed"] += 1
        self.last_error = f"command without an id dropped: {reason}"
        count = self.outcomes["malformed"]
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th ...: a flood cannot fill the log
            log.warning(
                "cloud command without an id dropped", extra={"reason": reason, "malformed_so_far": count}
            )

    # ------------------------------------------------------------------ forwarding

    async def _forward(self, command: CloudCommand, handed_off: Callable[[], None]) -> None:
        expires_at = min(command.expires_at, self.clock() + self.ack_timeout)
        # Commands queued in the session arrive right after the uplink connects, maybe before the local client.
        await self.commands.wait_connected(expires_at - self.clock())
        timeout = max(0.0, expires_at - self.clock())
        published = False

        def delivered() -> None:
            nonlocal published
            published = True
            self.delivered += 1
            self._report(command.id, command.device, DELIVERED, {})
            handed_off()

        log.info(
            "cloud command forwarded",
            extra={"command": command.id, "device": command.device, "name": command.name},
        )
        try:
            reply = await self.commands.send(
                command.device,
                command.name,
                command.params,
                command_id=command.id,
                await_ack=True,
                ack_timeout=timeout,
                expires_at=expires_at,
                on_published=delivered,
            )
        except ActionError as exc:
            if not published:
                handed_off()
            if exc.error == "Command.Nack":
                error = str(exc.details.get("error") or exc.cause)
            elif exc.error == "Command.Timeout":
                error = f"timeout: no answer from {command.device} within {timeout:.3g}s"
            else:
                error = exc.cause
            self._fail(command.id, command.device, error, OUTCOMES.get(exc.error, "invalid"))
            return
        self.outcomes["acknowledged"] += 1
        self._report(command.id, command.device, ACKNOWLEDGED, {"result": reply.get("result")})
        log.info("cloud command acknowledged", extra={"command": command.id, "device": command.device})

    # ------------------------------------------------------------------ reporting

    def _fail(self, command_id: str, device_id: str | None, error: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.last_error = f"{command_id} for {device_id}: {error}"
        self._report(command_id, device_id, FAILED, {"error": error})
        log.warning(
            "cloud command failed",
            extra={"command": command_id, "device": device_id, "outcome": outcome, "error": error},
        )

    def _report(self, command_id: str, device_id: str | None, event_type: str, data: dict[str, Any]) -> None:
        device_type = self.device_types.get(device_id) if device_id is not None else None
        record = EventRecord(
            device_id, self.clock(), event_type, {"id": command_id, **data}, SOURCE, device_type
        )
        self.sink.emit(record)
        if self.on_report is not None:
            self.on_report(record)

    # ------------------------------------------------------------------ inspection

    def health(self) -> dict[str, Any]:
        """The summary ``/healthz`` shows."""
        return {
            "received": self.received,
            "delivered": self.delivered,
            "in_flight": len(self._tasks),
            "outcomes": dict(self.outcomes),
            "local_broker_connected": self.commands.connected,
            "last_error": self.last_error,
        }

    def collect(self) -> Iterator[Metric]:
        """Prometheus families, read at scrape time through the agent's collector."""
        yield counter_family(
            "fieldline_edge_cloud_commands",
            "Commands from the cloud by outcome (acknowledged, refused, timeout, unavailable, expired, "
            "malformed, duplicate, busy, invalid).",
            ["outcome"],
            self.outcomes,
        )
        yield counter_family(
            "fieldline_edge_cloud_commands_delivered",
            "Commands from the cloud accepted by the local broker.",
            [],
            {(): self.delivered},
        )
        yield GaugeMetricFamily(
            "fieldline_edge_cloud_commands_in_flight",
            "Commands from the cloud waiting for their device.",
            value=len(self._tasks),
        )
