"""Every state type on a fake clock: task, choice, parallel, map, wait, succeed and fail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.workflows.engine_factories import (
    T0,
    BlockingHost,
    ScriptedHost,
    engine_harness,
    entries,
    kinds,
    path,
)
from workflows.errors import ActionError
from workflows.events import Event
from workflows.instance import Status
from workflows.loader import load_workflow
from workflows.sqlite_store import SQLiteStore

# --- task ----------------------------------------------------------------------------------------------

TASK = """
id: task
variables:
  device_id: {type: string, default: dev-1}
  target: {type: number, default: 21}
start_at: prepare
states:
  prepare:
    type: task
    actions:
      - type: set
        values: {target: "{{ target + 1 }}"}
      - type: publish
        topic: "sites/{{ device_id }}/setpoint"
        payload: {value: "{{ target }}"}
      - type: log
        message: "published to {{ result.topic }}"
        result_as: note
      - type: command
        device: "{{ device_id }}"
        name: heat
        params: {setpoint: "{{ target }}", note: "{{ note }}"}
        result_as: sent
    next: report
  report:
    type: task
    actions:
      - type: notify
        message: "{{ sent.status }} {{ result.command_id }} {{ note }}"
    end: true
"""


async def test_task_passes_result_and_result_as_between_actions_and_states() -> None:
    async with engine_harness() as h:
        await h.deploy(TASK)
        iid = await h.engine.start("task", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert h.host.published == [
            {"topic": "sites/dev-1/setpoint", "payload": {"value": 22}, "qos": 1, "retain": False}
        ]
        (command,) = h.host.commands
        assert command["params"] == {"setpoint": 22, "note": "published to sites/dev-1/setpoint"}
        assert view.instance.vars["note"] == "published to sites/dev-1/setpoint"
        assert view.instance.vars["sent"] == {"command_id": command["id"], "status": "sent"}
        assert view.instance.vars["target"] == 22
        (sent,) = h.notifier.sent
        assert sent["message"] == f"sent {command['id']} published to sites/dev-1/setpoint"
        assert view.instance.output == {"channel": "log", "message": sent["message"]}
        actions = entries(view.history, "action")
        assert [(e.state, e.detail["type"]) for e in actions] == [
            ("prepare", "set"),
            ("prepare", "publish"),
            ("prepare", "log"),
            ("prepare", "command"),
            ("report", "notify"),
        ]
        assert path(view.history) == ["prepare", "report"]


HUGE = """
id: huge
variables:
  n: {type: number, default: 4294967296}
start_at: grow
states:
  grow:
    type: task
    actions:
      - {type: set, values: {n: "{{ n * n * 4 }}", small: 1}, result_as: grown}
    next: done
  done: {type: succeed, output: "{{ n > 0 }}"}
"""


async def test_a_value_beyond_64_bits_is_kept_as_a_float(tmp_path: Path) -> None:
    # JSON stores (orjson) cannot encode such an integer; it must neither break the task nor the save
    async with engine_harness(store=SQLiteStore(tmp_path / "wf.db")) as h:
        await h.deploy(HUGE)
        iid = await h.engine.start("huge", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.vars["n"] == float(2**66)
        assert view.instance.vars["small"] == 1
        assert view.instance.vars["grown"] == {"n": float(2**66), "small": 1}
        assert view.instance.output is True


# --- choice --------------------------------------------------------------------------------------------

CHOICE = """
id: choice
variables:
  t: {type: number, required: true}
start_at: classify
states:
  classify:
    type: choice
    choices:
      - when: t >= 80
        next: hot
      - when: t >= 50
        next: warm
      - when: t >= 0 and t < 10
        next: cold
    default: normal
  hot: {type: succeed, output: hot}
  warm: {type: succeed, output: warm}
  cold: {type: succeed, output: cold}
  normal: {type: succeed, output: normal}
