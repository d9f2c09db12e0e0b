"""The workflow engine: deploys definitions, starts instances, runs them state by state, and keeps its promises
across restarts.

Durability. An instance is saved after every transition (and when it starts, waits or ends), together with the
history entries since its last save, through ``InstanceStore.save`` — one transaction, group-committed with
other instances' saves. Every deadline (a wait's end, an event wait's timeout, a retry's delay, a state or
instance timeout) is computed once, saved with the instance, and re-armed from the saved value after a
restart, so it fires at its original time. An instance that was running a state when the process died runs that
state again on restart with the same attempt number, so its actions carry the same idempotency keys.

Versions. Each deployed (id, version) and its source text are stored; an instance always runs the version it
started with. Deploying a new version changes what new instances start, never a running one.

Determinism. Time comes from the injected clock, ids from the injected id source (or are derived from the
parent instance), jitter from the injected random generator. Execution of one state is dispatched through a
table (``steps.py``) and traced into the instance's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import random
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from croniter import croniter

from fieldline.tasks import cancel_and_wait
from workflows.actions import ActionRegistry, Host, LogNotifier, Notifier
from workflows.clock import Clock, SystemClock
from workflows.compiler import CompiledTrigger, Workflow
from workflows.definition import (
    DeviceStateTrigger,
    EventTrigger,
    MessageTrigger,
    ScheduleTrigger,
    VariableSpec,
)
from workflows.errors import (
    EvaluationError,
    InstanceNotFound,
    InstanceStateError,
    WorkflowError,
)
from workflows.events import DEVICE_STATE, MQTT_MESSAGE, Event
from workflows.expressions import scope_function
from workflows.instance import HistoryEntry, Instance, Status
from workflows.loader import LoadedWorkflow, load_workflow
from workflows.steps import Stepper, plain
from workflows.store import InstanceStore, StoredDefinition
from workflows.timers import TimerQueue
from workflows.topics import matches

log = logging.getLogger("fieldline.workflows")

_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
}


class WorkflowNotFound(WorkflowError):
    """Raised when starting a workflow id (or version) that is not deployed."""

    def __init__(self, workflow_id: str, version: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"workflow {workflow_id!r}{f' version {version}' if version else ''} is not deployed"
        )


class VariableError(WorkflowError):
    """Raised when the variables given to start an instance do not match the workflow's declarations."""

    def __init__(self, workflow_id: str, problems: list[str]) -> None:
        self.workflow_id = workflow_id
        self.problems = problems
        super().__init__(f"workflow {workflow_id!r}: " + "; ".join(problems))


