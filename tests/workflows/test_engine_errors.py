"""Failures: retry (backoff, max delay, jitter), catch, on_error, timeouts, transition budgets, and the ``http``
action and webhook notifier against a real HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.servicekit import free_port
from tests.workflows.engine_factories import T0, HangingHost, ScriptedHost, engine_harness, entries, kinds
from workflows.actions import WebhookNotifier
from workflows.errors import ActionError
from workflows.instance import Status

# --- retry ---------------------------------------------------------------------------------------------

RETRY = """
id: retry
start_at: work
states:
  work:
    type: task
    actions:
      - {type: command, device: "{{ vars.device }}", name: ping}
    retry:
      - {}
    end: true
variables:
  device: {type: string, default: dev}
"""


def nack(message: str = "busy") -> ActionError:
    return ActionError("Command.Nack", message)


def retry_waits(history: list[Any]) -> list[dict[str, Any]]:
    return [e.detail for e in entries(history, "waiting") if e.detail["kind"] == "retry"]


async def test_retry_defaults_three_attempts_one_second_doubling() -> None:
    host = ScriptedHost(failures={"dev": [nack(), nack(), nack()]})
    async with engine_harness(host=host) as h:
        await h.deploy(RETRY)
        iid = await h.engine.start("retry", {})
        await h.run()
        waits = retry_waits((await h.view(iid)).history)
        assert [(w["deadline"], w["attempt"], w["of"]) for w in waits] == [(T0 + 1, 2, 3)]
        await h.run(1)
        await h.run(2)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Command.Nack", "cause": "busy"}
        waits = retry_waits(view.history)
        assert [(w["deadline"], w["attempt"], w["error"]) for w in waits] == [
            (T0 + 1, 2, "Command.Nack"),
            (T0 + 3, 3, "Command.Nack"),
        ]
        assert [e.ts for e in entries(view.history, "action_failed")] == [T0, T0 + 1, T0 + 3]
        assert [c["id"] for c in host.commands] == [f"{iid}:work:{n}:0" for n in range(3)]
        assert h.engine.stats.retries == 2


async def test_retry_succeeds_on_a_later_attempt() -> None:
    host = ScriptedHost(failures={"dev": [nack(), None]})
    async with engine_harness(host=host) as h:
        await h.deploy(RETRY)
        iid = await h.engine.start("retry", {})
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert kinds(view.history) == [
            "started",
            "entered",
            "action_failed",
            "waiting",
            "timer",
            "action",
            "succeeded",
        ]


async def test_retry_with_custom_interval_backoff_and_max_delay() -> None:
    text = RETRY.replace(
        "      - {}", "      - {interval: 5s, backoff_rate: 3, max_delay: 20s, max_attempts: 5}"
    )
    host = ScriptedHost(failures={"dev": [nack()] * 5})
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("retry", {})
        await h.run(3600)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        # 5, 15, then 45 and 135 capped at 20
        assert [w["deadline"] for w in retry_waits(view.history)] == [T0 + 5, T0 + 20, T0 + 40, T0 + 60]
        assert [e.ts for e in entries(view.history, "action_failed")] == [
            T0,
            T0 + 5,
            T0 + 20,
            T0 + 40,
            T0 + 60,
        ]
        assert [c["id"].rsplit(":", 2)[1] for c in host.commands] == ["0", "1", "2", "3", "4"]


async def test_retry_jitter_stays_within_its_fraction() -> None:
    text = RETRY.replace(
        "      - {}", "      - {interval: 10s, backoff_rate: 1, jitter: 0.5, max_attempts: 30}"
    )
    host = ScriptedHost(failures={"dev": [nack()] * 30})
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("retry", {})
        await h.run(3600)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        failed_at = [e.ts for e in entries(view.history, "action_failed")]
        deadlines = [w["deadline"] for w in retry_waits(view.history)]
        delays = [d - t for d, t in zip(deadlines, failed_at, strict=False)]
        assert len(delays) == 29
        assert all(5.0 <= d <= 10.0 for d in delays)
        assert len({round(d, 6) for d in delays}) > 20  # drawn, not constant


async def test_the_first_matching_retry_policy_applies() -> None:
    text = RETRY.replace(
        "      - {}",
        "      - {errors: [Http.*], max_attempts: 9}\n"
        "      - {errors: [Command.Nack], max_attempts: 2, interval: 7s}\n"
        "      - {errors: ['*'], max_attempts: 9}",
    )
    host = ScriptedHost(failures={"dev": [nack()] * 5})
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("retry", {})
        await h.run(3600)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert [w["deadline"] for w in retry_waits(view.history)] == [T0 + 7]
        assert len(host.commands) == 2


async def test_a_non_retryable_error_skips_retries() -> None:
    host = ScriptedHost(
        failures={"dev": [ActionError("Command.Invalid", "no such command", retryable=False)]}
    )
    async with engine_harness(host=host) as h:
        await h.deploy(RETRY)
        iid = await h.engine.start("retry", {})
        await h.run(60)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Command.Invalid", "cause": "no such command"}
        assert retry_waits(view.history) == []
        assert len(host.commands) == 1


async def test_an_unforeseen_host_exception_is_a_task_failure_and_retried() -> None:
    host = ScriptedHost(failures={"dev": [RuntimeError("socket closed"), None]})
    async with engine_harness(host=host) as h:
        await h.deploy(RETRY)
        iid = await h.engine.start("retry", {})
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        (failed,) = entries(view.history, "action_failed")
        assert failed.detail["error"] == "States.TaskFailed"
        assert "socket closed" in failed.detail["cause"]


# --- catch and on_error --------------------------------------------------------------------------------

CATCH = """
id: catch
start_at: work
states:
  work:
    type: task
    actions:
      - {type: command, device: dev, name: ping}
    retry:
      - {errors: [Command.Nack], max_attempts: 2}
    catch:
      - {errors: [Command.Timeout], next: offline, result_as: problem}
      - {errors: ['*'], next: broken}
    next: done
  done: {type: succeed, output: ok}
  offline:
    type: succeed
    output: "{{ problem }}"
  broken:
    type: succeed
    output: "{{ error.error }}"
