"""Property tests: random valid workflow definitions never crash the engine.

A strategy builds random definitions using every state type, action kinds, retry and catch clauses, timeouts,
``on_error`` and loops. Each one runs on a fake clock against a host whose commands fail, crash or take time as a
seeded random generator decides. Instances are started with random variables and fed random events, signals,
cancellations and clock steps, with a restart in the middle for the second property. Whenever the engine is
idle, every instance (children included) must be terminal or waiting, saved exactly as it is live, with a
coherent error and an ordered history, and nothing may be lost.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workflows.engine_factories import T0, counter_ids
from workflows.clock import FakeClock
from workflows.dryrun import RecordingHost, RecordingNotifier
from workflows.errors import ActionError, InstanceStateError
from workflows.events import Event
from workflows.instance import HistoryEntry, Instance, Status
from workflows.loader import LoadedWorkflow, load_workflow
from workflows.runtime import Engine
from workflows.store import MemoryStore

WORKFLOW_ID = "prop"
VARIABLES = {
    "a": {"type": "number", "default": 0},
    "b": {"type": "number", "default": 1},
    "items": {"type": "list", "default": [1, 2]},
    "dev": {"type": "string", "default": "d0"},
}
DEVICES = ("d0", "d1")
WAITED_EVENTS = ("ping", "pong", "workflow.succeeded", "workflow.failed")
FED_EVENTS = ("ping", "pong", "kick", "other")
SAVES_CAP = 1500
"""Saves after which the clock stops moving: a loop that waits a second for days would run for minutes."""
ECHOED = 4
"""Emitted events fed back per ``echo``: each ``kick`` may start an instance that emits more."""
SAVES_PER_TRANSITION = 30
"""More saves than an instance makes per transition (retries, forks, joined children) while the clock stands
still: past ``SAVES_PER_TRANSITION * (max_transitions_between_waits + 1)`` it is spinning without end."""

# --- the definition strategy ----------------------------------------------------------------------------

durations = st.sampled_from([0, 1, 5, 30, 90, 600, "15m", 3600, "6h", "1d"])
small_ints = st.integers(-2, 8)
messages = st.sampled_from(
    [
        "plain text",
        "a={{ a }} b={{ b }}",
        "{{ result | truncate(60) }}",  # kept short: a loop that logs its last result would double it
        "{{ instance.state }} at {{ now() }}",
        "{{ error.cause }}",  # undefined until a catch or on_error stores an error
        "{{ vars.r0 }}",  # undefined until an action stores r0
    ]
)
conditions = st.builds(
    str.format,
    st.sampled_from(
        [
            "a > {}",
            "a + b <= {}",
            "a % 3 == {}",
            "b - a >= {}",
            "a > b or b > {}",
            "not (a < {}) and b != 0",
            "a is defined and a * 2 < {}",
            "items | length > {}",
            "vars.r0 is defined and a > {}",
        ]
    ),
    small_ints,
)
set_values = {
    "a": st.sampled_from(["{{ a + 1 }}", "{{ a - b }}", "{{ b * 2 }}", "{{ a % 5 }}", 7]),
    "b": st.sampled_from(["{{ b + a }}", "{{ b * 2 }}", 3, "{{ 10 - b }}"]),
    "items": st.sampled_from(["{{ [a, b] }}", "{{ items[1:] }}", [], [1, 2, 3]]),
}
error_patterns = st.lists(
    st.sampled_from(
        [
            "*",
            "States.ALL",
            "Command.*",
            "Command.Nack",
            "States.Timeout",
            "States.TaskFailed",
            "States.BranchFailed",
            "States.ExpressionFailed",
            "Notify.*",
        ]
    ),
    min_size=1,
    max_size=2,
)


def optional(draw: st.DrawFn, target: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Set ``target[key]`` to a drawn value, or leave it out."""
    if draw(st.booleans()):
        target[key] = draw(strategy)


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["set", "log", "notify", "command", "command", "emit"]))
    action: dict[str, Any] = {"type": kind}
    if kind == "set":
        keys = draw(st.lists(st.sampled_from(sorted(set_values)), min_size=1, max_size=2, unique=True))
        action["values"] = {key: draw(set_values[key]) for key in keys}
    elif kind == "log":
        action["message"] = draw(messages)
    elif kind == "notify":
        action["message"] = draw(messages)
        action["channel"] = draw(st.sampled_from(["log", "pager"]))
        optional(draw, action, "severity", st.sampled_from(["info", "warning", "critical"]))
    elif kind == "command":
        action["device"] = draw(st.sampled_from(["{{ dev }}", "d1"]))
        action["name"] = "ping"
        optional(draw, action, "params", st.just({"level": "{{ a }}"}))
        optional(draw, action, "await_ack", st.booleans())
    else:
        action["event"] = draw(st.sampled_from(["ping", "pong", "kick"]))
        optional(draw, action, "data", st.just({"n": "{{ a }}"}))
        optional(draw, action, "device", st.just("{{ dev }}"))
    optional(draw, action, "result_as", st.sampled_from(["r0", "r1"]))
    return action