"""


async def test_choice_takes_the_first_matching_branch_else_default() -> None:
    async with engine_harness() as h:
        await h.deploy(CHOICE)
        ids = {t: await h.engine.start("choice", {"t": t}) for t in (95, 60, 5, 30)}
        await h.run()
        outputs = {t: (await h.view(i)).instance.output for t, i in ids.items()}
        assert outputs == {95: "hot", 60: "warm", 5: "cold", 30: "normal"}
        default = entries((await h.view(ids[30])).history, "transition")[0].detail
        assert default["to"] == "normal"
        assert default["branch"] == "default"
        assert [s["when"] for s in default["skipped"]] == ["t >= 80", "t >= 50", "t >= 0 and t < 10"]
        assert default["skipped"][0]["why"] == "false: t = 30 >= 80"
        assert default["skipped"][2]["why"] == "in `and`, item 2 of 2 is false: false: t = 30 < 10"
        hot = entries((await h.view(ids[95])).history, "transition")[0].detail
        assert hot == {"to": "hot", "branch": 0, "when": "t >= 80"}


async def test_choice_on_an_undefined_value_fails_with_the_reason() -> None:
    text = CHOICE.replace("t >= 50", "reading.value >= 50").replace(
        "  t: {type: number, required: true}",
        "  t: {type: number, required: true}\n  reading: {type: object}",
    )
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("choice", {"t": 30, "reading": {}})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error is not None
        assert instance.error["error"] == "States.ExpressionFailed"
        assert "reading.value is undefined" in instance.error["cause"]


# --- parallel ------------------------------------------------------------------------------------------

PARALLEL = """
id: par
variables:
  zone: {type: string, default: north}
start_at: both
states:
  both:
    type: parallel
    result_as: outcomes
    branches:
      - start_at: slow
        states:
          slow: {type: wait, seconds: 60, next: first}
          first:
            type: task
            actions:
              - {type: log, message: "first {{ zone }}"}
            end: true
      - start_at: second
        states:
          second:
            type: task
            actions:
              - {type: command, device: "{{ zone }}-valve", name: open}
            next: done
          done: {type: succeed, output: {branch: 2, zone: "{{ zone }}"}}
    next: after
  after:
    type: succeed
    output: "{{ outcomes }}"
"""


async def test_parallel_joins_all_branches_with_results_in_branch_order() -> None:
    async with engine_harness() as h:
        await h.deploy(PARALLEL)
        iid = await h.engine.start("par", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert view.instance.wait is not None
        assert view.instance.wait.kind == "join"
        children = [c for c in await h.engine.list() if c.parent_id == iid]
        assert sorted(c.branch for c in children if c.branch is not None) == [0, 1]
        second = next(c for c in children if c.branch == 1)
        assert second.status is Status.SUCCEEDED  # finished first; the join still waits for branch 0
        await h.run(60)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == ["first north", {"branch": 2, "zone": "north"}]
        assert view.instance.vars["outcomes"] == view.instance.output
        assert kinds(view.history)[-4:] == ["joined", "transition", "entered", "succeeded"]
        assert h.host.commands[0]["device"] == "north-valve"


PARALLEL_FAILING = """
id: parfail
start_at: both
states:
  both:
    type: parallel
    branches:
      - start_at: long
        states:
          long: {type: wait, seconds: 3600, next: never}
          never:
            type: task
            actions: [{type: command, device: never, name: x}]
            end: true
      - start_at: flaky
        states:
          flaky: {type: wait, seconds: 10, next: broken}
          broken: {type: fail, error: Valve.Stuck, cause: valve did not move}
      - start_at: quick
        states:
          quick: {type: succeed}
    catch:
      - errors: [States.BranchFailed]
        next: recover
        result_as: failure
    next: unreachable
  unreachable: {type: succeed, output: wrong}
  recover:
    type: succeed
    output: "{{ failure }}"
