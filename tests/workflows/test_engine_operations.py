"""Operating instances: list, inspect, cancel, terminate, signal; version pinning; idempotent starts and
actions; lifecycle events; resuming from SQLite after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.workflows.engine_factories import (
    T0,
    HangingHost,
    ScriptedHost,
    counter_ids,
    engine_harness,
    entries,
    kinds,
    path,
    workflow,
)
from workflows.clock import FakeClock
from workflows.errors import ActionError, InstanceNotFound, InstanceStateError
from workflows.events import Event
from workflows.instance import Status
from workflows.runtime import VersionConflict
from workflows.sqlite_store import SQLiteStore
from workflows.store import MemoryStore

MONITOR = """
id: monitor
variables:
  device_id: {type: string, default: dev-1}
start_at: settle
states:
  settle: {type: wait, seconds: 30, next: notify}
  notify:
    type: task
    actions: [{type: notify, message: "watching {{ device_id }}"}]
    next: listen
  listen:
    type: wait
    event: {type: ack, result_as: ack}
    next: done
  done:
    type: succeed
    output: "{{ ack.data }}"
"""


# --- list and get --------------------------------------------------------------------------------------


async def test_list_and_get_with_a_timestamped_history() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        first = await h.engine.start("monitor", {})
        await h.run(10)
        second = await h.engine.start("monitor", {"device_id": "dev-2"})
        await h.run(30)
        await h.engine.signal(first, Event("ack", {"ok": True}))
        await h.run(5)

        listed = await h.engine.list()
        assert [i.id for i in listed] == [second, first]  # newest first
        assert [i.id for i in await h.engine.list(status=Status.SUCCEEDED)] == [first]
        assert [i.id for i in await h.engine.list(status=Status.WAITING)] == [second]
        assert await h.engine.list(workflow_id="other") == []
        assert [i.id for i in await h.engine.list(limit=1)] == [second]

        view = await h.view(first)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == {"ok": True}
        assert view.instance.vars["ack"]["type"] == "ack"
        assert kinds(view.history) == [
            "started",
            "entered",
            "waiting",
            "timer",
            "transition",
            "entered",
            "action",
            "transition",
            "entered",
            "waiting",
            "event",
            "transition",
            "entered",
            "succeeded",
        ]
        stamps = [e.ts for e in view.history]
        assert stamps == sorted(stamps)
        assert stamps[0] == T0
        assert entries(view.history, "timer")[0].ts == T0 + 30
        assert entries(view.history, "event")[0].ts == T0 + 40
        assert {e.instance_id for e in view.history} == {first}
        assert path(view.history) == ["settle", "notify", "listen", "done"]

        live = await h.view(second)
        assert live.instance.state == "listen"
        assert live.instance.vars == {"device_id": "dev-2"}
        assert live.history[-1].kind == "waiting"
        assert live.history[-1].detail == {"kind": "event", "deadline": None, "event": "ack"}


async def test_get_an_unknown_instance() -> None:
    async with engine_harness() as h:
        with pytest.raises(InstanceNotFound, match="no workflow instance 'nope'"):
            await h.engine.get("nope")


# --- cancel and terminate ------------------------------------------------------------------------------


async def test_cancel_a_waiting_instance() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run(40)
        await h.engine.cancel(iid, "operator asked")
        view = await h.view(iid)
        assert view.instance.status is Status.CANCELLED
        assert view.instance.error == {"error": "Workflow.Cancelled", "cause": "operator asked"}
        assert view.history[-1].kind == "cancelled"
        await h.engine.handle(Event("ack", {"ok": True}))
        await h.run(3600)
        assert (await h.view(iid)).instance.status is Status.CANCELLED
        assert h.engine.instances == {}
        with pytest.raises(InstanceStateError, match="has already cancelled"):
            await h.engine.cancel(iid)


async def test_terminate_an_instance_in_a_timer_wait() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run(10)
        await h.engine.cancel(iid, terminate=True)
        await h.run(3600)
        view = await h.view(iid)
        assert view.instance.status is Status.TERMINATED
        assert view.instance.error == {"error": "Workflow.Terminated", "cause": "by request"}
        assert "timer" not in kinds(view.history)
        assert h.notifier.sent == []


async def test_cancel_an_instance_whose_action_is_running() -> None:
    text = """
id: stuck
start_at: work
states:
  work:
    type: task
    actions: [{type: command, device: dev, name: x}]
    end: true