"""


async def test_catch_stores_the_error_and_goes_to_its_target() -> None:
    host = ScriptedHost(
        failures={"dev": [ActionError("Command.Timeout", "no ack in 10s", details={"after": 10})]}
    )
    async with engine_harness(host=host) as h:
        await h.deploy(CATCH)
        iid = await h.engine.start("catch", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        expected = {"error": "Command.Timeout", "cause": "no ack in 10s", "details": {"after": 10}}
        assert view.instance.output == expected
        assert view.instance.vars["problem"] == expected
        assert entries(view.history, "transition")[0].detail == {"to": "offline", "caught": "Command.Timeout"}


async def test_catch_after_retries_are_spent_uses_the_default_variable() -> None:
    host = ScriptedHost(failures={"dev": [nack(), nack()]})
    async with engine_harness(host=host) as h:
        await h.deploy(CATCH)
        iid = await h.engine.start("catch", {})
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.output == "Command.Nack"
        assert view.instance.vars["error"] == {"error": "Command.Nack", "cause": "busy"}
        assert len(host.commands) == 2


ON_ERROR = """
id: onerr
variables:
  recover: {type: boolean, default: true}
start_at: work
states:
  work:
    type: task
    actions:
      - {type: command, device: dev, name: ping}
    next: done
  done: {type: succeed, output: ok}
  cleanup:
    type: succeed
    output: "recovered from {{ failure.error }}"
on_error:
  result_as: failure
  actions:
    - type: notify
      severity: critical
      message: "{{ instance.workflow }} failed in {{ instance.state }}: {{ failure.cause }}"
    - type: command
      device: siren
      name: sound
  next: cleanup