retry_policies = st.fixed_dictionaries(
    {},
    optional={
        "errors": error_patterns,
        "max_attempts": st.integers(1, 4),
        "interval": st.sampled_from([0, 1, 10, 60, "5m"]),
        "backoff_rate": st.sampled_from([1, 1.5, 2, 3]),
        "max_delay": st.sampled_from([5, 120]),
        "jitter": st.sampled_from([0, 0.2, 0.9]),
    },
)


def end_or_next(draw: st.DrawFn, targets: list[str]) -> dict[str, Any]:
    if not targets or draw(st.integers(0, 4)) == 0:
        return {"end": True}
    return {"next": draw(st.sampled_from(targets))}


def recovery(draw: st.DrawFn, state: dict[str, Any], targets: list[str]) -> None:
    """Optional ``retry`` and ``catch`` clauses."""
    optional(draw, state, "retry", st.lists(retry_policies, min_size=1, max_size=2))
    if targets and draw(st.booleans()):
        state["catch"] = [
            {"errors": draw(error_patterns), "next": draw(st.sampled_from(targets)), "result_as": "err"}
            if draw(st.booleans())
            else {"errors": draw(error_patterns), "next": draw(st.sampled_from(targets))}
            for _ in range(draw(st.integers(1, 2)))
        ]


@st.composite
def event_waits(draw: st.DrawFn, targets: list[str]) -> dict[str, Any]:
    result_as = draw(st.sampled_from(["event", "ev"]))
    wait: dict[str, Any] = {"type": draw(st.sampled_from(WAITED_EVENTS))}
    if result_as != "event" or draw(st.booleans()):
        wait["result_as"] = result_as
    optional(
        draw,
        wait,
        "condition",
        st.sampled_from(
            [
                f"{result_as}.data.n > a",
                f"{result_as}.device_id == dev",
                f"{result_as}.data.n >= b and {result_as}.device_id == dev",
                f"{result_as}.data.n is defined",
                f"{result_as}.data.n % 2 == 0",
            ]
        ),
    )
    if draw(st.booleans()):
        wait["timeout"] = draw(durations)
        if targets:
            optional(draw, wait, "on_timeout", st.sampled_from(targets))
    return wait