"""
    host = HangingHost()
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("stuck", {})
        await h.clock.settle()
        await h.engine.cancel(iid)
        await h.run()
        assert (await h.view(iid)).instance.status is Status.CANCELLED
        assert host.cancelled == 1


PARALLEL = """
id: fanout
start_at: both
states:
  both:
    type: parallel
    branches:
      - start_at: a
        states:
          a: {type: wait, seconds: 60, next: a2}
          a2: {type: task, actions: [{type: command, device: a, name: go}], end: true}
      - start_at: b
        states:
          b: {type: wait, event: {type: go}, next: b2}
          b2: {type: task, actions: [{type: command, device: b, name: go}], end: true}
    next: done
  done: {type: succeed}
"""


@pytest.mark.parametrize("terminate", [False, True])
async def test_cancel_an_instance_with_running_parallel_children(terminate: bool) -> None:
    async with engine_harness() as h:
        await h.deploy(PARALLEL)
        iid = await h.engine.start("fanout", {})
        await h.run()
        children = [c for c in await h.engine.list() if c.parent_id == iid]
        assert {c.status for c in children} == {Status.WAITING}
        await h.engine.cancel(iid, "stop", terminate=terminate)
        await h.run()
        await h.engine.handle(Event("go"))
        await h.run(3600)
        assert (await h.view(iid)).instance.status is (Status.TERMINATED if terminate else Status.CANCELLED)
        children = [c for c in await h.engine.list() if c.parent_id == iid]
        assert len(children) == 2
        assert {c.status for c in children} == {Status.CANCELLED}
        assert h.host.commands == []
        assert h.engine.instances == {}


async def test_cancel_unknown_and_finished_instances() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        with pytest.raises(InstanceNotFound):
            await h.engine.cancel("nope")
        iid = await h.engine.start("monitor", {})
        await h.run(30)
        await h.engine.signal(iid, Event("ack"))
        await h.run()
        with pytest.raises(InstanceStateError, match="has already succeeded"):
            await h.engine.cancel(iid)


PAIR = """
id: pair
start_at: fan
states:
  fan:
    type: parallel
    branches:
      - {start_at: listen, states: {listen: {type: wait, event: {type: go}, end: true}}}
      - {start_at: listen, states: {listen: {type: wait, event: {type: go}, end: true}}}
    end: true