"""


async def test_on_error_runs_its_actions_then_continues_at_next() -> None:
    host = ScriptedHost(failures={"dev": [nack("jammed")]})
    async with engine_harness(host=host) as h:
        await h.deploy(ON_ERROR)
        iid = await h.engine.start("onerr", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == "recovered from Command.Nack"
        assert h.notifier.sent == [
            {"message": "onerr failed in work: jammed", "severity": "critical", "data": {}}
        ]
        assert [c["device"] for c in host.commands] == ["dev", "siren"]
        assert host.commands[1]["id"] == f"{iid}:on_error:0:1"
        assert kinds(view.history)[2:6] == ["action_failed", "on_error", "action", "action"]


async def test_on_error_without_next_fails_the_instance_after_its_actions() -> None:
    text = ON_ERROR.replace("  next: cleanup\n", "")
    host = ScriptedHost(failures={"dev": [nack("jammed")]})
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("onerr", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Command.Nack", "cause": "jammed"}
        assert len(h.notifier.sent) == 1
        assert [c["device"] for c in host.commands] == ["dev", "siren"]


async def test_a_failing_on_error_handler_fails_the_instance_with_both_errors() -> None:
    host = ScriptedHost(
        failures={"dev": [nack("jammed")], "siren": [ActionError("Command.Nack", "no siren")]}
    )
    async with engine_harness(host=host) as h:
        await h.deploy(ON_ERROR)
        iid = await h.engine.start("onerr", {})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error == {
            "error": "Command.Nack",
            "cause": "jammed",
            "handler_error": {"error": "Command.Nack", "cause": "no siren"},
        }


async def test_a_fail_state_is_not_handled_by_on_error() -> None:
    text = ON_ERROR.replace(
        "  done: {type: succeed, output: ok}", "  done: {type: fail, error: Check.Failed, cause: deliberate}"
    )
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("onerr", {})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error == {"error": "Check.Failed", "cause": "deliberate"}
        assert h.notifier.sent == []


# --- timeouts ------------------------------------------------------------------------------------------

HANG = """
id: hang
start_at: work
states:
  work:
    type: task
    timeout: 30s
    actions:
      - {type: log, message: before}
      - {type: command, device: dev, name: stuck}
    end: true
"""


async def test_a_task_timeout_cancels_an_action_that_never_returns() -> None:
    host = HangingHost()
    async with engine_harness(host=host) as h:
        await h.deploy(HANG)
        iid = await h.engine.start("hang", {})
        await h.clock.settle()
        assert len(host.commands) == 1
        await h.clock.advance(29)
        assert (await h.view(iid)).instance.status is Status.RUNNING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {
            "error": "States.Timeout",
            "cause": "the state did not finish within 30s",
        }
        assert host.cancelled == 1
        assert entries(view.history, "failed")[0].ts == T0 + 30


async def test_a_task_timeout_can_be_retried() -> None:
    text = HANG.replace(
        "    end: true",
        "    retry: [{errors: [States.Timeout], max_attempts: 2, interval: 5s}]\n    end: true",
    )
    host = HangingHost()
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("hang", {})
        await h.clock.advance(30)
        await h.clock.advance(5)
        await h.clock.settle()
        assert [c["id"] for c in host.commands] == [f"{iid}:work:0:1", f"{iid}:work:1:1"]
        await h.run(30)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "States.Timeout"
        assert entries(view.history, "failed")[0].ts == T0 + 65
        assert host.cancelled == 2


async def test_a_wait_state_timeout_fails_it() -> None:
    text = """
id: slowwait
start_at: pause
states:
  pause: {type: wait, seconds: 3600, timeout: 10m, next: done}
  done: {type: succeed}
"""
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("slowwait", {})
        await h.run(600)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "States.Timeout", "cause": "state timed out after 600s"}


async def test_the_instance_timeout_fails_a_waiting_instance() -> None:
    text = """
id: bounded
timeout: 1h
start_at: pause
states:
  pause:
    type: wait
    event: {type: never}
    next: done
  done: {type: succeed}
"""
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("bounded", {})
        await h.run(3599)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Workflow.Timeout", "cause": "instance ran over 3600s"}
        assert entries(view.history, "failed")[0].ts == T0 + 3600
        assert h.engine._waiters == {}


async def test_the_instance_timeout_stops_a_task_that_never_returns() -> None:
    text = HANG.replace("id: hang", "id: hang\ntimeout: 10s").replace("    timeout: 30s\n", "")
    host = HangingHost()
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("hang", {})
        await h.run(10)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "Workflow.Timeout"
        assert host.cancelled == 1


async def test_the_instance_timeout_cancels_running_branches() -> None:
    text = """
