"""kill -9 in the middle of running workflows, then a restart on the same SQLite file: every instance continues
from its last completed transition, waits keep their original deadlines, an interrupted task runs again with
the same idempotency keys."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from workflows import Engine, FakeClock, RuleEngine, SQLiteStore, Status, load_rules, load_workflow
from workflows.dryrun import RecordingHost

T0 = 1_800_000_000.0

WORKFLOW = """
id: durable
version: 1.0.0
variables:
  device_id: {type: string, required: true}
start_at: prepare
states:
  prepare:
    type: task
    actions:
      - {type: set, values: {step: prepared}}
    next: nap
  nap:
    type: wait
    seconds: 3600
    next: approval
  approval:
    type: wait
    event: {type: approved, condition: "approval.data.device == device_id", timeout: 2h, on_timeout: expired, result_as: approval}
    next: act
  act:
    type: task
    actions:
      - {type: command, device: "{{ device_id }}", name: reboot, await_ack: true}
    next: done
  expired: {type: fail, error: Approval.Expired}
  done: {type: succeed}
"""

RULES = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 10m
    severity: critical
    actions:
      - {type: command, name: cooling, params: {mode: max}}
"""

# The child process: starts three instances, brings them to three different points, reports, then hangs in a
# command that never returns until it is killed.
CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from workflows import Engine, Event, FakeClock, RuleEngine, SQLiteStore, load_rules, load_workflow

    class Host:
        async def send_command(self, device_id, name, params, *, command_id, await_ack, ack_timeout):
            print(json.dumps({"command": command_id}), flush=True)
            await asyncio.Event().wait()  # the device never answers: the process is killed here

        async def publish(self, *args, **kwargs): pass
        async def emit(self, event): pass

    async def main(db, workflow_file, rules_file, t0):
        clock = FakeClock(t0)
        ids = iter(["napping", "waiting", "acting"])
        store = SQLiteStore(db)
        async with Engine(store=store, host=Host(), clock=clock, ids=lambda: next(ids)) as engine:
            rules = RuleEngine(load_rules(rules_file), clock=clock, store=store, host=Host(), control=engine)
            await rules.__aenter__()
            await engine.deploy(load_workflow(workflow_file))
            for device in ("d1", "d2", "d3"):
                await engine.start("durable", {"device_id": device})
            await clock.settle()
            await clock.advance(3600)  # every instance is now waiting for its approval
            await engine.signal("acting", Event("approved", {"device": "d3"}))
            await clock.settle()
            await engine.signal("waiting", Event("approved", {"device": "someone else"}))  # buffered, no match
            await clock.settle()
            await rules.handle(Event("telemetry", {"temperature": 91.5}, device_id="boiler-1", ts=clock.now()))
            await rules.flush()  # the pending `for` (deadline now + 10 min) is durable
            print(json.dumps({"ready": clock.now()}), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
    """
)


def _run_child(tmp_path: Path) -> tuple[list[str], float]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    workflow_file = tmp_path / "durable.yaml"
    workflow_file.write_text(WORKFLOW)
    rules_file = tmp_path / "hot.rules.yaml"
    rules_file.write_text(RULES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "wf.db"), str(workflow_file), str(rules_file), str(T0)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    commands: list[str] = []
    ready = None
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        while True:
            message = json.loads(lines.get(timeout=60))  # a hung child fails the test instead of hanging it
            if "command" in message:
                commands.append(message["command"])
            if "ready" in message:
                ready = message["ready"]
            if ready is not None and commands:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ready is not None, "the child never reported"
    return commands, ready


async def test_kill_minus_9_then_restart_resumes_everything(tmp_path: Path) -> None:
    commands_before, killed_at = _run_child(tmp_path)
    assert commands_before == ["acting:act:0:0"]

    # The process was down for 2 minutes of workflow time.
    clock = FakeClock(killed_at + 120)
    host = RecordingHost()
    store = SQLiteStore(tmp_path / "wf.db")
    async with (
        Engine(store=store, host=host, clock=clock) as engine,
        RuleEngine(
            load_rules(tmp_path / "hot.rules.yaml"), clock=clock, store=store, host=host, control=engine
        ),
    ):
        await clock.settle()
        await engine.idle()

        # The interrupted task ran again, with the same idempotency key (same attempt), and went on.
        assert [c["id"] for c in host.commands] == ["acting:act:0:0"]
        host.commands.clear()
        acting = await engine.get("acting")
        assert acting.instance.status is Status.SUCCEEDED

        # The instance waiting for its approval kept its buffered signal, its variables and its deadline.
        waiting = await engine.get("waiting")
        assert waiting.instance.status is Status.WAITING
        assert waiting.instance.state == "approval"
        assert waiting.instance.vars["step"] == "prepared"
        assert [e["data"] for e in waiting.instance.inbox] == [{"device": "someone else"}]
        original_deadline = T0 + 3600 + 2 * 3600
        assert waiting.instance.wait is not None
        assert waiting.instance.wait.deadline == original_deadline

        # The rule's pending `for` fires 10 minutes after the reading that started it, not after the restart.
        for_deadline = killed_at + 600
        await clock.advance_to(for_deadline - 1)
        assert not [e for e in host.emitted if e.type == "alert"]
        await clock.advance_to(for_deadline)
        await clock.settle()
        alerts = [e for e in host.emitted if e.type == "alert"]
        assert [(a.device_id, a.ts) for a in alerts] == [("boiler-1", for_deadline)]
        assert [c["device"] for c in host.commands] == ["boiler-1"]

        # A matching approval still works after the restart...
        from workflows import Event

        await engine.signal("napping", Event("approved", {"device": "d1"}))
        await clock.settle()
        await engine.idle()
        assert (await engine.get("napping")).instance.status is Status.SUCCEEDED

        # ... and the other one's timeout fires at its original deadline, not 2 h after the restart.
        await clock.advance_to(original_deadline - 1)
        assert (await engine.get("waiting")).instance.status is Status.WAITING
        await clock.advance_to(original_deadline)
        await engine.idle()
        view = await engine.get("waiting")
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Approval.Expired", "cause": ""}
        timer = [e for e in view.history if e.kind == "timer"][-1]
        assert timer.ts == original_deadline
        assert timer.detail["deadline"] == original_deadline

        # Nothing was replayed twice: one `started` entry per instance, transitions in order.
        for iid in ("napping", "waiting", "acting"):
            history = (await engine.get(iid)).history
            assert [e.kind for e in history].count("started") == 1
            stamps = [e.ts for e in history]
            assert stamps == sorted(stamps)


async def test_overdue_timer_fires_on_restart(tmp_path: Path) -> None:
    """A wait whose deadline passed while the process was down fires as soon as the engine is back."""
    workflow = load_workflow(
        "nap.yaml",
        text="id: nap\nstart_at: nap\nstates:\n  nap: {type: wait, seconds: 60, next: done}\n  done: {type: succeed}\n",
    )
    clock = FakeClock(T0)
    async with Engine(store=SQLiteStore(tmp_path / "nap.db"), host=RecordingHost(), clock=clock) as engine:
        await engine.deploy(workflow)
        iid = await engine.start("nap")
        await clock.settle()
    clock = FakeClock(T0 + 3600)
    async with Engine(store=SQLiteStore(tmp_path / "nap.db"), host=RecordingHost(), clock=clock) as engine:
        await clock.settle()
        await engine.idle()
        view = await engine.get(iid)
        assert view.instance.status is Status.SUCCEEDED
        timer = next(e for e in view.history if e.kind == "timer")
        assert timer.detail["deadline"] == T0 + 60
