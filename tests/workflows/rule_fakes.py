"""Builders for rule engine tests: a RuleEngine on a fake clock with a recording host, control and notifier."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from workflows.actions import ActionRegistry
from workflows.clock import FakeClock
from workflows.dryrun import RecordingHost, RecordingNotifier
from workflows.events import DEVICE_STATE, TELEMETRY, Event
from workflows.rules import RuleEngine, load_rules
from workflows.store import MemoryStore

T0 = 1_700_000_000.0


@dataclass
class RecordingControl:
    """A ``Control`` that records workflow starts and signals."""

    started: list[dict[str, Any]] = field(default_factory=list)
    signals: list[tuple[str, Event]] = field(default_factory=list)

    async def start_workflow(
        self, workflow_id: str, variables: dict[str, Any], *, parent: str | None, request_id: str
    ) -> str:
        self.started.append(
            {"workflow": workflow_id, "variables": variables, "parent": parent, "request_id": request_id}
        )
        return f"instance-{len(self.started)}"

    async def signal(self, instance_id: str, event: Event) -> None:
        self.signals.append((instance_id, event))


@dataclass
class FailingHost(RecordingHost):
    """A host whose commands raise ``errors`` in turn (then succeed)."""

    errors: list[BaseException] = field(default_factory=list)

    async def send_command(self, device_id: str, name: str, params: dict[str, Any], **options: Any) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return await super().send_command(device_id, name, params, **options)


def telemetry(
    device: str = "d1", device_type: str | None = None, ts: float | None = None, **metrics: Any
) -> Event:
    return Event(TELEMETRY, metrics, device_id=device, device_type=device_type, ts=ts)


def state_change(device: str, old: str, new: str) -> Event:
    return Event(DEVICE_STATE, {"from": old, "to": new}, device_id=device)


def crashed(store: MemoryStore) -> MemoryStore:
    """What a kill -9 leaves: a store holding exactly what had been saved so far."""
    copy_ = MemoryStore()
    copy_.states = copy.deepcopy(store.states)
    return copy_


@dataclass
class RuleHarness:
    engine: RuleEngine
    clock: FakeClock
    host: RecordingHost
    control: RecordingControl
    notifier: RecordingNotifier
    store: MemoryStore

    async def send(self, *events: Event) -> None:
        """Hand events to the engine and let the alert emitter and the action workers run."""
        for event in events:
            await self.engine.handle(event)
        await self.clock.settle()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    def alerts(self, kind: str = "alert") -> list[Event]:
        return [e for e in self.host.emitted if e.type == kind]

    def alert_devices(self, kind: str = "alert") -> list[str | None]:
        return [e.device_id for e in self.alerts(kind)]


@asynccontextmanager
async def rule_engine(
    text: str,
    *,
    store: MemoryStore | None = None,
    clock: FakeClock | None = None,
    host: RecordingHost | None = None,
    registry: ActionRegistry | None = None,
    **options: Any,
) -> AsyncIterator[RuleHarness]:
    """A running engine over the rules in ``text``; ``options`` go to ``RuleEngine``."""
    rules = load_rules("test.rules.yaml", registry, text=text)
    clock = clock or FakeClock(T0)
    store = store if store is not None else MemoryStore()
    host = host or RecordingHost()
    control = RecordingControl()
    notifier = RecordingNotifier()
    options.setdefault("flush_interval", 1.0)
    async with RuleEngine(
        rules, clock=clock, store=store, host=host, control=control, notifiers={"log": notifier}, **options
    ) as engine:
        yield RuleHarness(engine, clock, host, control, notifier, store)