class VersionConflict(WorkflowError):
    """Raised when a version already deployed is deployed again with different content."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    instance: Instance
    history: list[HistoryEntry]


@dataclass
class EngineStats:
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    transitions: int = 0
    actions: int = 0
    action_errors: int = 0
    retries: int = 0
    events_delivered: int = 0
    signals_buffered: int = 0
    signals_dropped: int = 0
    trigger_errors: int = 0
    emit_errors: int = 0


class Engine:
    """Runs workflow instances. Use as an async context manager; no I/O happens before ``__aenter__``."""

    def __init__(
        self,
        *,
        store: InstanceStore,
        host: Host,
        clock: Clock | None = None,
        registry: ActionRegistry | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        http: httpx.AsyncClient | None = None,
        ids: Callable[[], str] | None = None,
        rng: random.Random | None = None,
        inbox_limit: int = 100,
    ) -> None:
        self.store = store
        self.host = host
        self.clock = clock or SystemClock()
        self.registry = registry or ActionRegistry()
        self.notifiers: dict[str, Notifier] = {"log": LogNotifier(), **(notifiers or {})}
        self._http = http
        self._own_http = http is None
        self.ids = ids or (lambda: uuid.uuid4().hex)
        self.rng = rng or random.Random()
        self.inbox_limit = inbox_limit
        self.stats = EngineStats()
        self.workflows: dict[tuple[str, str], Workflow] = {}
        self.latest: dict[str, str] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self.broken: dict[tuple[str, str], str] = {}
        """Stored versions that no longer compile (their instances fail with this reason)."""
        self.instances: dict[str, Instance] = {}
        """Active (non-terminal) instances."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[tuple[str, str | None], set[str]] = {}
        """Event waits by (event type, device id or None for waits that are not tied to one device)."""
        self._pending: dict[str, list[HistoryEntry]] = {}
        self._schedules: dict[str, dict[str, Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._timers = TimerQueue(self.clock, self._on_timer)
        self._timer_task: asyncio.Task[None] | None = None
        self.now_function = scope_function(self.clock.now)
        self.steps = Stepper(self)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.store.open()
        if self._http is None:
            self._http = httpx.AsyncClient()
        for stored in await self.store.definitions():
            key = (stored.workflow_id, stored.version)
            try:
                loaded = load_workflow(
                    f"<{stored.workflow_id}@{stored.version}>", self.registry, text=stored.source
                )
            except WorkflowError as exc:
                self.broken[key] = str(exc)
                continue
            self.workflows[key] = loaded.workflow
            self._sources[key] = stored.source
            self.latest[stored.workflow_id] = stored.version
        self._schedules = await self.store.get_states("schedules")
        for workflow_id, version in self.latest.items():
            self._arm_schedules(self.workflows[(workflow_id, version)])
        resume = []
        for instance in await self.store.load_active():
            self.instances[instance.id] = instance
            self._arm(instance)
            if instance.status is Status.RUNNING:
                resume.append(instance)
        self._timer_task = asyncio.create_task(self._timers.run(), name="workflow-timers")
        for instance in sorted(resume, key=lambda i: i.created_at):
            self._spawn(instance)
        for instance in list(self.instances.values()):
            if instance.status is Status.WAITING and instance.join is not None:
                await self.steps.resume_join(instance)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tasks = [*self._tasks.values(), *self._background]
        if self._timer_task is not None:
            tasks.append(self._timer_task)
        await cancel_and_wait(*tasks)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        await self.store.close()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the engine is not running (use `async with Engine(...)`)")
        return self._http

    async def idle(self) -> None:
        """Wait until no instance is executing (they may still be waiting on timers or events)."""
        while self._tasks or self._background:
            await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)

    # --- definitions ----------------------------------------------------------------------------------

    async def deploy(self, loaded: LoadedWorkflow) -> Workflow:
        """Store and activate a version; new instances start on it, running ones keep theirs."""
        workflow = loaded.workflow
        key = (workflow.id, workflow.version)
        previous = self._sources.get(key)
        if previous is not None and previous != loaded.source:
            raise VersionConflict(
                f"workflow {workflow.id!r} version {workflow.version} is already deployed with different "
                "content: give the change a new version"
            )
        await self.store.put_definition(
            StoredDefinition(workflow.id, workflow.version, loaded.source, self.clock.now())
        )
        self.workflows[key] = workflow
        self._sources[key] = loaded.source
        self.latest[workflow.id] = workflow.version
        self._arm_schedules(workflow)
        return workflow

    def workflow(self, instance: Instance) -> Workflow:
        workflow = self.workflows.get((instance.workflow_id, instance.version))
        if workflow is None:
            reason = self.broken.get((instance.workflow_id, instance.version), "definition not stored")
            raise WorkflowNotFound(instance.workflow_id, f"{instance.version} ({reason})")
        return workflow

    # --- starting -------------------------------------------------------------------------------------

    async def start(
        self,
        workflow_id: str,
        variables: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        event: Event | None = None,
        request_id: str | None = None,
        trigger: str = "api",
    ) -> str:
        """Start an instance and return its id. With ``request_id`` the call is idempotent: the same id starts
        one instance however often it is repeated (an action re-run after a restart)."""
        version = version or self.latest.get(workflow_id)
        workflow = self.workflows.get((workflow_id, version or ""))
        if workflow is None:
            raise WorkflowNotFound(workflow_id, version)
        instance_id = self.ids()
        if request_id is not None:
            instance_id = hashlib.sha256(request_id.encode()).hexdigest()[:24]
            if instance_id in self.instances or await self.store.get(instance_id) is not None:
                return instance_id
        values = bind_variables(workflow, dict(variables or {}))
        now = self.clock.now()
        definition = workflow.definition
        instance = Instance(
            id=instance_id,
            workflow_id=workflow.id,
            version=workflow.version,
            status=Status.RUNNING,
            state=definition.start_at,
            created_at=now,
            updated_at=now,
            vars=values,
            event=event.as_dict() if event else None,
            device=_device(event),
            state_entered_at=now,
            deadline=now + definition.timeout if definition.timeout else None,
        )
        self.record(instance, "started", {"trigger": trigger, "variables": plain(values)})
        self.steps.enter(instance, workflow)
        self.stats.started += 1
        await self.save(instance)
        self.instances[instance.id] = instance
        self._arm(instance)
        self._spawn(instance)
        return instance.id

    # --- events and signals ---------------------------------------------------------------------------

    async def handle(self, event: Event) -> list[str]:
        """Deliver an event to instances waiting for it and start workflows it triggers; returns started ids."""
        candidates: list[str] = []
        if event.device_id is not None:
            candidates += self._waiters.get((event.type, event.device_id), ())
        candidates += self._waiters.get((event.type, None), ())
        if candidates:
            raw = event.as_dict()
            for instance_id in candidates:
                instance = self.instances.get(instance_id)
                if instance is not None and self.steps.event_matches(instance, raw):
                    await self._deliver(instance, raw)
        return await self._trigger(event)

    async def signal(self, instance_id: str, event: Event) -> None:
        """Send an event to one instance: delivered now if it waits for it, else kept in its inbox."""
        instance = self.instances.get(instance_id)
        if instance is None:
            stored = await self.store.get(instance_id)
            if stored is None:
                raise InstanceNotFound(instance_id)
            raise InstanceStateError(instance_id, f"has already {stored.status.value}")
        raw = event.as_dict()
        if (
            instance.status is Status.WAITING
            and not self._executing(instance_id)
            and self.steps.event_matches(instance, raw)
        ):
            await self._deliver(instance, raw)
            return
        instance.inbox.append(raw)
        self.stats.signals_buffered += 1
        if len(instance.inbox) > self.inbox_limit:
            dropped = instance.inbox.pop(0)
            self.stats.signals_dropped += 1
            self.record(instance, "signal_dropped", {"event": dropped["type"], "reason": "inbox full"})
        self.record(instance, "signal_buffered", {"event": event.type})
        await self.save(instance)

    async def start_workflow(
        self, workflow_id: str, variables: dict[str, Any], *, parent: str | None, request_id: str
    ) -> str:
        """``Control`` for the ``start_workflow`` action."""
        return await self.start(workflow_id, variables, request_id=request_id, trigger=f"instance {parent}")

    async def _deliver(self, instance: Instance, event: dict[str, Any]) -> None:
        self.unwait(instance)
        instance.status = Status.RUNNING
        self.stats.events_delivered += 1
        self._spawn(instance, lambda: self.steps.event_arrived(instance, event))

    async def _trigger(self, event: Event) -> list[str]:
        started = []
        raw: dict[str, Any] | None = None
        for workflow_id, version in list(self.latest.items()):
            workflow = self.workflows[(workflow_id, version)]
            for trigger in workflow.triggers:
                if not _trigger_accepts(trigger, event):
                    continue
                raw = raw or event.as_dict()
                scope = {"event": raw, "device": _device(event) or {}, "now": self.now_function}
                try:
                    if trigger.condition is not None and not trigger.condition(scope):
                        continue
                    variables = {name: value.render(scope) for name, value in trigger.variables.items()}
                    started.append(
                        await self.start(workflow_id, variables, event=event, trigger=trigger.spec.type)
                    )
                except (EvaluationError, VariableError) as exc:
                    self.stats.trigger_errors += 1
                    log.warning(
                        "workflow %s: trigger %s not started: %s", workflow_id, trigger.spec.type, exc
                    )
                break  # one instance per workflow per event
        return started

    # --- operations -----------------------------------------------------------------------------------

    async def cancel(self, instance_id: str, reason: str = "", *, terminate: bool = False) -> None:
        """Stop an instance (and its branches). ``terminate`` records it as terminated rather than cancelled."""
        instance = self.instances.get(instance_id)
        if instance is None:
            stored = await self.store.get(instance_id)
            if stored is None:
                raise InstanceNotFound(instance_id)
            raise InstanceStateError(instance_id, f"has already {stored.status.value}")
        status = Status.TERMINATED if terminate else Status.CANCELLED
        error = {"error": f"Workflow.{status.value.capitalize()}", "cause": reason or "by request"}
        if not await self.steps.stop(instance, status, error):
            raise InstanceStateError(instance_id, f"has already {instance.status.value}")

    async def get(self, instance_id: str) -> InstanceView:
        """An instance (live or stored) with its full history."""
        instance = self.instances.get(instance_id) or await self.store.get(instance_id)
        if instance is None:
            raise InstanceNotFound(instance_id)
        history = await self.store.history(instance_id)
        return InstanceView(instance, [*history, *self._pending.get(instance_id, [])])

    async def list(
        self, *, workflow_id: str | None = None, status: Status | None = None, limit: int = 100
    ) -> list[Instance]:
        return await self.store.list(workflow_id=workflow_id, status=status, limit=limit)

    # --- execution ------------------------------------------------------------------------------------

    def _spawn(self, instance: Instance, first: Callable[[], Any] | None = None) -> None:
        if self._executing(instance.id):
            raise InstanceStateError(instance.id, "is already executing")
        instance_id = instance.id
        task = asyncio.create_task(self._drive(instance, first), name=f"instance-{instance_id}")
        self._tasks[instance_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tasks.get(instance_id) is finished:
                del self._tasks[instance_id]

        task.add_done_callback(done)

    def _executing(self, instance_id: str) -> bool:
        """Whether the instance's task is still running (a finished one may not have left ``_tasks`` yet:
        its done callback runs a loop turn later)."""
        task = self._tasks.get(instance_id)
        return task is not None and not task.done()

    async def _drive(self, instance: Instance, first: Callable[[], Any] | None) -> None:
        try:
            if first is not None:
                await first()
            while instance.status is Status.RUNNING:
                await self.steps.step(instance)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine or store fault: record it on the instance, never lose the task
            log.exception("instance %s failed in the engine", instance.id)
            self._tasks.pop(instance.id, None)
            with contextlib.suppress(Exception):
                await self.steps.finish(
                    instance, Status.FAILED, error={"error": "Engine.Fault", "cause": repr(exc)}
                )

    async def _stop_task(self, instance_id: str) -> None:
        task = self._tasks.pop(instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})  # awaiting the task itself would swallow a cancellation of the caller

    def background(self, coro: Any) -> None:
        """Run a coroutine the engine does not wait for (event fan-out), keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- persistence and history ----------------------------------------------------------------------

    def record(self, instance: Instance, kind: str, detail: dict[str, Any] | None = None) -> None:
        entry = HistoryEntry(instance.id, self.clock.now(), kind, instance.state, detail or {})
        self._pending.setdefault(instance.id, []).append(entry)

    async def save(self, *instances: Instance, states: tuple[tuple[str, str, Any], ...] = ()) -> None:
        now = self.clock.now()
        history: list[HistoryEntry] = []
        for instance in instances:
            instance.updated_at = now
            history += self._pending.pop(instance.id, [])
        await self.store.save(instances, history, states)

    # --- timers and waits -----------------------------------------------------------------------------

    def _arm(self, instance: Instance) -> None:
        """Register an instance's deadlines and event waits (after a start, a wait or a restart)."""
        if instance.deadline is not None:
            self._timers.add(instance.deadline, ("instance", instance.id, 0))
        wait = instance.wait
        if instance.status is Status.WAITING and wait is not None:
            if wait.deadline is not None:
                self._timers.add(wait.deadline, ("wait", instance.id, wait.token))
            if wait.kind == "event" and wait.event_type:
                self._waiters.setdefault((wait.event_type, wait.device_id), set()).add(instance.id)
        if instance.state_deadline is not None:
            self._timers.add(instance.state_deadline, ("state", instance.id, instance.attempt_token))

    def arm_wait(self, instance: Instance) -> None:
        wait = instance.wait
        if wait is None:
            return
        if wait.deadline is not None:
            self._timers.add(wait.deadline, ("wait", instance.id, wait.token))
        if wait.kind == "event" and wait.event_type:
            self._waiters.setdefault((wait.event_type, wait.device_id), set()).add(instance.id)

    def arm_state_deadline(self, instance: Instance) -> None:
        if instance.state_deadline is not None:
            self._timers.add(instance.state_deadline, ("state", instance.id, instance.attempt_token))

    def unwait(self, instance: Instance) -> None:
        wait = instance.wait
        if wait is not None and wait.kind == "event" and wait.event_type:
            key = (wait.event_type, wait.device_id)
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(instance.id)
                if not waiting:
                    del self._waiters[key]

    def forget(self, instance: Instance) -> None:
        """Drop a finished instance from the live tables."""
        self.unwait(instance)
        self.instances.pop(instance.id, None)

    async def _on_timer(self, key: Hashable, due: float) -> None:
        kind, target, token = key  # type: ignore[misc]
        if kind == "schedule":
            await self._fire_schedule(target, due)
            return
        instance = self.instances.get(target)
        if instance is None:
            return
        busy = self._tasks.get(target)
        if busy is not None and not busy.done():
            if kind != "instance":
                # still executing the step that armed this timer (a deadline already due, a zero wait):
                # handle it once the step has returned; a task state enforces its own timeout
                self.background(self._after(busy, key, due))
                return
            await self._stop_task(target)  # the instance's time is up, whatever it was doing
            if self.instances.get(target) is not instance:
                return  # it ended on its own meanwhile
        if kind == "instance":
            self.unwait(instance)
            instance.status = Status.RUNNING
            self._spawn(instance, lambda: self.steps.instance_timed_out(instance))
        elif (
            kind == "state"
            and token == instance.attempt_token
            and instance.status is Status.WAITING
            and instance.wait is not None
            and instance.wait.kind != "retry"
        ):
            self.unwait(instance)
            instance.status = Status.RUNNING
            self._spawn(instance, lambda: self.steps.state_timed_out(instance))
        elif (
            kind == "wait"
            and instance.status is Status.WAITING
            and instance.wait is not None
            and instance.wait.token == token
        ):
            self.unwait(instance)
            instance.status = Status.RUNNING
            self._spawn(instance, lambda: self.steps.wait_elapsed(instance))

    async def _after(self, task: asyncio.Task[None], key: Hashable, due: float) -> None:
        await asyncio.wait({task})
        await self._on_timer(key, due)

    # --- schedules ------------------------------------------------------------------------------------

    def _arm_schedules(self, workflow: Workflow) -> None:
        now = self.clock.now()
        for index, trigger in enumerate(workflow.triggers):
            spec = trigger.spec
            if not isinstance(spec, ScheduleTrigger):
                continue
            key = f"{workflow.id}#{index}"
            signature = spec.model_dump_json()
            saved = self._schedules.get(key)
            if saved is None or saved.get("signature") != signature:
                saved = {"signature": signature, "next": next_fire(spec, now)}
                self._schedules[key] = saved
                self.background(self.store.save([], [], [("schedules", key, saved)]))
            self._timers.add(saved["next"], ("schedule", key, 0))

    async def _fire_schedule(self, key: str, due: float) -> None:
        saved = self._schedules.get(key)
        workflow_id, _, index = key.rpartition("#")
        version = self.latest.get(workflow_id)
        if saved is None or version is None or saved["next"] != due:
            return
        workflow = self.workflows[(workflow_id, version)]
        if int(index) >= len(workflow.triggers) or not isinstance(
            spec := workflow.triggers[int(index)].spec, ScheduleTrigger
        ):
            return
        now = self.clock.now()
        saved = {"signature": saved["signature"], "next": next_fire(spec, max(now, due))}
        self._schedules[key] = saved
        await self.store.save([], [], [("schedules", key, saved)])
        self._timers.add(saved["next"], ("schedule", key, 0))
        event = Event("schedule", {"scheduled_at": due, "fired_at": now}, ts=now, source=key)
        scope = {"event": event.as_dict(), "device": {}, "now": self.now_function}
        trigger = workflow.triggers[int(index)]
        try:
            variables = {name: value.render(scope) for name, value in trigger.variables.items()}
            await self.start(workflow_id, variables, event=event, trigger="schedule")
        except (EvaluationError, VariableError) as exc:
            self.stats.trigger_errors += 1
            log.warning("workflow %s: schedule did not start an instance: %s", workflow_id, exc)


def next_fire(spec: ScheduleTrigger, after: float) -> float:
    """The first firing time strictly after ``after``: cron in the trigger's time zone, or a fixed interval
    aligned to the epoch (``every: 5m`` fires at :00, :05, ...)."""
    if spec.every is not None:
        return (after // spec.every + 1) * spec.every
    start = datetime.fromtimestamp(after, ZoneInfo(spec.timezone))
    return float(croniter(spec.cron, start).get_next(float))


def bind_variables(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Declared variables with defaults applied; raises VariableError listing every mismatch."""
    declared: dict[str, VariableSpec] = workflow.definition.variables
    problems = [f"unknown variable {name!r}" for name in given if name not in declared]
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            if value is not None and not _TYPE_CHECKS[spec.type](value):
                problems.append(f"{name} must be a {spec.type}, got {type(value).__name__}")
            values[name] = value
        elif spec.required:
            problems.append(f"missing required variable {name!r}")
        else:
            values[name] = _copy(spec.default)
    if problems:
        raise VariableError(workflow.id, problems)
    return values


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _device(event: Event | None) -> dict[str, Any] | None:
    if event is None or event.device_id is None:
        return None
    return {"id": event.device_id, "type": event.device_type}


def _trigger_accepts(trigger: CompiledTrigger, event: Event) -> bool:
    """Whether the event is of the kind the trigger listens to (its condition is checked after)."""
    spec = trigger.spec
    if isinstance(spec, EventTrigger):
        return event.type == spec.event
    if isinstance(spec, MessageTrigger):
        return event.type == MQTT_MESSAGE and event.topic is not None and matches(spec.topic, event.topic)
    if isinstance(spec, DeviceStateTrigger):
        if event.type != DEVICE_STATE:
            return False
        selector = spec.devices
        if selector.id is not None and not fnmatch.fnmatchcase(event.device_id or "", selector.id):
            return False
        if selector.type is not None and event.device_type != selector.type:
            return False
        if spec.from_ is not None and event.data.get("from") != spec.from_:
            return False
        return spec.to is None or event.data.get("to") == spec.to
    return False