"""


async def test_parallel_first_failure_cancels_siblings_and_is_caught() -> None:
    async with engine_harness() as h:
        await h.deploy(PARALLEL_FAILING)
        iid = await h.engine.start("parfail", {})
        await h.run(10)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        failure = view.instance.output
        assert failure["error"] == "States.BranchFailed"
        assert "Valve.Stuck" in failure["cause"]
        assert failure["details"]["branch"] == 1
        assert failure["details"]["error"] == "Valve.Stuck"
        assert failure["details"]["cause"] == "valve did not move"
        statuses = {c.branch: c.status for c in await h.engine.list() if c.parent_id == iid}
        assert statuses == {0: Status.CANCELLED, 1: Status.FAILED, 2: Status.SUCCEEDED}
        assert [e.detail["to"] for e in entries(view.history, "transition")] == ["recover"]
        await h.run(3600)  # the cancelled branch's timer must not wake it
        assert h.host.commands == []
        statuses = {c.branch: c.status for c in await h.engine.list() if c.parent_id == iid}
        assert statuses[0] is Status.CANCELLED
        assert h.engine.instances == {}


FAILING = "{start_at: w, states: {w: {type: task, timeout: 60, actions: [{type: log, message: x}], next: f}, f: {type: fail}}}"
NESTED = f"""
id: nested
start_at: fan
states:
  fan:
    type: parallel
    branches:
      - start_at: inner
        states:
          inner:
            type: parallel
            branches: [{FAILING}, {FAILING}]
            retry: [{{max_attempts: 2, interval: 10}}]
            end: true
      - {FAILING}
    end: true
"""


async def test_a_branch_cancelled_while_its_own_branches_fail_stays_cancelled() -> None:
    # the outer failure cancels the inner parallel while one of its branches is stopping its sibling
    async with engine_harness() as h:
        await h.deploy(NESTED)
        iid = await h.engine.start("nested", {})
        await h.run()
        statuses = {i.id.removeprefix(iid): i.status for i in await h.engine.list()}
        assert statuses == {
            "": Status.FAILED,
            "/fan.0.0.0": Status.CANCELLED,
            "/fan.0.0.0/inner.0.0.0": Status.CANCELLED,
            "/fan.0.0.0/inner.0.0.1": Status.FAILED,
            "/fan.0.0.1": Status.FAILED,
        }
        assert h.engine.instances == {}


SIMULTANEOUS = """
id: simultaneous
start_at: fan
states:
  fan:
    type: parallel
    branches:
      - {start_at: f, states: {f: {type: fail}}}
      - {start_at: s, states: {s: {type: succeed}}}
      - {start_at: f, states: {f: {type: fail}}}
    retry: [{max_attempts: 3, interval: 10}]
    end: true
"""


async def test_branches_that_fail_at_once_fail_the_parallel_once() -> None:
    # the second failure arrives while the first is cancelling the siblings: it must not fail the state again
    async with engine_harness() as h:
        await h.deploy(SIMULTANEOUS)
        iid = await h.engine.start("simultaneous", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert view.instance.attempt == 1
        await h.run(10)
        await h.run(20)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "States.BranchFailed"
        assert kinds(view.history) == [
            "started",
            "entered",
            *["fork", "waiting", "timer"] * 2,
            "fork",
            "failed",
        ]
        children = [c for c in await h.engine.list() if c.parent_id == iid]
        assert len(children) == 9
        assert all(c.status.terminal and c.error is not None for c in children)
        assert all(c.error["error"] != "Engine.Fault" for c in children if c.error is not None)
        assert h.engine.instances == {}


# --- map -----------------------------------------------------------------------------------------------

MAP = """
id: mapper
variables:
  devices: {type: list, default: []}
start_at: each
states:
  each:
    type: map
    items: devices
    item_as: dev
    max_concurrency: 2
    result_as: acks
    iterator:
      start_at: send
      states:
        send:
          type: task
          actions:
            - {type: command, device: "{{ dev }}", name: reboot, params: {n: "{{ index }}"}}
          next: done
        done:
          type: succeed
          output: {device: "{{ dev }}", index: "{{ index }}", status: "{{ result.status }}"}
    next: report
  report:
    type: succeed
    output: "{{ acks }}"
