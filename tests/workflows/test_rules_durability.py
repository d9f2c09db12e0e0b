"""The rule engine across restarts, under memory bounds and when actions, the host or the store fail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.workflows.rule_fakes import T0, FailingHost, RecordingControl, crashed, rule_engine, telemetry
from workflows.clock import FakeClock
from workflows.dryrun import RecordingHost
from workflows.errors import ActionError, DefinitionError, EngineNotRunning
from workflows.events import Event
from workflows.rules import RuleEngine, load_rules
from workflows.store import MemoryStore

HOT_FOR = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 5m
    cooldown: 1h
    actions: [{type: command, name: cool}]
"""
SILENT = """
rules:
  - {id: silent, when: {event: telemetry}, absence: 10m}
"""


async def test_a_pending_for_resumes_with_its_original_deadline_after_a_kill() -> None:
    clock = FakeClock(T0)
    async with rule_engine(HOT_FOR, clock=clock) as first:
        await first.send(telemetry(temperature=85))
        await first.advance(120)  # the flusher has written the pending `for`
        disk = crashed(first.store)
    assert disk.states["rules"]["hot/d1"]["deadline"] == T0 + 300
    async with rule_engine(HOT_FOR, clock=clock, store=disk) as second:
        await second.advance(179)
        assert second.alerts() == []
        await second.advance(1)
        (alert,) = second.alerts()
        assert alert.ts == T0 + 300
        assert alert.data["value"] == 85  # rebuilt from the event saved with the state
        assert second.host.commands[0]["id"] == "hot:d1:1:0"


async def test_an_absence_deadline_resumes_after_a_kill_and_a_deadline_passed_while_down_fires_at_once() -> (
    None
):
    clock = FakeClock(T0)
    async with rule_engine(SILENT, clock=clock) as first:
        await first.send(telemetry("d1", t=1))
        await first.advance(60)
        await first.send(telemetry("d2", t=1))
        await first.advance(60)
        disk = crashed(first.store)
    async with rule_engine(SILENT, clock=clock, store=disk) as second:
        await second.advance(479)
        assert second.alerts() == []
        await second.advance(1)
        assert [(a.device_id, a.ts) for a in second.alerts()] == [("d1", T0 + 600)]
    await clock.advance(3600)  # the agent is down past d2's deadline
    async with rule_engine(SILENT, clock=clock, store=crashed(disk)) as third:
        await third.clock.settle()
        assert [(a.device_id, a.ts) for a in third.alerts()] == [("d2", T0 + 4200)]


async def test_fired_state_cooldown_and_firing_numbers_survive_a_restart() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    cooldown: 10m
    actions: [{type: command, name: cool}]
"""
    clock = FakeClock(T0)
    store = MemoryStore()
    async with rule_engine(rules, clock=clock, store=store) as first:
        await first.send(telemetry("d1", temperature=85), telemetry("d2", temperature=85))
    async with rule_engine(rules, clock=clock, store=store) as second:
        await second.send(telemetry("d1", temperature=90))  # still fired: no new alert
        await second.send(telemetry("d2", temperature=70), telemetry("d2", temperature=90))  # cooldown holds
        assert second.alerts() == []
        assert second.alert_devices("alert.cleared") == ["d2"]
        await second.advance(600)
        await second.send(telemetry("d2", temperature=91))
        assert second.host.commands[0]["id"] == "hot:d2:3:0"


async def test_state_is_written_behind_in_batches_and_deleted_when_idle() -> None:
    rules = """
rules:
  - {id: hot, when: {telemetry: t, condition: "value > 1"}}
