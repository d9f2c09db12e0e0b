"""Commands to devices and publishes on the gateway's local broker, for workflows and rules.

One ``MqttLink`` to the local broker, kept connected by one task (reconnects back off with jitter), subscribed
to every device's acknowledgements and to the ``watch`` topic filters (the ``message`` rules' and triggers'),
whose messages go to ``on_watched``. The contract (docs/edge-agent.md#automation):

- a command is published at QoS 1 on ``devices/{device_id}/commands`` as JSON
  ``{"id", "name", "params", "expires_at"}``; ``id`` is the action's idempotency key, ``expires_at`` (epoch
  seconds) the moment after which the device should ignore it;
- the device answers on ``devices/{device_id}/commands/ack`` with ``{"id", "status": "ok", "result"}`` or
  ``{"id", "status": "error", "error"}``.

Failures become ``ActionError``s that the workflow retry policies understand: ``Command.Unavailable`` (the broker
is unreachable or did not acknowledge the publish; retryable), ``Command.Timeout`` (no answer from the device
in time; retryable), ``Command.Nack`` (the device refused; not retryable), ``Command.Invalid`` (params that
cannot be encoded; not retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from edge_agent.backoff import Backoff
from edge_agent.errors import LinkError
from edge_agent.mqtt_link import Endpoint, Message, MqttLink
from fieldline.tasks import cancel_and_wait
from fieldline.wire import Topics
from workflows import ActionError
from workflows.topics import matches

log = logging.getLogger(__name__)

ACK_STATUSES = ("ok", "error")


class DeviceCommands:
    """Async context manager: ``send`` commands and ``publish`` messages on the local broker.

    ``endpoint`` None means the agent has no local broker (``southbound.mqtt.enabled: false``): every call then
    fails with ``Command.Unavailable``/``Publish.Unavailable``. ``acks`` counts answers by outcome (``ok``,
    ``error``, ``timeout``, ``invalid`` for a malformed answer, ``unmatched`` for one nobody waits for).
    """

    def __init__(
        self,
        endpoint: Endpoint | None,
        *,
        client_id: str,
        keepalive: int = 30,
        protocol: str = "5",
        watch: Sequence[str] = (),
        on_watched: Callable[[Message], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.watch = tuple(watch)
        self.on_watched = on_watched
        self.client_id = client_id
        self.keepalive = keepalive
        self.protocol = protocol
        self.clock = clock
        self.sent = 0
        self.acks: Counter[str] = Counter()
        self.last_error: str | None = None
        self._link: MqttLink | None = None
        self._up = asyncio.Event()
        self._pending: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(0.5, 30.0)

    async def __aenter__(self) -> DeviceCommands:
        if self.endpoint is not None:
            self._task = asyncio.create_task(self._run(self.endpoint), name="device-commands")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._link is not None:
            await self._link.close()
            self._link = None

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.is_connected

    async def wait_connected(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the connection to the local broker; False if it is not there."""
        if self.endpoint is not None and not self.connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._up.wait()
        return self.connected

    # ------------------------------------------------------------------ operations

    async def send(
        self,
        device_id: str,
        name: str,
        params: dict[str, Any],
        *,
        command_id: str,
        await_ack: bool,
        ack_timeout: float,
        expires_at: float | None = None,
        on_published: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Publish a command; with ``await_ack`` wait for the device's answer. ``ack_timeout`` bounds the whole
        call (the PUBACK and the answer) and sets ``expires_at`` unless given; ``on_published`` runs once the
        local broker acknowledged the publish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ack_timeout
        if expires_at is None:
            expires_at = self.clock() + ack_timeout
        try:
            body = orjson.dumps({"id": command_id, "name": name, "params": params, "expires_at": expires_at})
        except TypeError as exc:
            raise ActionError("Command.Invalid", f"params cannot be sent: {exc}", retryable=False) from None
        key = (device_id, command_id)
        answer: asyncio.Future[dict[str, Any]] | None = None
        if await_ack:  # listen before publishing: a fast device may answer before the PUBACK arrives
            answer = self._pending.setdefault(key, loop.create_future())
        try:
            await self._publish(Topics.device_commands(device_id), body, 1, False, ack_timeout, "Command")
            self.sent += 1
            if on_published is not None:
                on_published()
            if answer is None:
                return {"command_id": command_id, "status": "sent"}
            try:
                async with asyncio.timeout_at(deadline):
                    reply = await asyncio.shield(answer)
            except TimeoutError:
                self.acks["timeout"] += 1
                raise ActionError(
                    "Command.Timeout",
                    f"{device_id} did not acknowledge {name} ({command_id}) within {ack_timeout:g}s",
                    details={"device_id": device_id, "command_id": command_id},
                ) from None
        finally:
            if answer is not None and self._pending.get(key) is answer and not answer.done():
                del self._pending[key]
        if reply["status"] == "error":
            raise ActionError(
                "Command.Nack",
                f"{device_id} refused {name} ({command_id}): {reply.get('error')}",
                retryable=False,
                details={"device_id": device_id, "command_id": command_id, "error": reply.get("error")},
            )
        return reply

    async def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool, within: float) -> None:
        """Publish on the local broker; waits up to ``within`` seconds for the PUBACK at QoS 1."""
        await self._publish(topic, payload, qos, retain, within, "Publish")

    async def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, within: float, family: str
    ) -> None:
        link = self._link
        if link is None or not link.is_connected:
            where = self.endpoint or "no local broker (southbound.mqtt is disabled)"
            raise ActionError(f"{family}.Unavailable", f"{topic}: not connected to {where}")
        try:
            async with asyncio.timeout(within):
                await link.publish(topic, payload, qos, retain)
        except LinkError as exc:
            raise ActionError(f"{family}.Unavailable", f"{topic}: {exc}") from None
        except TimeoutError:
            raise ActionError(
                f"{family}.Unavailable", f"{topic}: the local broker did not acknowledge within {within:g}s"
            ) from None

    # ------------------------------------------------------------------ connection

    async def _run(self, endpoint: Endpoint) -> None:
        """Connect, subscribe to acknowledgements, and reconnect after a loss, until cancelled."""
        while True:
            link = MqttLink(
                endpoint,
                client_id=self.client_id,
                keepalive=self.keepalive,
                protocol=self.protocol,
                on_message=self._on_message,
            )
            try:
                await link.connect()
                await link.subscribe([(Topics.DEVICE_COMMAND_ACK_FILTER, 1), *((f, 1) for f in self.watch)])
            except LinkError as exc:
                self.last_error = str(exc)
                await link.close()
                delay = self._backoff.next_delay()
                log.warning(
                    "commands: local broker unreachable",
                    extra={"error": str(exc), "retry_in": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                continue
            self._link, self.last_error = link, None
            self._up.set()
            self._backoff.reset()
            assert link.closed is not None
            try:
                reason = await link.closed
                self.last_error = str(reason) if reason else None
            finally:
                self._link = None
                self._up.clear()
                await link.close()
            await asyncio.sleep(self._backoff.next_delay())

    def _on_message(self, message: Message) -> None:
        topic = message.topic
        if matches(Topics.DEVICE_COMMAND_ACK_FILTER, topic):
            self._on_ack(message)
        if self.on_watched is not None and any(matches(f, topic) for f in self.watch):
            self.on_watched(message)

    def _on_ack(self, message: Message) -> None:
        parts = message.topic.split("/")
        try:
            reply = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            reply = None
        if (
            len(parts) != 4
            or not isinstance(reply, dict)
            or not isinstance(reply.get("id"), str)
            or reply.get("status") not in ACK_STATUSES
        ):
            self.acks["invalid"] += 1
            count = self.acks["invalid"]
            if count & (count - 1) == 0:  # the 1st, 2nd, 4th ...: a chatty device cannot flood the log
                log.warning(
                    "commands: malformed acknowledgement ignored",
                    extra={"topic": message.topic, "malformed_so_far": count},
                )
            return
        future = self._pending.pop((parts[1], reply["id"]), None)
        if future is None or future.done():
            self.acks["unmatched"] += 1
            return
        self.acks[reply["status"]] += 1
        future.set_result(reply)