"""


async def test_map_respects_its_concurrency_limit_and_keeps_item_order() -> None:
    host = BlockingHost()
    devices = [f"d{n}" for n in range(5)]
    async with engine_harness(host=host) as h:
        await h.deploy(MAP)
        iid = await h.engine.start("mapper", {"devices": devices})
        await h.clock.settle()
        assert host.active == 2
        assert host.peak == 2
        host.release.set()
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert host.peak == 2
        assert view.instance.output == [
            {"device": d, "index": n, "status": "sent"} for n, d in enumerate(devices)
        ]
        assert [c["params"] for c in host.commands] == [{"n": n} for n in range(5)]
        assert entries(view.history, "fork")[0].detail == {"children": 5}


async def test_map_counts_concurrency_one_step_at_a_time() -> None:
    host = BlockingHost()
    async with engine_harness(host=host) as h:
        await h.deploy(MAP.replace("max_concurrency: 2", "max_concurrency: 3"))
        iid = await h.engine.start("mapper", {"devices": ["a", "b", "c", "d", "e", "f", "g"]})
        await h.clock.settle()
        assert host.active == 3
        for _ in range(7):
            # let exactly the running commands finish, then block the ones launched after them
            host.release.set()
            await h.clock.settle()
            host.release.clear()
            await h.clock.settle()
            assert host.active <= 3
        host.release.set()
        await h.run()
        assert host.peak == 3
        assert (await h.view(iid)).instance.status is Status.SUCCEEDED


MAP_ORDER = """
id: order
variables:
  delays: {type: list, required: true}
start_at: each
states:
  each:
    type: map
    items: delays
    max_concurrency: 10
    iterator:
      start_at: pause
      states:
        pause:
          type: wait
          until: "{{ instance.started_at + item }}"
          next: out
        out: {type: succeed, output: "{{ index }}:{{ item }}"}
    end: true
"""


async def test_map_results_are_in_item_order_whatever_order_items_finish() -> None:
    async with engine_harness() as h:
        await h.deploy(MAP_ORDER)
        iid = await h.engine.start("order", {"delays": [30, 10, 20]})
        await h.run(15)
        children = {c.branch: c.status for c in await h.engine.list() if c.parent_id == iid}
        assert children == {0: Status.WAITING, 1: Status.SUCCEEDED, 2: Status.WAITING}
        await h.run(15)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == ["0:30", "1:10", "2:20"]
        joined = entries(view.history, "joined")[0]
        assert joined.ts == T0 + 30


async def test_map_over_an_empty_list_joins_at_once() -> None:
    async with engine_harness() as h:
        await h.deploy(MAP)
        iid = await h.engine.start("mapper", {"devices": []})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == []
        assert "fork" not in kinds(view.history)
        assert h.host.commands == []


async def test_map_over_something_that_is_not_a_list_fails() -> None:
    async with engine_harness() as h:
        await h.deploy(MAP.replace("type: list, default: []", "type: object, default: {}"))
        iid = await h.engine.start("mapper", {"devices": {"a": 1}})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error is not None
        assert instance.error["error"] == "States.ExpressionFailed"
        assert "gave dict, not a list" in instance.error["cause"]


TWINS = """
id: twins
variables: {items: {type: list, default: [1, 2]}}
start_at: fan
states:
  fan:
    type: map
    items: items
    max_concurrency: 2
    iterator:
      start_at: work
      states:
        work: {type: task, timeout: 60, actions: [{type: log, message: hi}], next: stop}
        stop: {type: fail, error: Custom.Failed}
    retry: [{max_attempts: 2, interval: 10}]
    end: true
"""


async def test_iterations_that_fail_together_fail_the_map_once() -> None:
    # the second iteration is cancelled while its timed task winds down: it must stop, not fail the map again
    async with engine_harness() as h:
        await h.deploy(TWINS)
        iid = await h.engine.start("twins", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert kinds(view.history) == ["started", "entered", "fork", "waiting"]
        await h.run(10)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert kinds(view.history) == ["started", "entered", "fork", "waiting", "timer", "fork", "failed"]
        children = {c.id: c.status for c in await h.engine.list() if c.parent_id == iid}
        assert children == {
            f"{iid}/fan.0.{attempt}.{index}": Status.FAILED if index == 0 else Status.CANCELLED
            for attempt in (0, 1)
            for index in (0, 1)
        }


# --- wait ----------------------------------------------------------------------------------------------

WAIT_SECONDS = """
id: pause
start_at: pause
states:
  pause: {type: wait, seconds: 90s, next: done}
  done: {type: succeed}