"""
ENDS = {"succeeded", "failed", "cancelled", "terminated"}


@pytest.mark.parametrize("target", ["parent", "sibling"])
async def test_a_cancellation_racing_an_event_ends_each_instance_once(target: str) -> None:
    """Cancel (the parent, or the other branch) while an event reaches a branch, after a different number of
    loop turns each time: whichever wins, every instance ends exactly once."""
    async with engine_harness() as h:
        await h.deploy(PAIR)
        for turns in range(16):
            iid = await h.engine.start("pair", {})
            for _ in range(turns):
                await asyncio.sleep(0)
            first, second = f"{iid}/fan.0.0.0", f"{iid}/fan.0.0.1"
            await asyncio.gather(
                h.engine.cancel(iid if target == "parent" else second, "race"),
                h.engine.signal(first, Event("go")),
                return_exceptions=True,
            )
            await h.run()
            for instance_id in (iid, first, second):
                view = await h.view(instance_id)
                ends = [kind for kind in kinds(view.history) if kind in ENDS]
                assert ends == [view.instance.status.value], (turns, instance_id, kinds(view.history))
        assert h.engine.instances == {}


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_cancelling_a_fork_at_any_point_leaves_no_branch_behind(
    tmp_path: Path, store_kind: str
) -> None:
    """Cancel after a different number of loop turns each time, so that some cancellations land while the
    parallel state is saving its branches."""
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "wf.db")
    async with engine_harness(store=store) as h:
        await h.deploy(PAIR)
        for turns in range(40):
            iid = await h.engine.start("pair", {})
            for _ in range(turns):
                await asyncio.sleep(0)
            await h.engine.cancel(iid, "now")
        await h.run()
        instances = await h.engine.list(limit=1000)
        assert len([i for i in instances if i.parent_id is None]) == 40
        assert len(instances) > 40  # most were cancelled after their fork
        assert {i.status for i in instances} == {Status.CANCELLED}
        assert h.engine.instances == {}


# --- signals -------------------------------------------------------------------------------------------


async def test_a_signal_is_delivered_to_a_waiting_instance() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run(30)
        await h.engine.signal(iid, Event("unrelated", {"x": 1}))
        await h.engine.signal(iid, Event("ack", {"n": 1}))
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == {"n": 1}
        assert "signal_buffered" in kinds(view.history)


async def test_a_signal_only_reaches_its_instance() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        one = await h.engine.start("monitor", {})
        two = await h.engine.start("monitor", {})
        await h.run(30)
        await h.engine.signal(two, Event("ack", {"n": 2}))
        await h.run()
        assert (await h.view(one)).instance.status is Status.WAITING
        assert (await h.view(two)).instance.output == {"n": 2}


async def test_a_signal_sent_before_the_wait_is_buffered_then_consumed() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run(5)
        await h.engine.signal(iid, Event("ack", {"early": True}))
        view = await h.view(iid)
        assert view.instance.state == "settle"
        assert view.instance.inbox == [{"type": "ack", "data": {"early": True}}]
        assert view.history[-1].kind == "signal_buffered"
        await h.run(25)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == {"early": True}
        assert view.instance.inbox == []
        assert entries(view.history, "event")[0].ts == T0 + 30
        assert "waiting" not in kinds(view.history)[kinds(view.history).index("action") :]


async def test_the_inbox_is_bounded_and_drops_the_oldest() -> None:
    async with engine_harness(inbox_limit=2) as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run()
        for n in range(3):
            await h.engine.signal(iid, Event("ack", {"n": n}))
        view = await h.view(iid)
        assert [e["data"]["n"] for e in view.instance.inbox] == [1, 2]
        assert entries(view.history, "signal_dropped")[0].detail == {"event": "ack", "reason": "inbox full"}
        assert h.engine.stats.signals_dropped == 1
        await h.run(30)
        assert (await h.view(iid)).instance.output == {"n": 1}


async def test_signals_to_finished_and_unknown_instances() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        iid = await h.engine.start("monitor", {})
        await h.run(30)
        await h.engine.signal(iid, Event("ack"))
        await h.run()
        with pytest.raises(InstanceStateError, match=f"instance {iid}: has already succeeded"):
            await h.engine.signal(iid, Event("ack"))
        with pytest.raises(InstanceNotFound):
            await h.engine.signal("nope", Event("ack"))


SIGNALLER = """
id: signaller
variables:
  target: {type: string, required: true}
start_at: send
states:
  send:
    type: task
    actions:
      - {type: signal, instance: "{{ target }}", event: ack, data: {from: "{{ instance.id }}"}}
    end: true
"""


async def test_the_signal_action() -> None:
    async with engine_harness() as h:
        await h.deploy(MONITOR)
        await h.deploy(SIGNALLER)
        target = await h.engine.start("monitor", {})
        await h.run(30)
        sender = await h.engine.start("signaller", {"target": target})
        await h.run()
        assert (await h.view(sender)).instance.output == {"instance_id": target}
        assert (await h.view(target)).instance.output == {"from": sender}


# --- versions ------------------------------------------------------------------------------------------

V1 = """
id: pinned
version: 1.0.0
start_at: pause
states:
  pause: {type: wait, seconds: 60, next: act}
  act:
    type: task
    actions: [{type: command, device: v1, name: old}]
    end: true
"""

V2 = """
id: pinned
version: 2.0.0
start_at: first
states:
  first:
    type: task
    actions: [{type: command, device: v2, name: early}]
    next: pause
  pause: {type: wait, seconds: 10, next: finish}
  finish:
    type: task
    actions: [{type: command, device: v2, name: new}]
    end: true
