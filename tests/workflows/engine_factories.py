"""Builders for engine tests: an engine on a fake clock with recording stand-ins, and history helpers."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from workflows.clock import FakeClock
from workflows.dryrun import RecordingHost, RecordingNotifier
from workflows.instance import HistoryEntry
from workflows.loader import LoadedWorkflow, load_workflow
from workflows.runtime import Engine, InstanceView
from workflows.store import InstanceStore, MemoryStore

T0 = 1_700_000_000.0
"""2023-11-14T22:13:20Z: where every fake clock starts."""


def counter_ids(prefix: str = "i") -> Callable[[], str]:
    """Deterministic instance ids: i1, i2, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def workflow(text: str, name: str = "wf.yaml") -> LoadedWorkflow:
    return load_workflow(name, text=text)


@dataclass
class Harness:
    """An engine with its fake clock, recording host and notifier."""

    engine: Engine
    clock: FakeClock
    host: Any
    notifier: RecordingNotifier

    async def run(self, seconds: float = 0.0) -> None:
        """Let the engine work (and the clock move by ``seconds``) until no instance is executing."""
        if seconds:
            await self.clock.advance(seconds)
        else:
            await self.clock.settle()
        await self.engine.idle()
        await self.clock.settle()

    async def deploy(self, text: str) -> None:
        await self.engine.deploy(workflow(text))

    async def view(self, instance_id: str) -> InstanceView:
        return await self.engine.get(instance_id)


@asynccontextmanager
async def engine_harness(
    *,
    host: Any = None,
    store: InstanceStore | None = None,
    clock: FakeClock | None = None,
    http: httpx.AsyncClient | None = None,
    notifiers: dict[str, Any] | None = None,
    seed: int = 1,
    inbox_limit: int = 100,
    ids: Callable[[], str] | None = None,
) -> AsyncIterator[Harness]:
    clock = clock or FakeClock(T0)
    notifier = RecordingNotifier()
    host = host if host is not None else RecordingHost()
    async with Engine(
        store=store or MemoryStore(),
        host=host,
        clock=clock,
        notifiers={"log": notifier, **(notifiers or {})},
        http=http,
        ids=ids or counter_ids(),
        rng=random.Random(seed),
        inbox_limit=inbox_limit,
    ) as engine:
        yield Harness(engine, clock, host, notifier)


def kinds(history: Iterable[HistoryEntry]) -> list[str]:
    return [entry.kind for entry in history]


def entries(history: Iterable[HistoryEntry], kind: str) -> list[HistoryEntry]:
    return [entry for entry in history if entry.kind == kind]


def path(history: Iterable[HistoryEntry]) -> list[str]:
    """The states an instance entered, in order."""
    return [entry.state or "" for entry in history if entry.kind == "entered"]


@dataclass
class BlockingHost(RecordingHost):
    """A host whose commands block until ``release`` is set; counts how many run at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0
    peak: int = 0

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
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return await super().send_command(
            device_id, name, params, command_id=command_id, await_ack=await_ack, ack_timeout=ack_timeout
        )


@dataclass
class ScriptedHost(RecordingHost):
    """A host whose commands fail as scripted: ``failures[device]`` is a list of errors raised in turn (an
    exception or None for success); after the list is exhausted commands succeed."""

    failures: dict[str, list[BaseException | None]] = field(default_factory=dict)

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
        result = await super().send_command(
            device_id, name, params, command_id=command_id, await_ack=await_ack, ack_timeout=ack_timeout
        )
        script = self.failures.get(device_id)
        if script:
            failure = script.pop(0)
            if failure is not None:
                raise failure
        return result


@dataclass
class HangingHost(RecordingHost):
    """A host whose commands never return (until cancelled); ``cancelled`` counts the cancellations."""

    cancelled: int = 0

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
        await super().send_command(
            device_id, name, params, command_id=command_id, await_ack=await_ack, ack_timeout=ack_timeout
        )
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")