"""


async def test_wait_seconds() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_SECONDS)
        iid = await h.engine.start("pause", {})
        await h.run(89)
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert view.instance.wait is not None
        assert view.instance.wait.deadline == T0 + 90
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        (timer,) = entries(view.history, "timer")
        assert timer.ts == T0 + 90
        assert entries(view.history, "succeeded")[0].ts == T0 + 90


WAIT_UNTIL = """
id: until
variables:
  at: {type: string, required: true}
start_at: pause
states:
  pause: {type: wait, until: "{{ at }}", next: done}
  done: {type: succeed}
"""


async def test_wait_until_an_rfc3339_time() -> None:
    at = datetime.fromtimestamp(T0 + 1000, UTC).isoformat().replace("+00:00", "Z")
    assert at == "2023-11-14T22:30:00Z"
    async with engine_harness() as h:
        await h.deploy(WAIT_UNTIL)
        iid = await h.engine.start("until", {"at": at})
        await h.run(999)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert entries(view.history, "timer")[0].ts == T0 + 1000


async def test_wait_until_an_rfc3339_time_with_an_offset() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_UNTIL)
        iid = await h.engine.start("until", {"at": "2023-11-14T23:30:00+01:00"})  # 22:30 UTC
        await h.run(1000)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert entries(view.history, "timer")[0].ts == T0 + 1000


async def test_wait_until_epoch_seconds() -> None:
    text = WAIT_UNTIL.replace('until: "{{ at }}"', 'until: "{{ now() + 120 }}"').replace(
        "required: true", "default: unused"
    )
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("until", {})
        await h.run(119)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert entries(view.history, "timer")[0].ts == T0 + 120


async def test_wait_until_epoch_seconds_as_a_string_and_in_the_past() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_UNTIL)
        future = await h.engine.start("until", {"at": str(T0 + 50)})
        past = await h.engine.start("until", {"at": "2020-01-01T00:00:00Z"})
        await h.run()
        assert (await h.view(past)).instance.status is Status.SUCCEEDED
        assert (await h.view(future)).instance.status is Status.WAITING
        await h.run(50)
        assert (await h.view(future)).instance.status is Status.SUCCEEDED


async def test_wait_until_a_bad_time_fails() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_UNTIL)
        naive = await h.engine.start("until", {"at": "2023-11-14T22:30:00"})
        garbage = await h.engine.start("until", {"at": "tomorrow"})
        await h.run()
        for iid, message in ((naive, "no time zone offset"), (garbage, "neither epoch seconds")):
            instance = (await h.view(iid)).instance
            assert instance.status is Status.FAILED
            assert instance.error is not None
            assert instance.error["error"] == "States.ExpressionFailed"
            assert message in instance.error["cause"]


WAIT_EVENT = """
id: ack
variables:
  device_id: {type: string, required: true}
start_at: listen
states:
  listen:
    type: wait
    event:
      type: ack
      condition: ev.device_id == device_id and ev.data.code == 0
      result_as: ev
      timeout: 5m
      on_timeout: late
    next: acked
  acked:
    type: succeed
    output: "{{ ev.data.seq }}"
  late: {type: succeed, output: late}