@st.composite
def states(draw: st.DrawFn, targets: list[str], depth: int) -> dict[str, Any]:
    """One state whose transitions go to ``targets``; ``depth`` bounds nesting of parallel and map."""
    kinds = ["task", "task", "wait", "succeed", "fail"]
    if targets:
        kinds.append("choice")
    if depth < 2 and (depth == 0 or draw(st.integers(0, 3)) == 0):
        kinds += ["parallel", "map"]
    kind = draw(st.sampled_from(kinds))
    state: dict[str, Any] = {"type": kind}
    if kind == "task":
        state["actions"] = draw(st.lists(actions(), min_size=1, max_size=3))
        state.update(end_or_next(draw, targets))
        recovery(draw, state, targets)
    elif kind == "choice":
        state["choices"] = [
            {"when": draw(conditions), "next": draw(st.sampled_from(targets))}
            for _ in range(draw(st.integers(1, 3)))
        ]
        state["default"] = draw(st.sampled_from(targets))
    elif kind == "wait":
        how = draw(st.sampled_from(["seconds", "until", "event", "event"]))
        if how == "seconds":
            state["seconds"] = draw(durations)
        elif how == "until":
            state["until"] = draw(
                st.sampled_from(
                    [
                        "{{ now() + 120 }}",
                        "{{ now() }}",
                        "{{ a }}",  # long past: fires at once
                        "2023-11-15T06:00:00Z",
                        "{{ instance.started_at + 7200 }}",
                        "{{ dev }}",  # not a time: States.ExpressionFailed
                    ]
                )
            )
        else:
            state["event"] = draw(event_waits(targets))
        state.update(end_or_next(draw, targets))
    elif kind in ("parallel", "map"):
        if kind == "parallel":
            state["branches"] = [draw(machines(depth + 1)) for _ in range(draw(st.integers(1, 3)))]
        else:
            state["items"] = draw(st.sampled_from(["items", "items", "[a, b]", "a"]))
            state["iterator"] = draw(machines(depth + 1))
            optional(draw, state, "max_concurrency", st.integers(1, 3))
            optional(draw, state, "item_as", st.just("it"))
        optional(draw, state, "result_as", st.sampled_from(["joined", "r1"]))
        state.update(end_or_next(draw, targets))
        recovery(draw, state, targets)
    elif kind == "succeed":
        optional(draw, state, "output", st.sampled_from(["{{ a }}", {"sum": "{{ a + b }}"}, "{{ error }}"]))
    else:
        optional(draw, state, "error", st.sampled_from(["Custom.Failed", "States.Timeout"]))
        optional(draw, state, "cause", st.sampled_from(["gave up", "{{ a }}"]))
    optional(draw, state, "timeout", durations)
    return state


@st.composite
def machines(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    """A parallel branch or map iterator: 1-3 states, transitions only forward (a branch is small, loop-free)."""
    names = [f"b{i}" for i in range(draw(st.integers(1, 3)))]
    return {
        "start_at": names[0],
        "states": {name: draw(states(names[i + 1 :], depth)) for i, name in enumerate(names)},
    }


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    names = [f"s{i}" for i in range(draw(st.integers(2, 12)))]
    definition: dict[str, Any] = {
        "id": WORKFLOW_ID,
        "version": "1.0.0",
        "variables": VARIABLES,
        "start_at": names[0],
        "states": {name: draw(states(names, 0)) for name in names},
    }
    if draw(st.booleans()):
        handler: dict[str, Any] = {"actions": draw(st.lists(actions(), max_size=2))}
        optional(draw, handler, "next", st.sampled_from(names))
        definition["on_error"] = handler
    optional(draw, definition, "timeout", st.sampled_from(["30m", 3600, "12h", "1d", "2d"]))
    # the default (1000) lets a loop through a parallel state fork a thousand times: costly, so less often
    budget = draw(st.none() | st.integers(1, 8) | st.integers(9, 100) | st.integers(9, 100))
    if budget is not None:
        definition["max_transitions_between_waits"] = budget
    if draw(st.integers(0, 3)) == 0:
        definition["triggers"] = [
            {"type": "event", "event": "kick", "variables": {"a": "{{ event.data.n }}"}}
        ]
    return definition


start_variables = st.fixed_dictionaries(
    {},
    optional={
        "a": small_ints,
        "b": small_ints,
        "items": st.lists(small_ints, max_size=4),
        "dev": st.sampled_from(DEVICES),
    },
)
operations = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0, 1, 7, 45, 300, 3600, 5 * 3600, 86400])),
    st.tuples(
        st.just("event"),
        st.sampled_from(FED_EVENTS),
        st.none() | small_ints,
        st.none() | st.sampled_from(DEVICES),
    ),
    st.tuples(st.just("signal"), st.integers(0, 50), st.sampled_from(WAITED_EVENTS), small_ints),
    st.tuples(st.just("cancel"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("echo")),
)