id: boundedpar
timeout: 5m
start_at: both
states:
  both:
    type: parallel
    branches:
      - start_at: a
        states:
          a: {type: wait, seconds: 1h, next: a2}
          a2: {type: task, actions: [{type: log, message: late}], end: true}
      - start_at: b
        states:
          b: {type: wait, event: {type: go}, end: true}
    end: true
"""
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("boundedpar", {})
        await h.run(300)
        assert (await h.view(iid)).instance.status is Status.FAILED
        children = [c for c in await h.engine.list() if c.parent_id == iid]
        assert {c.status for c in children} == {Status.CANCELLED}
        await h.run(3600)
        assert {c.status for c in await h.engine.list() if c.parent_id == iid} == {Status.CANCELLED}
        assert h.engine.instances == {}


# --- transition budgets --------------------------------------------------------------------------------

LOOP = """
id: loop
max_transitions_between_waits: 50
variables:
  n: {type: number, default: 0}
start_at: check
states:
  check:
    type: choice
    choices:
      - {when: n < 1000000, next: bump}
    default: done
  bump:
    type: task
    actions: [{type: set, values: {n: "{{ n + 1 }}"}}]
    next: check
  done: {type: succeed}
"""


async def test_a_runaway_loop_is_stopped_with_a_clear_cause() -> None:
    async with engine_harness() as h:
        await h.deploy(LOOP)
        iid = await h.engine.start("loop", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "States.TransitionBudgetExceeded"
        cause = view.instance.error["cause"]
        assert "more than 50 transitions without a wait" in cause
        assert "max_transitions_between_waits" in cause
        assert view.instance.transitions == 50
        assert view.instance.vars["n"] == 25


async def test_a_loop_that_waits_may_run_forever() -> None:
    text = LOOP.replace(
        "    next: check\n  done",
        "    next: pause\n  pause: {type: wait, seconds: 60, next: check}\n  done",
    ).replace("n < 1000000", "n < 200")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("loop", {})
        await h.run(200 * 60)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.vars["n"] == 200
        assert view.instance.transitions == 601


@pytest.mark.parametrize(
    "pause", ["{type: wait, seconds: 0, next: check}", "{type: wait, until: '{{ n }}', next: check}"]
)
async def test_a_loop_through_a_wait_that_is_already_due_is_stopped(pause: str) -> None:
    text = LOOP.replace("    next: check\n  done", f"    next: pause\n  pause: {pause}\n  done")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("loop", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "States.TransitionBudgetExceeded"
        assert view.instance.transitions == 50
        assert len(entries(view.history, "waiting")) == 17


async def test_max_transitions_bounds_a_whole_life() -> None:
    text = LOOP.replace(
        "    next: check\n  done",
        "    next: pause\n  pause: {type: wait, seconds: 60, next: check}\n  done",
    ).replace("max_transitions_between_waits: 50", "max_transitions: 30")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("loop", {})
        await h.run(3600)
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error == {
            "error": "States.TransitionBudgetExceeded",
            "cause": "the instance's budget of 30 transitions is spent",
        }
        assert instance.transitions == 30


GROW = """
id: grow
max_transitions_between_waits: 25
variables:
  text: {type: string, default: x}
start_at: double
states:
  double:
    type: task
    actions: [{type: set, values: {text: "{{ text ~ text }}"}}]
    next: double