"""


async def test_an_instance_runs_the_version_it_started_with() -> None:
    async with engine_harness() as h:
        await h.deploy(V1)
        old = await h.engine.start("pinned", {})
        await h.run(5)
        await h.deploy(V2)
        new = await h.engine.start("pinned", {})
        await h.run(60)
        old_view, new_view = await h.view(old), await h.view(new)
        assert (old_view.instance.version, new_view.instance.version) == ("1.0.0", "2.0.0")
        assert path(old_view.history) == ["pause", "act"]
        assert path(new_view.history) == ["first", "pause", "finish"]
        assert old_view.instance.status is Status.SUCCEEDED
        assert new_view.instance.status is Status.SUCCEEDED
        assert [(c["device"], c["name"]) for c in h.host.commands] == [
            ("v2", "early"),
            ("v2", "new"),
            ("v1", "old"),
        ]
        # an explicit start of the old version is still possible
        again = await h.engine.start("pinned", {}, version="1.0.0")
        assert (await h.view(again)).instance.version == "1.0.0"


async def test_redeploying_a_version() -> None:
    async with engine_harness() as h:
        await h.deploy(V1)
        await h.deploy(V1)  # the same content: fine
        with pytest.raises(
            VersionConflict, match=r"version 1\.0\.0 is already deployed with different content"
        ):
            await h.deploy(V1.replace("seconds: 60", "seconds: 61"))


async def test_a_restart_keeps_every_version_for_its_instances() -> None:
    store = MemoryStore()
    clock = FakeClock(T0)
    async with engine_harness(store=store, clock=clock) as h:
        await h.deploy(V1)
        old = await h.engine.start("pinned", {})
        await h.run(5)
        await h.deploy(V2)
    async with engine_harness(store=store, clock=clock, ids=counter_ids("j")) as h:
        assert h.engine.latest == {"pinned": "2.0.0"}
        new = await h.engine.start("pinned", {})
        await h.run(60)
        assert path((await h.view(old)).history) == ["pause", "act"]
        assert path((await h.view(new)).history) == ["first", "pause", "finish"]


# --- start_workflow, lifecycle events, idempotency keys ------------------------------------------------

CHILD = """
id: child
variables:
  n: {type: number, required: true}
start_at: pause
states:
  pause: {type: wait, seconds: 60, next: done}
  done: {type: succeed, output: "{{ n * 2 }}"}
"""

PARENT = """
id: parent
start_at: spawn
states:
  spawn:
    type: task
    actions:
      - {type: start_workflow, workflow: child, variables: {n: 21}, result_as: child}
      - {type: command, device: dev, name: after}
    retry: [{max_attempts: 2}]
    end: true
"""


async def test_start_workflow_with_a_request_id_is_idempotent() -> None:
    async with engine_harness() as h:
        await h.deploy(CHILD)
        first = await h.engine.start("child", {"n": 1}, request_id="req-1")
        again = await h.engine.start("child", {"n": 2}, request_id="req-1")
        other = await h.engine.start("child", {"n": 3}, request_id="req-2")
        assert first == again != other
        await h.run(60)
        assert (await h.view(first)).instance.output == 2
        # still the same instance once it has finished
        assert await h.engine.start("child", {"n": 4}, request_id="req-1") == first
        assert len(await h.engine.list(workflow_id="child")) == 2


async def test_the_start_workflow_action_starts_one_child_across_a_restart() -> None:
    store = MemoryStore()
    clock = FakeClock(T0)
    async with engine_harness(store=store, clock=clock, host=HangingHost()) as h:
        await h.deploy(CHILD)
        await h.deploy(PARENT)
        parent = await h.engine.start("parent", {})
        await h.clock.settle()
        (child,) = await h.engine.list(workflow_id="child")
        assert h.host.commands[0]["id"] == f"{parent}:spawn:0:1"
    # the process dies while the parent's command hangs; the state runs again with the same attempt
    async with engine_harness(store=store, clock=clock, ids=counter_ids("j")) as h:
        await h.run()
        view = await h.view(parent)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.vars["child"] == {"instance_id": child.id}
        assert [c.id for c in await h.engine.list(workflow_id="child")] == [child.id]
        assert h.host.commands[0]["id"] == f"{parent}:spawn:0:1"
        child_view = await h.view(child.id)
        assert child_view.history[0].detail["trigger"] == f"instance {parent}"
        await h.run(60)
        assert (await h.view(child.id)).instance.output == 42


async def test_lifecycle_events_are_emitted_through_the_host() -> None:
    chained = """
id: follow
variables:
  source: {type: string, required: true}
triggers:
  - type: event
    event: workflow.succeeded
    condition: event.data.workflow_id == 'child'
    variables: {source: "{{ event.data.instance_id }}"}
start_at: done
states:
  done: {type: succeed}