@dataclass(frozen=True)
class Scenario:
    source: str
    starts: list[dict[str, Any]]
    operations: list[tuple[Any, ...]]
    horizon: float
    seed: int


scenarios = st.builds(
    Scenario,
    source=definitions().map(lambda d: yaml.safe_dump(d, sort_keys=False)),
    starts=st.lists(start_variables, min_size=1, max_size=3),
    operations=st.lists(operations, max_size=12),
    horizon=st.sampled_from([86400.0, 2 * 86400.0, 3 * 86400.0]),
    seed=st.integers(0, 2**32 - 1),
)

# --- the host -------------------------------------------------------------------------------------------


@dataclass
class FlakyHost(RecordingHost):
    """Commands fail (retryable or not), crash or take time on the clock, as the seeded ``rng`` decides;
    ``slow`` holds the deadlines of the commands in flight."""

    rng: random.Random = field(default_factory=random.Random)
    clock: FakeClock = field(default_factory=FakeClock)
    slow: list[float] = field(default_factory=list)

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
        roll = self.rng.random()
        if roll < 0.2:
            error = self.rng.choice(["Command.Nack", "Command.Timeout"])
            raise ActionError(error, "the device did not take it", retryable=self.rng.random() < 0.7)
        if roll < 0.25:
            raise RuntimeError("the host broke")  # States.TaskFailed
        if roll < 0.5 and await_ack:
            deadline = self.clock.now() + self.rng.choice([1.0, 20.0, 300.0])
            self.slow.append(deadline)
            try:
                await self.clock.sleep_until(deadline)
            finally:
                self.slow.remove(deadline)
        return result


@dataclass
class FlakyNotifier(RecordingNotifier):
    rng: random.Random = field(default_factory=random.Random)

    async def notify(self, message: str, *, severity: str, data: Any) -> None:
        if self.rng.random() < 0.3:
            raise ActionError("Notify.Pager", "the pager is down", retryable=self.rng.random() < 0.5)
        await super().notify(message, severity=severity, data=data)


# --- the driver -----------------------------------------------------------------------------------------


def unsettled(instance: Instance, now: float) -> bool:
    """Running, or waiting for a deadline that has passed (its timer has yet to fire)."""
    if instance.status is Status.RUNNING:
        return True
    wait = instance.wait
    overdue = wait is not None and wait.deadline is not None and wait.deadline <= now
    return overdue or (instance.deadline is not None and instance.deadline <= now)


class Livelock(AssertionError):
    """An instance keeps saving while the clock stands still: it spins without end."""


class ObservedStore(MemoryStore):
    """A ``MemoryStore`` that shows each save's instances to ``observe``."""

    def __init__(self, observe: Callable[[Sequence[Instance]], None]) -> None:
        super().__init__()
        self.observe = observe

    async def save(
        self,
        instances: Sequence[Instance],
        history: Sequence[HistoryEntry],
        states: Sequence[tuple[str, str, Any]] = (),
    ) -> None:
        await super().save(instances, history, states)
        self.observe(instances)


