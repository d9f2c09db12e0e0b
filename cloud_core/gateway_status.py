"""A gateway's retained status (``fl/{gateway}/up/status``) read into the registry.

The agent publishes ``{"state": "online", "gateway", "ts", "agent_version", "started_at", ...}`` retained on
connect, and its last will ``{"state": "offline", "gateway"}`` is published by the broker when it vanishes.
``parse_status`` checks the JSON; ``record_status`` writes it through ``registry.set_gateway_status`` (which
registers an unknown gateway and queues ``gateway.online``/``gateway.offline`` when the status changed). An
empty payload (a retained status being cleared) carries nothing and is skipped.

``last_seen`` records when the gateway itself was last heard from. An ``online`` status, fresh or a retained one
replayed to a new subscriber, means the broker holds the gateway's connection now: the time it was received. An
``offline`` the agent said itself on shutdown carries its ``ts``: that time (never later than its arrival). A last
will (``offline`` without ``ts``) is the broker speaking, possibly long after the gateway vanished, or replayed
at the cloud's restart: it leaves ``last_seen`` where the gateway's last message put it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.bus import EventBus
from cloud_core.registry import set_gateway_status

STATES = ("online", "offline")


class StatusError(ValueError):
    """Raised when a status payload is not the JSON object the agent publishes."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    state: str
    agent_version: str | None = None
    config_version: str | None = None
    ts: float | None = None
    """When the gateway said it (epoch seconds); a last will has none."""

    def seen_at(self, received_at: datetime) -> datetime | None:
        """When this report shows the gateway was last heard from; None when it does not show it at all."""
        if self.state == "online":
            return received_at
        if self.ts is None:
            return None
        return min(datetime.fromtimestamp(self.ts, UTC), received_at)


def _text(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > 64:
        raise StatusError(f"{key} must be a short string")
    return str(value)


def parse_status(payload: bytes, gateway_id: str) -> StatusReport | None:
    """The report in ``payload`` (None for an empty one); raises ``StatusError``."""
    if not payload:
        return None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise StatusError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise StatusError("not a JSON object")
    if body.get("state") not in STATES:
        raise StatusError(f"state must be online or offline, not {body.get('state')!r}")
    if body.get("gateway", gateway_id) != gateway_id:
        raise StatusError(f"names gateway {body.get('gateway')!r} on the topic of {gateway_id!r}")
    ts = body.get("ts")
    if ts is not None and (
        not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0
    ):
        raise StatusError(f"ts must be epoch seconds, not {ts!r}")
    return StatusReport(body["state"], _text(body, "agent_version"), _text(body, "config_version"), ts)


async def record_status(
    session: AsyncSession, bus: EventBus, gateway_id: str, report: StatusReport, received_at: datetime
) -> bool:
    """Write ``report`` (received at ``received_at``); True when the gateway's status changed."""
    seen_at = report.seen_at(received_at)
    return await set_gateway_status(
        session,
        bus,
        gateway_id,
        report.state,
        agent_version=report.agent_version,
        config_version=report.config_version,
        seen_at=seen_at,
        keep_last_seen=seen_at is None,
    )