"""


async def test_wait_for_an_event_matching_a_condition() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_EVENT)
        iid = await h.engine.start("ack", {"device_id": "dev-1"})
        await h.run(10)
        await h.engine.handle(Event("ack", {"code": 0, "seq": 1}, device_id="dev-2"))
        await h.engine.handle(Event("ack", {"code": 3, "seq": 2}, device_id="dev-1"))
        await h.engine.handle(Event("nack", {"code": 0, "seq": 3}, device_id="dev-1"))
        await h.run(10)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.engine.handle(Event("ack", {"code": 0, "seq": 4}, device_id="dev-1", ts=T0 + 20))
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == 4
        assert view.instance.vars["ev"]["data"] == {"code": 0, "seq": 4}
        (event,) = entries(view.history, "event")
        assert event.ts == T0 + 20
        assert event.detail == {"type": "ack", "data": {"code": 0, "seq": 4}}
        await h.run(600)  # the timeout of the finished wait does nothing
        assert (await h.view(iid)).instance.output == 4


async def test_an_event_wait_times_out_to_on_timeout() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_EVENT)
        iid = await h.engine.start("ack", {"device_id": "dev-1"})
        await h.run(299)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == "late"
        transition = entries(view.history, "transition")[0]
        assert transition.ts == T0 + 300
        assert transition.detail == {"to": "late", "reason": "event wait timed out"}
        await h.engine.handle(Event("ack", {"code": 0, "seq": 1}, device_id="dev-1"))
        await h.run()
        assert (await h.view(iid)).instance.output == "late"


async def test_an_event_wait_without_on_timeout_fails_with_states_timeout() -> None:
    text = WAIT_EVENT.replace("      on_timeout: late\n", "")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("ack", {"device_id": "dev-1"})
        await h.run(300)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "States.Timeout", "cause": "no ack event before the timeout"}
        assert entries(view.history, "failed")[0].ts == T0 + 300


async def test_an_event_wait_without_a_timeout_waits_for_days() -> None:
    text = WAIT_EVENT.replace("      timeout: 5m\n      on_timeout: late\n", "")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("ack", {"device_id": "dev-1"})
        await h.run(30 * 86400)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.engine.handle(Event("ack", {"code": 0, "seq": 9}, device_id="dev-1"))
        await h.run()
        assert (await h.view(iid)).instance.output == 9


async def test_an_event_the_condition_cannot_evaluate_is_ignored_and_traced() -> None:
    async with engine_harness() as h:
        await h.deploy(WAIT_EVENT)
        iid = await h.engine.start("ack", {"device_id": "dev-1"})
        await h.run()
        await h.engine.handle(Event("ack", {"seq": 1}, device_id="dev-1"))  # no `code`
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        (ignored,) = entries(view.history, "event_ignored")
        assert "ev.data.code is undefined" in ignored.detail["why"]


# --- succeed and fail ----------------------------------------------------------------------------------

ENDS = """
id: ends
variables:
  ok: {type: boolean, default: true}
  n: {type: number, default: 2}
start_at: decide
states:
  decide:
    type: choice
    choices:
      - {when: ok, next: good}
    default: bad
  good:
    type: succeed
    output:
      doubled: "{{ n * 2 }}"
      label: "n={{ n }}"
      items: ["{{ n }}", 3]
      workflow: "{{ instance.workflow }}"
  bad:
    type: fail
    error: Check.Failed
    cause: the check did not pass
"""


async def test_succeed_renders_its_output_template() -> None:
    async with engine_harness() as h:
        await h.deploy(ENDS)
        iid = await h.engine.start("ends", {"n": 21})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == {"doubled": 42, "label": "n=21", "items": [21, 3], "workflow": "ends"}
        assert view.instance.error is None
        assert entries(view.history, "succeeded")[0].detail == {"output": view.instance.output}


async def test_fail_records_error_and_cause() -> None:
    async with engine_harness() as h:
        await h.deploy(ENDS)
        iid = await h.engine.start("ends", {"ok": False})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Check.Failed", "cause": "the check did not pass"}
        assert entries(view.history, "failed")[0].detail == view.instance.error
        assert h.engine.stats.failed == 1


async def test_a_succeed_without_output_ends_with_the_last_result() -> None:
    text = """
id: last
start_at: work
states:
  work:
    type: task
    actions: [{type: set, values: {x: 1}}]
    next: done
  done: {type: succeed}