class Run:
    """One scenario: the store, clock, host and engine, with the invariant checks."""

    def __init__(self, scenario: Scenario, loaded: LoadedWorkflow, http: httpx.AsyncClient) -> None:
        self.scenario = scenario
        self.http = http
        self.rng = random.Random(scenario.seed)
        self.clock = FakeClock(T0)
        self.host = FlakyHost(rng=self.rng, clock=self.clock)
        self.store = ObservedStore(self._saved)
        self.ids = counter_ids()
        self.started: list[str] = []
        self.ended: dict[str, Status] = {}
        self.echoed = 0
        budget = loaded.workflow.definition.max_transitions_between_waits
        self.spin_limit = SAVES_PER_TRANSITION * (budget + 1)
        self.still_saves: dict[str, int] = {}
        self.still_since = self.clock.now()
        self.spinning: str | None = None
        self.driver = asyncio.current_task()
        self.engine: Engine

    def _saved(self, instances: Sequence[Instance]) -> None:
        """Count each instance's saves while the clock stands still; stop the run when one spins."""
        if self.clock.now() != self.still_since:
            self.still_since = self.clock.now()
            self.still_saves.clear()
        for instance in instances:
            saves = self.still_saves[instance.id] = self.still_saves.get(instance.id, 0) + 1
            if saves > self.spin_limit and self.spinning is None and self.driver is not None:
                self.spinning = instance.id
                self.driver.cancel()

    def open_engine(self) -> Engine:
        return Engine(
            store=self.store,
            host=self.host,
            clock=self.clock,
            notifiers={"log": RecordingNotifier(), "pager": FlakyNotifier(rng=self.rng)},
            http=self.http,
            ids=self.ids,
            rng=random.Random(self.scenario.seed),
        )

    async def restart(self) -> None:
        """Close the engine wherever it is, then open a new one on the same store, at the same time."""
        before = set(self.store.instances)
        await self.engine.__aexit__(None, None, None)
        self.clock = FakeClock(self.clock.now())
        self.host.clock = self.clock
        assert not self.host.slow
        self.engine = await self.open_engine().__aenter__()
        assert before <= set(self.store.instances)

    async def _pump(self, stop: asyncio.Event) -> None:
        """Move the clock to the end of each slow command in flight (the driver waits for it to finish), until
        ``stop`` is set; a clock step is never cut short, or sleepers it has passed would be left asleep."""
        while not stop.is_set():
            await self.clock.settle()
            if self.host.slow:
                await self.clock.advance_to(min(self.host.slow))

    async def quiesce(self) -> None:
        """``engine.idle()``, then let due timers fire, until no instance is running or overdue (or, for one
        that nothing drives any more, until rounds stop saving anything: the invariants then report it)."""
        still = 0
        while still < 10:
            saves = self.store.saves
            stop = asyncio.Event()
            pump = asyncio.ensure_future(self._pump(stop))
            try:
                await self.engine.idle()
            finally:
                stop.set()
                await pump
            await self.clock.settle()
            now = self.clock.now()
            if not any(unsettled(i, now) for i in self.engine.instances.values()):
                return
            still = still + 1 if self.store.saves == saves else 0

    async def advance_to(self, target: float) -> None:
        """Move the clock to ``target`` one deadline at a time, idle at each (until ``SAVES_CAP``)."""
        engine = self.engine
        while self.clock.now() < target and self.store.saves < SAVES_CAP:
            now = self.clock.now()
            upcoming = [
                deadline
                for instance in engine.instances.values()
                for deadline in (
                    instance.deadline,
                    instance.state_deadline,
                    instance.wait.deadline if instance.wait else None,
                )
                if deadline is not None and deadline > now
            ]
            await self.clock.advance_to(min([target, *upcoming]))
            await self.quiesce()

    async def start(self) -> None:
        engine = self.engine
        for variables in self.scenario.starts:
            self.started.append(await engine.start(WORKFLOW_ID, variables))

    async def operate(self, operation: tuple[Any, ...]) -> None:
        engine = self.engine
        kind = operation[0]
        if kind == "advance":
            await self.advance_to(self.clock.now() + operation[1])
        elif kind == "event":
            _, event_type, n, device = operation
            data = {} if n is None else {"n": n}
            self.started += await engine.handle(
                Event(event_type, data, device_id=device, ts=self.clock.now())
            )
        elif kind == "echo":  # feed the next few events the workflow emitted back to the engine
            for event in self.host.emitted[self.echoed : self.echoed + ECHOED]:
                self.started += await engine.handle(event)
            self.echoed = min(len(self.host.emitted), self.echoed + ECHOED)
        else:
            ids = sorted(self.store.instances)
            target = ids[operation[1] % len(ids)]
            try:
                if kind == "signal":
                    await engine.signal(target, Event(operation[2], {"n": operation[3]}))
                else:
                    await engine.cancel(target, "by the property test", terminate=operation[2])
            except InstanceStateError:
                assert target not in engine.instances
                stored = await self.store.get(target)
                assert stored is not None
                assert stored.status.terminal

    async def check(self) -> None:
        """The invariants of an idle engine."""
        engine = self.engine
        assert self.spinning is None
        stored = {instance.id: instance for instance in await self.store.list(limit=1_000_000)}
        assert set(self.started) <= set(stored), "a started instance is not in the store"
        assert set(engine.instances) <= set(stored), "a live instance was never saved"
        for instance_id, saved in stored.items():
            live = engine.instances.get(instance_id)
            status = saved.status
            assert status is not Status.RUNNING, f"{instance_id} is still running when the engine is idle"
            assert live is None or not unsettled(live, self.clock.now()), (
                f"{instance_id}: a deadline never fired"
            )
            view = await engine.get(instance_id)
            stamps = [entry.ts for entry in view.history]
            assert stamps == sorted(stamps), f"{instance_id}: history goes back in time"
            if status is Status.WAITING:
                assert live is not None, f"{instance_id} waits in the store but the engine lost it"
                assert live.to_record() == saved.to_record(), f"{instance_id}: saved state differs from live"
                assert saved.wait is not None, f"{instance_id} waits for nothing"
                if saved.wait.kind == "join":
                    assert saved.join is not None, f"{instance_id} joins no children"
                    for child in saved.join.running:
                        assert child in engine.instances, f"{instance_id} waits for {child}, which is gone"
                continue
            assert status.terminal
            assert live is None, f"{instance_id} ended but is still live"
            if status is Status.FAILED:
                error = saved.error or {}
                assert isinstance(error.get("error"), str), f"{instance_id} failed without an error name"
                assert isinstance(error.get("cause"), str), f"{instance_id} failed without a cause"
            assert (saved.error or {}).get("error") != "Engine.Fault", f"engine fault: {saved.error}"
            assert self.ended.setdefault(instance_id, status) is status, f"{instance_id} ended twice"