"""


async def test_a_value_that_grows_without_bound_fails_its_action() -> None:
    # a loop that doubles a string would exhaust the gateway's memory: past 1 MiB of JSON the action fails
    async with engine_harness() as h:
        await h.deploy(GROW)
        iid = await h.engine.start("grow", {})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "States.ResultTooLarge"
        assert "more than 1048576" in view.instance.error["cause"]
        assert view.instance.transitions == 19
        assert len(view.instance.vars["text"]) == 2**19
        (failed,) = entries(view.history, "action_failed")
        assert failed.detail["error"] == "States.ResultTooLarge"


# --- http against a real server ------------------------------------------------------------------------


@dataclass
class Recorded:
    requests: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class Server:
    url: str
    recorded: Recorded


def _app(recorded: Recorded) -> Starlette:
    async def ok(request: Request) -> Response:
        body = await request.json() if await request.body() else None
        recorded.requests.append(
            {
                "path": request.url.path,
                "method": request.method,
                "body": body,
                "headers": dict(request.headers),
            }
        )
        return JSONResponse({"ok": True, "echo": body, "key": request.headers.get("idempotency-key")})

    async def flaky(request: Request) -> Response:
        name = request.path_params["name"]
        failures = int(request.query_params.get("failures", "2"))
        count = recorded.counters[name] = recorded.counters.get(name, 0) + 1
        recorded.requests.append(
            {"path": request.url.path, "key": request.headers.get("idempotency-key"), "count": count}
        )
        if count <= failures:
            return PlainTextResponse("overloaded", status_code=503)
        return JSONResponse({"attempts": count})

    async def missing(request: Request) -> Response:
        recorded.requests.append({"path": request.url.path})
        return PlainTextResponse("no such thing", status_code=404)

    async def slow(request: Request) -> Response:
        recorded.requests.append({"path": request.url.path})
        await request.body()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.receive(), 5)  # returns when the client hangs up
        return JSONResponse({"late": True})

    async def text(request: Request) -> Response:
        return PlainTextResponse("pong")

    return Starlette(
        routes=[
            Route("/ok", ok, methods=["GET", "POST", "PUT"]),
            Route("/hook", ok, methods=["POST"]),
            Route("/flaky/{name}", flaky, methods=["POST"]),
            Route("/missing", missing, methods=["POST"]),
            Route("/slow", slow, methods=["POST"]),
            Route("/text", text, methods=["GET"]),
            Route("/broken-hook", lambda r: PlainTextResponse("down", status_code=502), methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    recorded = Recorded()
    port = free_port()
    config = uvicorn.Config(
        _app(recorded), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(500):
        if uv.started:
            break
        threading.Event().wait(0.01)
    assert uv.started, "uvicorn did not start"
    try:
        yield Server(f"http://127.0.0.1:{port}", recorded)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def http_workflow(url: str, extra: str = "") -> str:
    return f"""
id: call
variables:
  reading: {{type: number, default: 42}}
start_at: call
states:
  call:
    type: task
    actions:
      - type: http
        url: "{url}"
        json: {{value: "{{{{ reading }}}}", unit: C}}
        timeout: 1s
        result_as: response
{extra}
    next: done
  done:
    type: succeed
    output: "{{{{ response }}}}"
"""


async def test_http_200_gives_status_and_body(server: Server) -> None:
    async with engine_harness() as h:
        await h.deploy(http_workflow(f"{server.url}/ok"))
        iid = await h.engine.start("call", {"reading": 21.5})
        await h.run()
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        key = f"{iid}:call:0:0"
        assert view.instance.output == {
            "status": 200,
            "body": {"ok": True, "echo": {"value": 21.5, "unit": "C"}, "key": key},
        }


async def test_http_text_body_and_get(server: Server) -> None:
    text = http_workflow(f"{server.url}/text").replace(
        '        json: {value: "{{ reading }}", unit: C}\n', "        method: GET\n"
    )
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("call", {})
        await h.run()
        assert (await h.view(iid)).instance.output == {"status": 200, "body": "pong"}


async def test_http_503_is_retried_with_the_same_key_per_attempt(server: Server) -> None:
    retry = "    retry: [{errors: [Http.Status], max_attempts: 4, interval: 1s}]"
    async with engine_harness() as h:
        await h.deploy(http_workflow(f"{server.url}/flaky/a503?failures=2", retry))
        iid = await h.engine.start("call", {})
        await h.run()
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        await h.run(2)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == {"status": 200, "body": {"attempts": 3}}
        failures = entries(view.history, "action_failed")
        assert [f.detail["error"] for f in failures] == ["Http.Status", "Http.Status"]
        assert failures[0].detail["details"] == {"status": 503, "body": "overloaded"}
        calls = [r for r in server.recorded.requests if r["path"] == "/flaky/a503"]
        assert [r["key"] for r in calls] == [f"{iid}:call:{n}:0" for n in range(3)]


async def test_http_404_is_not_retried(server: Server) -> None:
    retry = "    retry: [{errors: ['*'], max_attempts: 5}]"
    before = len([r for r in server.recorded.requests if r["path"] == "/missing"])
    async with engine_harness() as h:
        await h.deploy(http_workflow(f"{server.url}/missing", retry))
        iid = await h.engine.start("call", {})
        await h.run(60)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error is not None
        assert view.instance.error["error"] == "Http.Status"
        assert "answered 404" in view.instance.error["cause"]
        assert view.instance.error["details"] == {"status": 404, "body": "no such thing"}
        assert retry_waits(view.history) == []
    assert len([r for r in server.recorded.requests if r["path"] == "/missing"]) == before + 1


async def test_http_timeout(server: Server) -> None:
    text = http_workflow(f"{server.url}/slow").replace("timeout: 1s", "timeout: 200ms")
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("call", {})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error is not None
        assert instance.error["error"] == "Http.Timeout"
        assert "no answer in 0.2s" in instance.error["cause"]


async def test_http_connection_refused() -> None:
    async with engine_harness() as h:
        await h.deploy(http_workflow(f"http://127.0.0.1:{free_port()}/nothing"))
        iid = await h.engine.start("call", {})
        await h.run()
        instance = (await h.view(iid)).instance
        assert instance.status is Status.FAILED
        assert instance.error is not None
        assert instance.error["error"] == "Http.Connect"


async def test_webhook_notifier_posts_to_the_server(server: Server) -> None:
    text = """