"""
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("last", {})
        await h.run()
        assert (await h.view(iid)).instance.output == {"x": 1}


# --- the shipped example -------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "temperature-monitor.yaml"


def telemetry(device_id: str, temperature: float) -> Event:
    return Event("telemetry", {"temperature": temperature}, device_id=device_id)


async def test_the_temperature_monitor_example_cools_a_hot_device() -> None:
    async with engine_harness() as h:
        await h.engine.deploy(load_workflow(EXAMPLE))
        iid = await h.engine.start("temperature-monitor", {"device_id": "f1"})
        await h.run()
        await h.engine.handle(telemetry("f2", 99))  # another device
        await h.engine.handle(telemetry("f1", 50))  # normal
        await h.run(60)
        await h.engine.handle(telemetry("f1", 85))  # too hot
        await h.run(60)
        assert [(c["device"], c["params"], c["await_ack"]) for c in h.host.commands] == [
            ("f1", {"mode": "max"}, True)
        ]
        assert (await h.view(iid)).instance.state == "cooling_down"
        await h.engine.handle(telemetry("f1", 75))  # not cool enough
        await h.engine.handle(telemetry("f1", 65))
        await h.run()
        view = await h.view(iid)
        assert view.instance.state == "monitor"
        assert view.instance.status is Status.WAITING
        assert [(c["device"], c["params"]) for c in h.host.commands][1:] == [("f1", {"mode": "off"})]
        assert [(n["severity"], n["message"]) for n in h.notifier.sent] == [
            ("warning", "Device f1 too hot: 85 °C"),
            ("info", "Device f1 back to 65 °C"),
        ]
        await h.engine.handle(telemetry("f1", 3))
        await h.run()
        assert h.notifier.sent[-1] == {
            "message": "Device f1 too cold: 3 °C",
            "severity": "warning",
            "data": {},
        }
        assert path((await h.view(iid)).history) == [
            "monitor",
            "classify",
            "monitor",
            "classify",
            "too_hot",
            "start_cooling",
            "cooling_down",
            "cooled_down",
            "monitor",
            "classify",
            "too_cold",
            "monitor",
        ]


async def test_the_temperature_monitor_example_reports_a_device_that_never_acks() -> None:
    silent = ActionError("Command.Timeout", "no ack in 10s")
    host = ScriptedHost(failures={"f1": [silent, silent, silent]})
    async with engine_harness(host=host) as h:
        await h.engine.deploy(load_workflow(EXAMPLE))
        iid = await h.engine.start("temperature-monitor", {"device_id": "f1"})
        await h.run()
        await h.engine.handle(telemetry("f1", 90))
        await h.run()
        await h.run(5)
        await h.run(10)
        view = await h.view(iid)
        assert [c["id"] for c in host.commands] == [f"{iid}:start_cooling:{n}:0" for n in range(3)]
        assert view.instance.state == "monitor"
        assert view.instance.vars["error"] == {"error": "Command.Timeout", "cause": "no ack in 10s"}
        assert h.notifier.sent[-1] == {
            "message": "Device f1 could not be cooled: no ack in 10s",
            "severity": "critical",
            "data": {},
        }
        assert len(h.notifier.sent) == 2  # "too hot" once (retries resend only the command), then the failure


async def test_the_temperature_monitor_example_starts_when_a_freezer_comes_online() -> None:
    async with engine_harness() as h:
        await h.engine.deploy(load_workflow(EXAMPLE))
        assert not await h.engine.handle(
            Event("device.state", {"from": "offline", "to": "online"}, device_id="b1", device_type="boiler")
        )
        (iid,) = await h.engine.handle(
            Event("device.state", {"from": "offline", "to": "online"}, device_id="z9", device_type="freezer")
        )
        await h.run()
        view = await h.view(iid)
        assert view.instance.vars["device_id"] == "z9"
        assert view.instance.state == "monitor"


async def test_an_event_wait_tied_to_a_device_is_indexed_by_that_device() -> None:
    """`reading.device_id == device_id` ties the wait to one device: the wait records it (the engine's index key),
    and events from other devices leave the instance waiting."""
    text = """
id: tied
variables: {device_id: {type: string, required: true}}
start_at: w
states:
  w: {type: wait, event: {type: telemetry, condition: "x > 1 and reading.device_id == device_id", result_as: reading}, next: done}
  done: {type: succeed}
"""
    async with engine_harness() as h:
        await h.engine.deploy(load_workflow("tied.yaml", text=text.replace("x > 1", "reading.data.x > 1")))
        first = await h.engine.start("tied", {"device_id": "d1"})
        second = await h.engine.start("tied", {"device_id": "d2"})
        await h.run()
        assert (await h.view(first)).instance.wait.device_id == "d1"
        await h.engine.handle(Event("telemetry", {"x": 5}, device_id="d2"))
        await h.run()
        assert (await h.view(first)).instance.status is Status.WAITING
        assert (await h.view(second)).instance.status is Status.SUCCEEDED