"""
    async with engine_harness() as h:
        await h.deploy(CHILD)
        await h.deploy(chained)
        iid = await h.engine.start("child", {"n": 5})
        await h.run(60)
        emitted = [e for e in h.host.emitted if e.source == iid]
        assert len(emitted) == 1
        event = emitted[0]
        assert event.type == "workflow.succeeded"
        assert event.ts == T0 + 60
        assert event.data == {
            "instance_id": iid,
            "workflow_id": "child",
            "version": "1.0.0",
            "output": 10,
            "error": None,
        }
        (follower,) = await h.engine.list(workflow_id="follow")
        assert follower.vars == {"source": iid}
        assert follower.status is Status.SUCCEEDED
        # the follower announced itself too, and did not start itself again
        assert [e.type for e in h.host.emitted] == ["workflow.succeeded", "workflow.succeeded"]


async def test_a_failed_instance_emits_workflow_failed_and_children_emit_nothing() -> None:
    text = """
id: broken
start_at: both
states:
  both:
    type: parallel
    branches:
      - start_at: x
        states:
          x: {type: fail, error: Boom, cause: bang}
    end: true
"""
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("broken", {})
        await h.run()
        assert [(e.type, e.source) for e in h.host.emitted] == [("workflow.failed", iid)]
        assert h.host.emitted[0].data["error"]["error"] == "States.BranchFailed"


async def test_idempotency_keys_are_instance_state_attempt_index() -> None:
    text = """
id: keys
start_at: work
states:
  work:
    type: task
    actions:
      - {type: command, device: a, name: one}
      - {type: command, device: b, name: two}
    retry: [{max_attempts: 3, interval: 1s}]
    next: again
  again:
    type: task
    actions:
      - {type: command, device: a, name: three}
    end: true
"""
    host = ScriptedHost(
        failures={"b": [ActionError("Command.Nack", "busy"), ActionError("Command.Nack", "busy")]}
    )
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("keys", {})
        await h.run()
        await h.run(1)
        await h.run(2)
        assert (await h.view(iid)).instance.status is Status.SUCCEEDED
        assert [c["id"] for c in host.commands] == [
            f"{iid}:work:0:0",
            f"{iid}:work:0:1",
            f"{iid}:work:1:0",
            f"{iid}:work:1:1",
            f"{iid}:work:2:0",
            f"{iid}:work:2:1",
            f"{iid}:again:0:0",
        ]
        assert len({c["id"] for c in host.commands}) == len(host.commands)


# --- durability ----------------------------------------------------------------------------------------

DURABLE = """
id: durable
start_at: pause
states:
  pause: {type: wait, seconds: 1h, next: listen}
  listen:
    type: wait
    event: {type: ack, timeout: 10m, on_timeout: late}
    next: done
  done: {type: succeed, output: on time}
  late: {type: succeed, output: late}
"""


async def test_a_wait_resumes_with_its_original_deadline_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "wf.db"
    clock = FakeClock(T0)
    async with engine_harness(store=SQLiteStore(db), clock=clock) as h:
        await h.deploy(DURABLE)
        iid = await h.engine.start("durable", {})
        await h.run(600)
        assert (await h.view(iid)).instance.wait.deadline == T0 + 3600  # type: ignore[union-attr]
    await clock.advance(1200)  # down for 20 minutes
    async with engine_harness(store=SQLiteStore(db), clock=clock, ids=counter_ids("j")) as h:
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert view.instance.state == "pause"
        await h.run(3600 - 1800 - 1)
        assert (await h.view(iid)).instance.state == "pause"
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.state == "listen"
        (timer,) = entries(view.history, "timer")
        assert timer.ts == T0 + 3600
        assert entries(view.history, "transition")[0].ts == T0 + 3600
    async with engine_harness(store=SQLiteStore(db), clock=clock, ids=counter_ids("k")) as h:
        await h.run(600)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == "late"
        assert entries(view.history, "transition")[-1].ts == T0 + 3600 + 600
        stamps = [e.ts for e in view.history]
        assert stamps == sorted(stamps)


async def test_a_deadline_that_passed_while_down_fires_at_restart(tmp_path: Path) -> None:
    db = tmp_path / "wf.db"
    clock = FakeClock(T0)
    async with engine_harness(store=SQLiteStore(db), clock=clock) as h:
        await h.deploy(DURABLE)
        iid = await h.engine.start("durable", {})
        await h.run()
    await clock.advance(5000)
    async with engine_harness(store=SQLiteStore(db), clock=clock, ids=counter_ids("j")) as h:
        await h.run()
        view = await h.view(iid)
        assert view.instance.state == "listen"
        assert entries(view.history, "timer")[0].ts == T0 + 5000
        listen = entries(view.history, "waiting")[-1]
        assert listen.detail["deadline"] == T0 + 5000 + 600  # the event wait starts when it is entered
        await h.engine.handle(Event("ack"))
        await h.run()
        assert (await h.view(iid)).instance.output == "on time"


async def test_a_workflow_loads_from_the_store_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "wf.db"
    clock = FakeClock(T0)
    async with engine_harness(store=SQLiteStore(db), clock=clock) as h:
        await h.engine.deploy(workflow(DURABLE))
    async with engine_harness(store=SQLiteStore(db), clock=clock) as h:
        assert h.engine.latest == {"durable": "1.0.0"}
        iid = await h.engine.start("durable", {})
        await h.run(3600)
        assert (await h.view(iid)).instance.state == "listen"


BRANCHES = """
id: branches
start_at: fan
states:
  fan:
    type: parallel
    branches:
      - {start_at: wait, states: {wait: {type: wait, event: {type: go}, end: true}}}
      - {start_at: wait, states: {wait: {type: wait, event: {type: go}, end: true}}}
    catch: [{errors: [States.BranchFailed], next: caught}]
    end: true
  caught: {type: succeed, output: "{{ error.details.error }}"}