id: alert
variables:
  t: {type: number, default: 91}
start_at: tell
states:
  tell:
    type: task
    actions:
      - type: notify
        channel: hook
        severity: critical
        message: "too hot: {{ t }}"
        data: {t: "{{ t }}", site: roof}
    end: true
"""
    async with httpx.AsyncClient() as client:
        hook = WebhookNotifier(f"{server.url}/hook", client)
        async with engine_harness(notifiers={"hook": hook}) as h:
            await h.deploy(text)
            iid = await h.engine.start("alert", {})
            await h.run()
            assert (await h.view(iid)).instance.status is Status.SUCCEEDED
    (posted,) = [r for r in server.recorded.requests if r["path"] == "/hook"]
    assert posted["body"] == {
        "message": "too hot: 91",
        "severity": "critical",
        "data": {"t": 91, "site": "roof"},
    }


async def test_webhook_notifier_failure_is_retryable(server: Server) -> None:
    text = """
id: alert
start_at: tell
states:
  tell:
    type: task
    actions:
      - {type: notify, channel: hook, message: hello}
    end: true
"""
    async with httpx.AsyncClient() as client:
        hook = WebhookNotifier(f"{server.url}/broken-hook", client)
        async with engine_harness(notifiers={"hook": hook}) as h:
            await h.deploy(text.replace("    end: true", "    retry: [{max_attempts: 2}]\n    end: true"))
            iid = await h.engine.start("alert", {})
            await h.run()
            await h.run(1)
            view = await h.view(iid)
            assert view.instance.status is Status.FAILED
            assert view.instance.error == {
                "error": "Notify.Webhook",
                "cause": f"{server.url}/broken-hook answered 502",
            }
            assert len(retry_waits(view.history)) == 1


# --- failures of parallel and map states ---------------------------------------------------------------

PARALLEL_TIMEOUT = """
id: partimeout
start_at: both
states:
  both:
    type: parallel
    timeout: 30s
    branches:
      - start_at: slow
        states:
          slow: {type: wait, seconds: 1h, next: late}
          late: {type: task, actions: [{type: command, device: late, name: x}], end: true}
      - start_at: quick
        states:
          quick: {type: succeed}
    catch:
      - {errors: [States.Timeout], next: gave_up}
    next: done
  done: {type: succeed, output: done}
  gave_up: {type: succeed, output: "{{ error.cause }}"}
"""


async def test_a_parallel_state_timeout_cancels_its_branches_and_is_caught() -> None:
    async with engine_harness() as h:
        await h.deploy(PARALLEL_TIMEOUT)
        iid = await h.engine.start("partimeout", {})
        await h.run(29)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert view.instance.output == "state timed out after 30s"
        children = {c.branch: c.status for c in await h.engine.list() if c.parent_id == iid}
        assert children == {0: Status.CANCELLED, 1: Status.SUCCEEDED}
        await h.run(3600)
        assert h.host.commands == []


MAP_FAILING = """
id: mapfail
variables:
  devices: {type: list, required: true}