async def run_scenario(scenario: Scenario, *, restart_at: int | None = None, turns: int = 0) -> None:
    loaded = load_workflow("prop.yaml", text=scenario.source)  # the strategy only makes valid definitions
    unhandled: list[dict[str, Any]] = []  # what asyncio reports: a task's exception nobody retrieved, ...
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unhandled.append(context))
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204))) as http:
        run = Run(scenario, loaded, http)
        try:
            run.engine = await run.open_engine().__aenter__()
            try:
                await drive(run, loaded, restart_at=restart_at, turns=turns)
            finally:
                await run.engine.__aexit__(None, None, None)
        except asyncio.CancelledError:
            if run.spinning is not None:
                raise Livelock(f"{run.spinning} saved {run.spin_limit} times without time passing") from None
            raise
    gc.collect(1)  # a task dropped with an exception reports it when collected
    assert unhandled == [], [f"{c.get('message')}: {c.get('exception')!r}" for c in unhandled]


async def drive(run: Run, loaded: LoadedWorkflow, *, restart_at: int | None, turns: int) -> None:
    """Start, operate, (restart,) run to the horizon, checking the invariants at every idle point."""
    await run.engine.deploy(loaded)
    await run.start()
    await run.quiesce()
    await run.check()
    for index, operation in enumerate(run.scenario.operations):
        await run.operate(operation)
        if index == restart_at:
            for _ in range(turns):  # mid-run: instances may be executing
                await asyncio.sleep(0)
            await run.restart()
        await run.quiesce()
        await run.check()
    if restart_at is not None and restart_at >= len(run.scenario.operations):
        await run.restart()
    await run.advance_to(T0 + run.scenario.horizon)
    await run.quiesce()
    await run.check()


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(scenario=scenarios)
def test_random_definitions_come_to_rest_consistently(scenario: Scenario) -> None:
    asyncio.run(run_scenario(scenario))


@PROPERTY
@given(scenario=scenarios, restart_at=st.integers(0, 12), turns=st.integers(0, 40))
def test_random_definitions_survive_a_restart(scenario: Scenario, restart_at: int, turns: int) -> None:
    asyncio.run(run_scenario(scenario, restart_at=restart_at, turns=turns))
