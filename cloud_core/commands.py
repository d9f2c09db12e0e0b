"""Commands to devices, routed through their gateway and tracked from request to outcome.

``CommandRouter`` (the ``commands`` part) stores a command as ``pending``, then publishes it at QoS 1 on
``fl/{gateway}/down/commands`` as JSON ``{"id", "device", "name", "params", "expires_at"}`` (``expires_at`` in
epoch seconds). The gateway reports back through its event uplink: ``command.delivered`` ``{id}``,
``command.acknowledged`` ``{id, result}``, ``command.failed`` ``{id, error}``; ingest hands those to
``apply_status``. A status only moves forward (pending → delivered → acknowledged | failed), and a command
that is not final at ``expires_at`` becomes ``expired`` (one background task sleeps until the next deadline).
Late reports for a final command are stored as events but change nothing.

The row is committed before the publish, so a fast gateway's report always finds it. If the broker cannot be
reached the command is marked ``failed`` (``error`` says why) and ``send`` raises ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.broker import BrokerUnavailable, broker_client
from cloud_core.bus import EventBus
from cloud_core.db import Database
from cloud_core.metrics import CloudMetrics
from cloud_core.models import Command, CommandStatus, Device
from cloud_core.problems import Problem, not_found
from cloud_core.registry import NotFound
from cloud_core.schemas.timestamps import as_utc
from cloud_core.settings import CloudSettings
from fieldline.tasks import cancel_and_wait
from fieldline.wire import Topics

log = logging.getLogger("fieldline.cloud.commands")

DELIVERED = "command.delivered"
ACKNOWLEDGED = "command.acknowledged"
FAILED = "command.failed"
EXPIRED = "command.expired"

REPORTS = {
    DELIVERED: CommandStatus.DELIVERED,
    ACKNOWLEDGED: CommandStatus.ACKNOWLEDGED,
    FAILED: CommandStatus.FAILED,
}
RANK = {
    CommandStatus.PENDING: 0,
    CommandStatus.DELIVERED: 1,
    CommandStatus.ACKNOWLEDGED: 2,
    CommandStatus.FAILED: 2,
    CommandStatus.EXPIRED: 2,
}
OPEN = (CommandStatus.PENDING.value, CommandStatus.DELIVERED.value)
PUBLISH_TIMEOUT = 10.0
EXPIRY_RECHECK = 30.0
"""Longest sleep of the expiry task: commands another replica created (and did not expire) are caught by then."""


def utcnow() -> datetime:
    return datetime.now(UTC)


async def apply_status(session: AsyncSession, event_type: str, data: dict[str, Any], ts: datetime) -> bool:
    """Apply a gateway's ``command.*`` report; False when it is not one, names no known command, or would move
    the status backwards."""
    status = REPORTS.get(event_type)
    command_id = data.get("id")
    if status is None or not isinstance(command_id, str):
        return False
    command = await session.get(Command, command_id, with_for_update=True)
    if command is None or RANK[status] <= RANK[CommandStatus(command.status)]:
        return False
    command.status = status.value
    if status is CommandStatus.DELIVERED:
        command.delivered_at = ts
        return True
    command.completed_at = ts
    if status is CommandStatus.ACKNOWLEDGED:
        result = data.get("result")
        command.result = result if isinstance(result, dict) else {"value": result}
    else:
        command.error = str(data.get("error") or "failed")[:2000]
    return True


async def get_command(session: AsyncSession, command_id: str) -> Command:
    command = await session.get(Command, command_id)
    if command is None:
        raise not_found("command", command_id)
    return command


async def list_device_commands(
    session: AsyncSession, device_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[Command]:
    """A device's commands, newest first (by creation, then id); ``limit + 1`` rows at most."""
    query = select(Command).where(Command.device_id == device_id)
    if after is not None:
        created, command_id = after
        query = query.where(
            (Command.created_at < created) | ((Command.created_at == created) & (Command.id < command_id))
        )
    query = query.order_by(Command.created_at.desc(), Command.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


class CommandRouter:
    """Sends commands and expires the ones nobody answered. An async context manager; without a configured
    broker it still answers queries and expires commands, but ``send`` raises ``BrokerUnavailable``."""

    def __init__(
        self,
        settings: CloudSettings,
        database: Database,
        bus: EventBus,
        metrics: CloudMetrics,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.database = database
        self.bus = bus
        self.clock = clock
        self.sent = 0
        self.publish_failures = 0
        self.expired = 0
        self.expiry_failures = 0
        self.last_error: str | None = None
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        metrics.register_source("commands", self._metrics)

    def _metrics(self) -> dict[str, float]:
        return {
            "sent": self.sent,
            "publish_failures": self.publish_failures,
            "expired": self.expired,
            "expiry_failures": self.expiry_failures,
            "broker_connected": int(self._client is not None),
        }

    async def __aenter__(self) -> CommandRouter:
        self._tasks.append(asyncio.create_task(self._expire_forever(), name="command-expiry"))
        if self.settings.broker.host is not None:
            self._tasks.append(asyncio.create_task(self._stay_connected(), name="command-link"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    async def ready(self) -> None:
        if self.settings.broker.host is not None and self._client is None:
            raise BrokerUnavailable(f"not connected to the broker ({self.last_error or 'connecting'})")

    # ------------------------------------------------------------------------------------------- sending

    async def send(
        self,
        device_id: str,
        name: str,
        params: dict[str, Any],
        *,
        expires_in: float | None = None,
        created_by: str | None = None,
    ) -> Command:
        """Store a pending command for ``device_id`` and publish it to its gateway.

        Raises a 404 problem for an unknown device, 409 for one without a gateway or not active, and
        ``BrokerUnavailable`` when the publish failed (the command is then stored as failed)."""
        now = self.clock()
        expiry = expires_in if expires_in is not None else self.settings.commands.default_expiry
        async with self.database.session() as session:
            device = await session.get(Device, device_id)
            if device is None:
                raise NotFound("device", device_id)
            if device.gateway_id is None:
                raise Problem(
                    409,
                    "Conflict",
                    f"device {device_id!r} has no gateway: commands reach a device through its gateway",
                    type="no-gateway",
                )
            if device.status != "active":
                raise Problem(
                    409, "Conflict", f"device {device_id!r} is {device.status}", type="device-not-active"
                )
            command = Command(
                id=uuid.uuid4().hex,
                device_id=device_id,
                gateway_id=device.gateway_id,
                name=name,
                params=params,
                status=CommandStatus.PENDING.value,
                created_by=created_by,
                created_at=now,
                expires_at=now + timedelta(seconds=expiry),
            )
            session.add(command)
        self._wake.set()
        try:
            await self._publish(command)
        except BrokerUnavailable as exc:
            self.publish_failures += 1
            await self._fail_unpublished(command, str(exc))
            raise
        self.sent += 1
        return command

    async def _publish(self, command: Command) -> None:
        client = self._client
        if client is None:
            raise BrokerUnavailable(
                f"not connected to the broker ({self.last_error or 'no broker configured'})"
            )
        assert command.gateway_id is not None
        payload = orjson.dumps(
            {
                "id": command.id,
                "device": command.device_id,
                "name": command.name,
                "params": command.params,
                "expires_at": command.expires_at.timestamp(),
            }
        )
        try:
            await client.publish(
                Topics.down_commands(command.gateway_id), payload, qos=1, timeout=PUBLISH_TIMEOUT
            )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publish failed: {exc or type(exc).__name__}") from None

    async def _fail_unpublished(self, command: Command, reason: str) -> None:
        async with self.database.session() as session:
            row = await session.get(Command, command.id, with_for_update=True)
            if row is not None and row.status == CommandStatus.PENDING.value:
                row.status = CommandStatus.FAILED.value
                row.error = f"not published: {reason}"
                row.completed_at = self.clock()
                command.status, command.error, command.completed_at = row.status, row.error, row.completed_at

    async def _stay_connected(self) -> None:
        delay = 0.5
        while True:
            client = broker_client(self.settings.broker, f"{self.settings.broker.client_id}-commands")
            try:
                async with client:
                    self._client, self.last_error, delay = client, None, 0.5
                    log.info("command link connected")
                    # Nothing is subscribed: the iterator only ends, with MqttError, when the connection drops.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                log.warning("command link down", extra={"error": str(exc), "retry_in": delay})
            finally:
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------------------------------- expiry

    async def expire_due(self) -> datetime | None:
        """Expire every open command whose deadline passed; returns the next deadline (None when none is open)."""
        now = self.clock()
        async with self.database.session() as session:
            rows = await session.execute(
                update(Command)
                .where(Command.status.in_(OPEN), Command.expires_at <= now)
                .values(status=CommandStatus.EXPIRED.value, completed_at=now)
                .returning(Command.id, Command.device_id, Command.gateway_id)
                .execution_options(synchronize_session=False)
            )
            expired = rows.all()
            upcoming = await session.scalar(
                select(func.min(Command.expires_at)).where(Command.status.in_(OPEN))
            )
        for command_id, device_id, gateway_id in expired:
            self.expired += 1
            self.bus.emit(EXPIRED, {"id": command_id, "gateway_id": gateway_id}, device_id=device_id)
        return as_utc(upcoming) if upcoming is not None else None

    async def _expire_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                upcoming = await self.expire_due()
            except Exception:  # the database is down or refused: counted, retried after EXPIRY_RECHECK
                self.expiry_failures += 1
                log.exception("expiring commands failed; retrying")
                upcoming = None
            delay = EXPIRY_RECHECK
            if upcoming is not None:
                delay = min(EXPIRY_RECHECK, max(0.0, (upcoming - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
