"""A gateway's retained status (``fl/{gateway}/up/status``) read into the registry.

The agent publishes ``{"state": "online", "gateway", "ts", "agent_version", "started_at", ...}`` retained on
connect, and its last will ``{"state": "offline", "gateway"}`` is published by the broker when it vanishes.
``parse_status`` checks the JSON; ``record_status`` writes it through ``registry.set_gateway_status`` (which
registers an unknown gateway and queues ``gateway.online``/``gateway.offline`` when the status changed). An
empty payload (a retained status being cleared) carries nothing and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
    return StatusReport(body["state"], _text(body, "agent_version"), _text(body, "config_version"))


async def record_status(
    session: AsyncSession, bus: EventBus, gateway_id: str, report: StatusReport, received_at: datetime
) -> bool:
    """Write ``report``; True when the gateway's status changed. ``last_seen`` becomes the time it was received:
    a retained ``online`` replayed to a new subscriber still means the broker holds the gateway's connection
    (otherwise its last will would have replaced it)."""
    return await set_gateway_status(
        session,
        bus,
        gateway_id,
        report.state,
        agent_version=report.agent_version,
        config_version=report.config_version,
        seen_at=received_at,
    )