"""


@pytest.mark.parametrize("ending", ["terminated", "succeeded"])
async def test_a_branch_that_ended_just_before_a_restart_is_reported_to_its_parent(ending: str) -> None:
    # a branch is saved when it ends, its parent only when it moves on: a restart in between must resume it
    store = MemoryStore()
    clock = FakeClock(T0)
    async with engine_harness(store=store, clock=clock) as h:
        await h.deploy(BRANCHES)
        iid = await h.engine.start("branches", {})
        await h.run()
        first, second = f"{iid}/fan.0.0.0", f"{iid}/fan.0.0.1"
        if ending == "terminated":
            await h.engine.cancel(second, "operator", terminate=True)
        else:
            await h.engine.signal(first, Event("go"))
            await h.run()
            await h.engine.signal(second, Event("go"))
            await asyncio.sleep(0)  # the branch runs to its end; its parent's next step is not run yet
        assert (await store.get(second)).status.value == ending  # type: ignore[union-attr]
        assert (await store.get(iid)).status is Status.WAITING  # type: ignore[union-attr]
    async with engine_harness(store=store, clock=clock, ids=counter_ids("j")) as h:
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        if ending == "terminated":
            assert view.instance.output == "Workflow.Terminated"
            assert (await h.view(first)).instance.status is Status.CANCELLED
        else:
            assert view.instance.output == [{"type": "go", "data": {}}] * 2
        assert h.engine.instances == {}


# --- signals and events racing the instance's own step -------------------------------------------------

RACE = """
id: race
start_at: first
states:
  first: {type: task, actions: [{type: log, message: begin}], next: listen}
  listen:
    type: wait
    event: {type: go}
    end: true
"""


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_a_signal_at_any_point_of_the_step_is_never_lost(tmp_path: Path, store_kind: str) -> None:
    """Signal each instance after a different number of loop turns, so that some signals land while the
    instance is saving its wait or has just returned from its step."""
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "wf.db")
    async with engine_harness(store=store) as h:
        await h.deploy(RACE)
        ids = []
        for turns in range(80):
            iid = await h.engine.start("race", {})
            for _ in range(turns):
                await asyncio.sleep(0)
            await h.engine.signal(iid, Event("go", {"turns": turns}))
            ids.append(iid)
        await h.run()
        for turns, iid in enumerate(ids):
            instance = (await h.view(iid)).instance
            assert instance.status is Status.SUCCEEDED, iid
            assert instance.output["data"] == {"turns": turns}


async def test_an_event_right_after_the_wait_began_is_delivered() -> None:
    async with engine_harness() as h:
        await h.deploy(RACE)
        ids = []
        for turns in range(20):
            iid = await h.engine.start("race", {})
            for _ in range(turns):
                await asyncio.sleep(0)
            if (await h.view(iid)).instance.status is Status.WAITING:
                await h.engine.handle(Event("go"))
                ids.append(iid)
            else:
                await h.engine.cancel(iid)
        await h.run()
        assert ids
        assert [(await h.view(iid)).instance.status for iid in ids] == [Status.SUCCEEDED] * len(ids)
