"""Dry runs: a workflow on a simulated clock with recording stand-ins for every action that leaves the engine.

``fieldline workflow run`` uses it, and so do tests. Events are fed in order; an event with a ``ts`` later than
the simulated clock moves the clock there first. When no trigger starts an instance, one is started explicitly
(with the first event as its event), as an ``api`` start would. The clock then runs to the horizon, firing every
timer in order, so a workflow that waits hours finishes in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from workflows.clock import FakeClock
from workflows.events import Event
from workflows.instance import HistoryEntry, Instance
from workflows.loader import LoadedWorkflow
from workflows.runtime import Engine
from workflows.store import MemoryStore


@dataclass
class RecordingHost:
    """A ``Host`` that records what actions asked for; a command with ``await_ack`` is acknowledged with ``ack``."""

    ack: dict[str, Any] = field(default_factory=lambda: {"status": "ok"})
    commands: list[dict[str, Any]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    emitted: list[Event] = field(default_factory=list)

    async def send_command(
        self,
        device_id: str,
        name: str,
        params: dict[str, Any],
        *,
        command_id: str,
        await_ack: bool,
        ack_timeout: float,
    ) -> dict[str, Any]:
        self.commands.append(
            {"device": device_id, "name": name, "params": params, "id": command_id, "await_ack": await_ack}
        )
        return {"command_id": command_id, **(self.ack if await_ack else {"status": "sent"})}

    async def publish(self, topic: str, payload: Any, *, qos: int, retain: bool) -> None:
        self.published.append({"topic": topic, "payload": payload, "qos": qos, "retain": retain})

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)


@dataclass
class RecordingNotifier:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def notify(self, message: str, *, severity: str, data: Mapping[str, Any]) -> None:
        self.sent.append({"message": message, "severity": severity, "data": dict(data)})


@dataclass
class DryRunResult:
    instances: list[Instance]
    history: dict[str, list[HistoryEntry]]
    host: RecordingHost
    notifier: RecordingNotifier
    start: float
    trace: list[str] = field(default_factory=list)


def _stub_http(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"dry_run": True, "method": request.method, "url": str(request.url)})


def format_entry(entry: HistoryEntry, start: float) -> str:
    detail = json.dumps(entry.detail, default=str, ensure_ascii=False) if entry.detail else ""
    return f"+{entry.ts - start:10.3f}s  {entry.instance_id:<12} {entry.state or '-':<16} {entry.kind:<15} {detail}"


async def dry_run(
    loaded: LoadedWorkflow,
    events: list[Event],
    *,
    variables: dict[str, Any] | None = None,
    horizon: float = 7 * 86400,
) -> DryRunResult:
    """Run ``loaded`` against ``events`` on a simulated clock up to ``horizon`` seconds; return the trace."""
    start = next((e.ts for e in events if e.ts is not None), 1_700_000_000.0)
    clock = FakeClock(start)
    host = RecordingHost()
    notifier = RecordingNotifier()
    counter = iter(range(1, 1_000_000))
    transport = httpx.MockTransport(_stub_http)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        Engine(
            store=MemoryStore(),
            host=host,
            clock=clock,
            notifiers={"log": notifier, "webhook": notifier},
            http=http,
            ids=lambda: f"i{next(counter)}",
        ) as engine,
    ):
        await engine.deploy(loaded)
        started: list[str] = []
        for event in events:
            if event.ts is not None and event.ts > clock.now():
                await clock.advance_to(event.ts)
            started += await engine.handle(event)
            await clock.settle()
        if not started:
            first = events[0] if events else None
            await engine.start(loaded.workflow.id, variables or {}, event=first, trigger="dry-run")
        await clock.advance_to(start + horizon)
        await engine.idle()
        instances = await engine.store.list(limit=10_000)
        history = {i.id: await engine.store.history(i.id) for i in instances}
    entries = sorted((e for h in history.values() for e in h), key=lambda e: e.ts)
    result = DryRunResult(sorted(instances, key=lambda i: i.created_at), history, host, notifier, start)
    result.trace = [format_entry(e, start) for e in entries]
    return result