"""
    async with rule_engine(rules, flush_interval=5.0) as h:
        saves = h.store.saves
        await h.send(*(telemetry(f"d{i}", t=5) for i in range(50)))
        assert h.store.saves == saves  # nothing written before the flush interval
        await h.advance(5)
        assert h.store.saves == saves + 1
        assert len(h.store.states["rules"]) == 51  # 50 devices and the rule's firing counter
        await h.send(*(telemetry(f"d{i}", t=0) for i in range(50)))
        await h.advance(5)
        assert h.engine.rule_status()["hot"]["devices"] == 0
        assert list(h.store.states["rules"]) == ["hot"]
        assert h.store.states["rules"]["hot"]["firings"] == 50


async def test_rules_removed_from_the_file_lose_their_stored_state() -> None:
    clock, store = FakeClock(T0), MemoryStore()
    async with rule_engine(HOT_FOR, clock=clock, store=store) as h:
        await h.send(telemetry(temperature=85))
    assert "hot/d1" in store.states["rules"]
    async with rule_engine(SILENT, clock=clock, store=store):
        pass
    assert list(store.states["rules"]) == ["silent"]


async def test_a_rule_that_watches_differently_after_a_redeploy_starts_afresh() -> None:
    clock, store = FakeClock(T0), MemoryStore()
    async with rule_engine(HOT_FOR, clock=clock, store=store) as h:
        await h.send(telemetry(temperature=85))
    reworded = HOT_FOR.replace("name: cool", "name: cool-down")  # actions only: the pending `for` is kept
    async with rule_engine(reworded, clock=clock, store=store) as h:
        await h.advance(300)
        assert h.alert_devices() == ["d1"]
        await h.send(telemetry("d2", temperature=85))
    stricter = HOT_FOR.replace("value > 80", "value > 90")  # a new condition: stored states are dropped
    async with rule_engine(stricter, clock=clock, store=store) as h:
        assert h.engine.rule_status()["hot"] == {
            "kind": "level",
            "devices": 0,
            "active": 0,
            "firings": 1,
            "last_error": None,
        }
        await h.advance(600)
        assert h.alerts() == []
    assert list(store.states["rules"]) == ["hot"]


async def test_device_state_per_rule_is_bounded_and_evictions_are_counted() -> None:
    async with rule_engine(HOT_FOR, max_devices=3) as h:
        await h.send(*(telemetry(f"d{i}", temperature=85) for i in range(5)))
        await h.send(telemetry("d2", temperature=86), telemetry("d5", temperature=87))
        assert h.engine.stats.evictions == 3
        assert h.engine.rule_status()["hot"]["devices"] == 3
        await h.advance(300)
        assert sorted(h.alert_devices()) == ["d2", "d4", "d5"]  # d0, d1, d3 were the least recently active
        await h.advance(1)
        assert sorted(k for k in h.store.states["rules"] if "/" in k) == ["hot/d2", "hot/d4", "hot/d5"]


async def test_action_failures_are_classified_and_do_not_stop_the_rule() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    actions:
      - {type: command, name: cool}
      - {type: notify, message: "{{ device_id }}"}
      - {type: notify, channel: pager, message: "{{ device_id }}"}
"""
    host = FailingHost(
        errors=[
            ActionError("Command.Nack", "refused", retryable=False),
            ActionError("Command.Timeout", "no ack"),
            RuntimeError("host bug"),
        ]
    )
    async with rule_engine(rules, host=host) as h:
        for device in ("d1", "d2", "d3", "d4"):
            await h.send(telemetry(device, temperature=90))
        stats = h.engine.stats
        assert stats.firings == 4
        assert stats.action_failures == 3 + 4  # three commands, four notifications to the missing channel
        assert stats.action_failures_retryable == 2  # the timeout and the unexpected error
        assert stats.actions_run == 1 + 4  # the fourth command and every `log` notification
        assert [c["device"] for c in host.commands] == ["d4"]
        assert [n["message"] for n in h.notifier.sent] == ["d1", "d2", "d3", "d4"]
        assert "Notify.UnknownChannel" in h.engine.rule_status()["hot"]["last_error"]
        await h.send(telemetry("d1", temperature=10), telemetry("d1", temperature=95))
        assert stats.firings == 5


async def test_a_host_that_cannot_emit_is_counted() -> None:
    class BrokenEmit(RecordingHost):
        async def emit(self, event: Event) -> None:
            raise ConnectionError("outbox closed")

    rules = "rules:\n  - {id: e, when: {event: x}, actions: [{type: log, message: hi}]}\n"
    async with rule_engine(rules, host=BrokenEmit()) as h:
        await h.send(Event("x"), Event("x"))
        assert (h.engine.stats.emit_failures, h.engine.stats.actions_run) == (2, 2)


async def test_handle_never_waits_for_actions_and_a_full_queue_drops_and_counts() -> None:
    class Blocking(RecordingHost):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def send_command(self, *args: Any, **kwargs: Any) -> Any:
            await self.release.wait()
            return await super().send_command(*args, **kwargs)

    rules = "rules:\n  - {id: e, when: {event: x}, actions: [{type: command, name: go}]}\n"
    host = Blocking()
    async with rule_engine(rules, host=host, workers=2, queue_size=3, drain_timeout=5) as h:
        for i in range(10):
            await h.send(Event("x", device_id=f"d{i}"))
        stats = h.engine.stats
        assert stats.firings == 10
        assert stats.dropped == 5  # 2 running, 3 queued
        assert len(h.alerts()) == 10
        host.release.set()
        await h.clock.settle()
        assert len(host.commands) == 5


async def test_store_failures_are_counted_and_the_write_is_retried() -> None:
    class FlakyStore(MemoryStore):
        failures = 1

        async def save(self, *args: Any, **kwargs: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")
            await super().save(*args, **kwargs)

    store = FlakyStore()
    async with rule_engine(HOT_FOR, store=store) as h:
        await h.send(telemetry(temperature=85))
        await h.advance(1)
        assert h.engine.stats.store_failures == 1
        assert "rules" not in store.states
        await h.advance(1)
        assert store.states["rules"]["hot/d1"]["since"] == T0


async def test_handle_outside_the_context_is_refused() -> None:
    engine = RuleEngine(
        load_rules("r.yaml", text=SILENT),
        clock=FakeClock(T0),
        store=MemoryStore(),
        host=RecordingHost(),
        control=RecordingControl(),
    )
    with pytest.raises(EngineNotRunning):
        await engine.handle(telemetry(t=1))


def test_two_files_with_the_same_rule_id_cannot_share_an_engine() -> None:
    with pytest.raises(DefinitionError, match=r"rule id also defined in a\.rules\.yaml"):
        RuleEngine(
            [load_rules("a.rules.yaml", text=SILENT), load_rules("b.rules.yaml", text=SILENT)],
            clock=FakeClock(T0),
            store=MemoryStore(),
            host=RecordingHost(),
            control=RecordingControl(),
        )