start_at: each
states:
  each:
    type: map
    items: devices
    max_concurrency: 1
    iterator:
      start_at: send
      states:
        send:
          type: task
          actions: [{type: command, device: "{{ item }}", name: x}]
          end: true
    retry: [{errors: [States.BranchFailed], max_attempts: 2, interval: 10s}]
    end: true
"""


async def test_a_failing_map_item_stops_the_rest_and_the_map_state_can_retry() -> None:
    host = ScriptedHost(failures={"bad": [ActionError("Command.Invalid", "no", retryable=False)]})
    async with engine_harness(host=host) as h:
        await h.deploy(MAP_FAILING)
        iid = await h.engine.start("mapfail", {"devices": ["a", "bad", "c", "d"]})
        await h.run()
        assert [c["device"] for c in host.commands] == ["a", "bad"]
        view = await h.view(iid)
        assert view.instance.status is Status.WAITING
        assert view.instance.wait is not None
        assert view.instance.wait.kind == "retry"
        await h.run(10)  # the second attempt runs every item again, with new child instances
        view = await h.view(iid)
        assert view.instance.status is Status.SUCCEEDED
        assert [c["device"] for c in host.commands] == ["a", "bad", "a", "bad", "c", "d"]
        children = [c for c in await h.engine.list(limit=100) if c.parent_id == iid]
        assert len(children) == 6
        assert len({c.id for c in children}) == 6


async def test_the_instance_timeout_fires_during_a_retry_wait() -> None:
    text = RETRY.replace("id: retry", "id: retry\ntimeout: 10s").replace(
        "      - {}", "      - {interval: 1m}"
    )
    host = ScriptedHost(failures={"dev": [nack()]})
    async with engine_harness(host=host) as h:
        await h.deploy(text)
        iid = await h.engine.start("retry", {})
        await h.run(10)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "Workflow.Timeout", "cause": "instance ran over 10s"}
        await h.run(60)
        assert len(host.commands) == 1


RETRIED_TIMEOUT = """
id: retriedtimeout
variables:
  fail_after: {type: number, default: 3600}
start_at: both
states:
  both:
    type: parallel
    timeout: 30s
    retry: [{errors: ['*'], max_attempts: 2, interval: 1s}]
    branches:
      - start_at: slow
        states:
          slow: {type: wait, until: "{{ instance.started_at + fail_after }}", next: broken}
          broken: {type: fail, error: Branch.Broke}
    next: done
  done: {type: succeed}
"""


async def test_each_attempt_of_a_retried_state_gets_the_whole_timeout() -> None:
    async with engine_harness() as h:
        await h.deploy(RETRIED_TIMEOUT)
        iid = await h.engine.start("retriedtimeout", {})
        await h.run(30)
        await h.run(1)
        await h.run(29)
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(1)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "States.Timeout", "cause": "state timed out after 30s"}
        assert entries(view.history, "failed")[0].ts == T0 + 61


async def test_the_timeout_of_an_earlier_attempt_does_not_cut_a_retry_short() -> None:
    # the first attempt's branch fails after 5 s; the second attempt's branch would wait an hour
    text = RETRIED_TIMEOUT.replace(
        "instance.started_at + fail_after",
        "instance.started_at + (5 if instance.started_at == fail_after else 3600)",
    )
    async with engine_harness() as h:
        await h.deploy(text)
        iid = await h.engine.start("retriedtimeout", {"fail_after": T0})
        await h.run(5)  # the first attempt fails at +5; the second starts at +6 with a deadline at +36
        await h.run(1)
        await h.run(24)  # +30: the first attempt's deadline passes
        assert (await h.view(iid)).instance.status is Status.WAITING
        await h.run(6)
        view = await h.view(iid)
        assert view.instance.status is Status.FAILED
        assert view.instance.error == {"error": "States.Timeout", "cause": "state timed out after 30s"}
        assert entries(view.history, "failed")[0].ts == T0 + 36
        assert [e.detail["error"] for e in entries(view.history, "waiting")] == ["States.BranchFailed"]
