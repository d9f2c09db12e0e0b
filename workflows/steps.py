"""What each state type does, dispatched through a table, every step traced into the instance's history.

``Stepper.step`` runs the instance's current state once and ends in exactly one of: a transition (saved), a
wait (saved, deadlines armed), or the end of the instance (saved). Failures go through ``fail_state``: the
state's ``retry`` policies (if the error is retryable), then its ``catch`` clauses, then the workflow's
``on_error``, and otherwise the instance fails with the error.

``parallel`` branches and ``map`` iterations run as child instances (one per branch or item) with ids derived
from the parent, so they persist, resume and trace exactly like top-level instances; the parent waits in a
``join`` and collects their outputs in order.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from workflows.actions import ActionContext
from workflows.compiler import CompiledAction, CompiledState, Workflow
from workflows.definition import (
    ChoiceState,
    FailState,
    MapState,
    ParallelState,
    Recoverable,
    SucceedState,
    TaskState,
    WaitState,
)
from workflows.errors import (
    BRANCH_FAILED,
    EXPRESSION_FAILED,
    RESULT_TOO_LARGE,
    TASK_FAILED,
    TIMEOUT,
    TRANSITION_BUDGET,
    WORKFLOW_TIMEOUT,
    ActionError,
    EvaluationError,
)
from workflows.events import Event
from workflows.instance import Instance, Join, Status, Wait

if TYPE_CHECKING:
    from workflows.runtime import Engine

log = logging.getLogger("fieldline.workflows")
_RESULT_LIMIT = 2000  # characters of an action result kept in a history entry
_VALUE_LIMIT = 1 << 20  # bytes of JSON an action's result, or the variables it sets, may take


def error_matches(patterns: list[str], error: str) -> bool:
    """``*`` / ``States.ALL`` match everything; ``Http.*`` a family; otherwise the exact name."""
    for pattern in patterns:
        if pattern in ("*", "States.ALL") or pattern == error:
            return True
        if pattern.endswith(".*") and error.startswith(pattern[:-1]):
            return True
    return False


def plain(value: Any, limit: int | None = None) -> Any:
    """A JSON-able copy of an action's result: an integer beyond 64 bits becomes a float (as JSON readers take
    it); anything else that cannot be encoded becomes its string form. Raises ``ActionError``
    (``States.ResultTooLarge``) when the JSON is longer than ``limit`` bytes."""
    try:
        encoded = orjson.dumps(value, default=str)
    except TypeError:
        try:
            encoded = orjson.dumps(_fit_integers(value), default=str)
        except TypeError:
            encoded = orjson.dumps(repr(value))
    if limit is not None and len(encoded) > limit:
        raise ActionError(
            RESULT_TOO_LARGE, f"{len(encoded)} bytes of JSON, more than {limit}", retryable=False
        )
    return orjson.loads(encoded)


def _fit_integers(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf  # encoded as null
    if isinstance(value, dict):
        return {k: _fit_integers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fit_integers(v) for v in value]
    return value


def _brief(value: Any) -> Any:
    text = orjson.dumps(value, default=str)
    return value if len(text) <= _RESULT_LIMIT else text[:_RESULT_LIMIT].decode(errors="replace") + "…"


def parse_time(value: Any) -> float:
    """Epoch seconds from a number or an RFC 3339 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither epoch seconds nor an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone offset")
        return parsed.timestamp()
    raise ValueError(f"{value!r} is not a time")


class Stepper:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.handlers = {
            TaskState: self._task,
            ChoiceState: self._choice,
            WaitState: self._wait,
            ParallelState: self._fork,
            MapState: self._fork,
            SucceedState: self._succeed,
            FailState: self._fail,
        }

    # --- scope ----------------------------------------------------------------------------------------

    def scope(self, instance: Instance, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        scope = dict(instance.vars)
        scope.update(
            vars=instance.vars,
            event=instance.event or {},
            result=instance.result,
            device=instance.device or {},
            instance={
                "id": instance.id,
                "workflow": instance.workflow_id,
                "version": instance.version,
                "state": instance.state,
                "attempt": instance.attempt,
                "started_at": instance.created_at,
                "parent": instance.parent_id,
            },
            now=self.engine.now_function,
        )
        if extra:
            scope.update(extra)
        return scope

    def state_of(self, instance: Instance) -> tuple[Workflow, CompiledState]:
        workflow = self.engine.workflow(instance)
        return workflow, workflow.machines[instance.machine].states[instance.state]

    # --- dispatch -------------------------------------------------------------------------------------

    async def step(self, instance: Instance) -> None:
        workflow, state = self.state_of(instance)
        await self.handlers[type(state.spec)](instance, workflow, state)

    def enter(self, instance: Instance, workflow: Workflow) -> None:
        """Set up the bookkeeping of entering the current state (its timeout deadline)."""
        spec = workflow.machines[instance.machine].states[instance.state].spec
        instance.state_entered_at = self.engine.clock.now()
        instance.attempt = 0
        instance.state_deadline = self._state_deadline(spec)
        self.engine.record(instance, "entered")

    def _state_deadline(self, spec: Any) -> float | None:
        """When the current attempt of a state times out (a task state enforces its own timeout)."""
        if not spec.timeout or isinstance(spec, TaskState):
            return None
        return self.engine.clock.now() + spec.timeout

    async def transition(self, instance: Instance, target: str, **detail: Any) -> None:
        workflow = self.engine.workflow(instance)
        definition = workflow.definition
        cause = None
        if instance.since_wait + 1 > definition.max_transitions_between_waits:
            cause = (
                f"more than {definition.max_transitions_between_waits} transitions without a wait (last "
                f"{instance.state} → {target}): a loop that never waits; raise `max_transitions_between_waits` "
                "if it is meant"
            )
        elif definition.max_transitions is not None and instance.transitions + 1 > definition.max_transitions:
            cause = f"the instance's budget of {definition.max_transitions} transitions is spent"
        if cause is not None:
            await self.finish(instance, Status.FAILED, error={"error": TRANSITION_BUDGET, "cause": cause})
            return
        self.engine.record(instance, "transition", {"to": target, **detail})
        instance.transitions += 1
        instance.since_wait += 1
        self.engine.stats.transitions += 1
        instance.state = target
        instance.status = Status.RUNNING
        instance.wait = None
        self.enter(instance, workflow)
        await self.engine.save(instance)
        self.engine.arm_state_deadline(instance)

    async def advance(self, instance: Instance, state: CompiledState) -> None:
        """Leave a completed state: to ``next``, or end the machine."""
        if state.spec.next is not None:
            await self.transition(instance, state.spec.next)
        else:
            await self.finish(instance, Status.SUCCEEDED, output=instance.result)

    async def begin_wait(self, instance: Instance, wait: Wait, **detail: Any) -> None:
        wait.token = instance.attempt_token
        if wait.deadline is None or wait.deadline > self.engine.clock.now():
            instance.since_wait = 0  # a wait already due (`seconds: 0`, an `until` past) lets no time pass
        instance.status = Status.WAITING
        instance.wait = wait
        self.engine.record(instance, "waiting", {"kind": wait.kind, "deadline": wait.deadline, **detail})
        await self.engine.save(instance)
        self.engine.arm_wait(instance)

    # --- task -----------------------------------------------------------------------------------------

    async def _task(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        timeout = state.spec.timeout
        deadline = self.engine.clock.now() + timeout if timeout else None
        try:
            await self._with_deadline(
                self.run_actions(instance, state.actions, state.name), deadline, timeout
            )
        except ActionError as err:
            await self.fail_state(instance, workflow, state, err)
            return
        await self.advance(instance, state)

    async def run_actions(self, instance: Instance, actions: list[CompiledAction], label: str) -> None:
        engine = self.engine
        for index, action in enumerate(actions):
            key = f"{instance.id}:{label}:{instance.attempt}:{index}"
            ctx = ActionContext(
                idempotency_key=key,
                scope=self.scope(instance),
                host=engine.host,
                control=engine,
                notifiers=engine.notifiers,
                http=engine.http,
                now=engine.clock.now,
                instance_id=instance.id,
            )
            engine.stats.actions += 1
            try:
                output = plain(await action.kind.run(action.config, ctx), _VALUE_LIMIT)
                updates = plain(ctx.updates, _VALUE_LIMIT)
            except ActionError as err:
                engine.stats.action_errors += 1
                engine.record(
                    instance, "action_failed", {"index": index, "type": action.type, **err.as_dict()}
                )
                raise
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a host's action implementation failed in an unforeseen way
                engine.stats.action_errors += 1
                err = ActionError(TASK_FAILED, f"{action.type}: {exc!r}")
                engine.record(
                    instance, "action_failed", {"index": index, "type": action.type, **err.as_dict()}
                )
                raise err from exc
            instance.result = output
            if action.result_as:
                instance.vars[action.result_as] = output
            instance.vars.update(updates)
            engine.record(instance, "action", {"index": index, "type": action.type, "result": _brief(output)})

    async def _with_deadline(self, coro: Any, deadline: float | None, limit: float | None) -> None:
        if deadline is None:
            await coro
            return
        work = asyncio.ensure_future(coro)
        alarm = asyncio.ensure_future(self.engine.clock.sleep_until(deadline))
        try:
            await asyncio.wait({work, alarm}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            alarm.cancel()
            # wait for both to stop without swallowing a cancellation of this task (the instance being stopped)
            await asyncio.gather(work, alarm, return_exceptions=True)
        if work.cancelled():
            raise ActionError(TIMEOUT, f"the state did not finish within {limit:g}s")
        work.result()

    # --- choice ---------------------------------------------------------------------------------------

    async def _choice(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        scope = self.scope(instance)
        skipped = []
        for index, (condition, target) in enumerate(state.choices):
            try:
                matched = condition(scope)
            except EvaluationError as exc:
                await self.fail_state(
                    instance, workflow, state, ActionError(EXPRESSION_FAILED, str(exc), retryable=False)
                )
                return
            if matched:
                await self.transition(instance, target, branch=index, when=condition.source)
                return
            skipped.append({"when": condition.source, "why": condition.explain(scope)})
        assert isinstance(state.spec, ChoiceState)
        assert state.spec.default is not None
        await self.transition(instance, state.spec.default, branch="default", skipped=skipped)

    # --- wait -----------------------------------------------------------------------------------------

    async def _wait(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        spec = state.spec
        assert isinstance(spec, WaitState)
        if spec.seconds is not None:
            await self.begin_wait(instance, Wait("timer", instance.state_entered_at + spec.seconds))
            return
        if state.until is not None:
            try:
                deadline = parse_time(state.until.render(self.scope(instance)))
            except (EvaluationError, ValueError) as exc:
                await self.fail_state(
                    instance, workflow, state, ActionError(EXPRESSION_FAILED, str(exc), retryable=False)
                )
                return
            await self.begin_wait(instance, Wait("timer", deadline))
            return
        assert spec.event is not None
        if (raw := self._from_inbox(instance, state)) is not None:
            await self.event_arrived(instance, raw)
            return
        deadline = instance.state_entered_at + spec.event.timeout if spec.event.timeout is not None else None
        device = instance.vars.get(state.event_device_var) if state.event_device_var else None
        await self.begin_wait(
            instance,
            Wait(
                "event",
                deadline,
                event_type=spec.event.type,
                on_timeout=spec.event.on_timeout,
                device_id=device if isinstance(device, str) else None,
            ),
            event=spec.event.type,
        )
        if (raw := self._from_inbox(instance, state)) is not None:  # signalled while the wait was being saved
            self.engine.unwait(instance)
            instance.status = Status.RUNNING
            await self.event_arrived(instance, raw)

    def _from_inbox(self, instance: Instance, state: CompiledState) -> dict[str, Any] | None:
        """Take the oldest buffered signal the event wait accepts."""
        spec = state.spec
        assert isinstance(spec, WaitState)
        assert spec.event is not None
        for index, raw in enumerate(instance.inbox):
            if raw.get("type") == spec.event.type and self._condition_holds(instance, state, raw):
                del instance.inbox[index]
                return raw
        return None

    def _condition_holds(self, instance: Instance, state: CompiledState, raw: dict[str, Any]) -> bool:
        spec = state.spec
        assert isinstance(spec, WaitState)
        assert spec.event is not None
        if state.event_condition is None:
            return True
        try:
            return state.event_condition(self.scope(instance, {spec.event.result_as: raw}))
        except EvaluationError as exc:
            self.engine.record(instance, "event_ignored", {"event": raw.get("type"), "why": str(exc)})
            return False

    def event_matches(self, instance: Instance, raw: dict[str, Any]) -> bool:
        """Whether a waiting instance takes this event now."""
        wait = instance.wait
        if instance.status is not Status.WAITING or wait is None or wait.kind != "event":
            return False
        if wait.event_type != raw.get("type"):
            return False
        _, state = self.state_of(instance)
        return self._condition_holds(instance, state, raw)

    async def event_arrived(self, instance: Instance, raw: dict[str, Any]) -> None:
        _, state = self.state_of(instance)
        spec = state.spec
        assert isinstance(spec, WaitState)
        assert spec.event is not None
        instance.vars[spec.event.result_as] = raw
        instance.result = raw
        self.engine.record(instance, "event", {"type": raw.get("type"), "data": _brief(raw.get("data"))})
        instance.wait = None
        await self.advance(instance, state)

    async def wait_elapsed(self, instance: Instance) -> None:
        workflow, state = self.state_of(instance)
        wait = instance.wait
        assert wait is not None
        instance.wait = None
        self.engine.record(instance, "timer", {"kind": wait.kind, "deadline": wait.deadline})
        if wait.kind == "retry":
            # the driver runs the state again with the next attempt, which has the state's whole timeout
            instance.state_deadline = self._state_deadline(state.spec)
            self.engine.arm_state_deadline(instance)
            return
        if wait.kind == "timer":
            await self.advance(instance, state)
        elif wait.on_timeout is not None:
            await self.transition(instance, wait.on_timeout, reason="event wait timed out")
        else:
            await self.fail_state(
                instance,
                workflow,
                state,
                ActionError(TIMEOUT, f"no {wait.event_type} event before the timeout"),
            )

    async def state_timed_out(self, instance: Instance) -> None:
        workflow, state = self.state_of(instance)
        await self.cancel_children(instance)
        instance.wait = None
        timeout = state.spec.timeout or 0
        await self.fail_state(
            instance, workflow, state, ActionError(TIMEOUT, f"state timed out after {timeout:g}s")
        )

    async def instance_timed_out(self, instance: Instance) -> None:
        timeout = self.engine.workflow(instance).definition.timeout or 0
        await self.cancel_children(instance)
        await self.finish(
            instance,
            Status.FAILED,
            error={"error": WORKFLOW_TIMEOUT, "cause": f"instance ran over {timeout:g}s"},
        )

    # --- parallel and map -----------------------------------------------------------------------------

    async def _fork(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        spec = state.spec
        items: list[Any] = []
        if isinstance(spec, MapState):
            assert state.items is not None
            try:
                value = state.items.value(self.scope(instance))
            except EvaluationError as exc:
                await self.fail_state(
                    instance, workflow, state, ActionError(EXPRESSION_FAILED, str(exc), retryable=False)
                )
                return
            if not isinstance(value, list | tuple):
                await self.fail_state(
                    instance,
                    workflow,
                    state,
                    ActionError(
                        EXPRESSION_FAILED,
                        f"`{spec.items}` gave {type(value).__name__}, not a list",
                        retryable=False,
                    ),
                )
                return
            items = plain(list(value))
            total, first = len(items), min(len(items), spec.max_concurrency)
        else:
            total = first = len(state.branches)
        if total == 0:
            await self._joined(instance, state, [])
            return
        instance.join = Join(total=total, items=items)
        children = [self._child(instance, workflow, state, index) for index in range(first)]
        instance.join.running = [c.id for c in children]
        instance.join.next_item = first
        wait = Wait("join", token=instance.attempt_token)
        instance.status = Status.WAITING
        instance.wait = wait
        self.engine.record(instance, "fork", {"children": total})
        for child in children:  # live before the save: a cancellation meanwhile finds and ends them
            self.engine.instances[child.id] = child
        await self.engine.save(instance, *children)
        for child in children:
            self._launch(child)

    def _child(self, parent: Instance, workflow: Workflow, state: CompiledState, index: int) -> Instance:
        spec = state.spec
        if isinstance(spec, MapState):
            machine = state.branches[0]
            variables = {**parent.vars, spec.item_as: parent.join.items[index], "index": index}  # type: ignore[union-attr]
        else:
            machine = state.branches[index]
            variables = dict(parent.vars)
        now = self.engine.clock.now()
        child = Instance(
            id=f"{parent.id}/{state.name}.{parent.transitions}.{parent.attempt}.{index}",
            workflow_id=parent.workflow_id,
            version=parent.version,
            status=Status.RUNNING,
            state=machine.start_at,
            created_at=now,
            updated_at=now,
            machine=machine.path,
            vars=plain(variables),
            event=parent.event,
            device=parent.device,
            parent_id=parent.id,
            branch=index,
        )
        self.engine.record(child, "started", {"parent": parent.id, "branch": index})
        self.enter(child, workflow)
        return child

    def _launch(self, child: Instance) -> None:
        self.engine.instances[child.id] = child
        self.engine.arm_state_deadline(child)
        self.engine._spawn(child)

    async def _child_finished(self, child: Instance) -> None:
        parent = self.engine.instances.get(child.parent_id or "")
        join = parent.join if parent is not None else None
        if parent is None or join is None or child.id not in join.running:
            await self.engine.save(child)
            return
        join.running.remove(child.id)
        workflow, state = self.state_of(parent)
        if child.status is not Status.SUCCEEDED:
            # take the join before anything awaits: a sibling that ends meanwhile has nobody to report to
            parent.join = None
            parent.status = Status.RUNNING
            token = parent.attempt_token
            await self.engine.save(child)
            await self._cancel_running(join)
            error = child.error or {"error": BRANCH_FAILED, "cause": child.status.value}
            err = ActionError(
                BRANCH_FAILED,
                f"branch {child.branch} {child.status.value}: {error.get('error')}: {error.get('cause', '')}",
                details={"branch": child.branch, **error},
            )
            if self._still_owned(parent, token):
                self.engine._spawn(parent, lambda: self.fail_state(parent, workflow, state, err))
            return
        join.results[child.branch or 0] = child.output
        launched = []
        if join.next_item < join.total:
            launched.append(self._child(parent, workflow, state, join.next_item))
            join.running.append(launched[0].id)
            join.next_item += 1
        if join.running:
            for new in launched:
                self.engine.instances[new.id] = new
            await self.engine.save(child, parent, *launched)
            if parent.join is join:  # not cancelled while saving
                for new in launched:
                    self._launch(new)
            return
        results = [join.results.get(i) for i in range(join.total)]
        parent.join = None
        parent.wait = None
        parent.status = Status.RUNNING
        token = parent.attempt_token
        await self.engine.save(child)
        if self._still_owned(parent, token):
            self.engine._spawn(parent, lambda: self._joined(parent, state, results))

    async def resume_join(self, parent: Instance) -> None:
        """After a restart: report to a parent the children that ended before it was saved again (a child is
        saved when it ends, its parent when it moves on)."""
        ended = []
        for child_id in parent.join.running if parent.join is not None else []:
            child = None if child_id in self.engine.instances else await self.engine.store.get(child_id)
            if child is not None and child.status.terminal:
                ended.append(child)
        # a branch cancelled because a sibling failed is reported after that sibling
        for child in sorted(ended, key=lambda c: c.status is Status.CANCELLED):
            await self._child_finished(child)

    def _still_owned(self, parent: Instance, token: int) -> bool:
        """Whether a parent whose join a child took is still the child's to resume: an instance timeout or a
        cancellation may have taken it over while the child awaited."""
        return (
            self.engine.instances.get(parent.id) is parent
            and parent.attempt_token == token
            and not self.engine._executing(parent.id)
        )

    async def _joined(self, instance: Instance, state: CompiledState, results: list[Any]) -> None:
        spec = state.spec
        assert isinstance(spec, ParallelState | MapState)
        instance.result = results
        if spec.result_as:
            instance.vars[spec.result_as] = results
        self.engine.record(instance, "joined", {"results": _brief(results)})
        await self.advance(instance, state)

    async def cancel_children(self, instance: Instance) -> None:
        """Cancel the children an instance waits for. The join is taken before anything awaits, so a child that
        ends meanwhile reports to nobody."""
        join, instance.join = instance.join, None
        if join is not None:
            await self._cancel_running(join)

    async def _cancel_running(self, join: Join) -> None:
        for child_id in list(join.running):
            child = self.engine.instances.get(child_id)
            if child is not None:
                error = {"error": "Workflow.Cancelled", "cause": "sibling or parent ended"}
                await self.stop(child, Status.CANCELLED, error, notify_parent=False)
        join.running.clear()

    async def stop(
        self, instance: Instance, status: Status, error: dict[str, Any], *, notify_parent: bool = True
    ) -> bool:
        """End an instance wherever it is (its branches too) with ``status``; False when it ended on its own
        while this awaited."""
        engine = self.engine
        await engine._stop_task(instance.id)
        await self.cancel_children(instance)
        while instance.id in engine._tasks:  # an event or a timer woke it while this awaited
            await engine._stop_task(instance.id)
        if engine.instances.get(instance.id) is not instance:
            return False
        await self.finish(instance, status, error=error, notify_parent=notify_parent)
        return True

    # --- ends -----------------------------------------------------------------------------------------

    async def _succeed(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        output = instance.result
        if state.output is not None:
            try:
                output = plain(state.output.render(self.scope(instance)))
            except EvaluationError as exc:
                await self.fail_state(
                    instance, workflow, state, ActionError(EXPRESSION_FAILED, str(exc), retryable=False)
                )
                return
        await self.finish(instance, Status.SUCCEEDED, output=output)

    async def _fail(self, instance: Instance, workflow: Workflow, state: CompiledState) -> None:
        spec = state.spec
        assert isinstance(spec, FailState)
        await self.finish(instance, Status.FAILED, error={"error": spec.error, "cause": spec.cause})

    async def finish(
        self,
        instance: Instance,
        status: Status,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        notify_parent: bool = True,
    ) -> None:
        engine = self.engine
        instance.status = status
        instance.wait = None
        instance.state_deadline = None
        instance.output = output
        instance.error = error
        engine.record(instance, status.value, {"output": _brief(output)} if error is None else error)
        engine.forget(instance)
        if status is Status.SUCCEEDED:
            engine.stats.succeeded += 1
        elif status is Status.FAILED:
            engine.stats.failed += 1
        else:
            engine.stats.cancelled += 1
        if instance.parent_id is not None and notify_parent:
            await self._child_finished(instance)
            return
        await engine.save(instance)
        if instance.parent_id is None:
            event = Event(
                f"workflow.{status.value}",
                {
                    "instance_id": instance.id,
                    "workflow_id": instance.workflow_id,
                    "version": instance.version,
                    "output": output,
                    "error": error,
                },
                device_id=(instance.device or {}).get("id"),
                ts=engine.clock.now(),
                source=instance.id,
            )
            engine.background(self._announce(event))

    async def _announce(self, event: Event) -> None:
        try:
            await self.engine.host.emit(event)
        except Exception:
            self.engine.stats.emit_errors += 1
            log.warning("could not emit %s for instance %s", event.type, event.source, exc_info=True)
        await self.engine.handle(event)

    # --- failures -------------------------------------------------------------------------------------

    async def fail_state(
        self, instance: Instance, workflow: Workflow, state: CompiledState, err: ActionError
    ) -> None:
        """Retry, catch, ``on_error``, or fail the instance — in that order."""
        engine = self.engine
        spec = state.spec
        if isinstance(spec, Recoverable):
            for policy in spec.retry:
                if not error_matches(policy.errors, err.error):
                    continue
                if err.retryable and instance.attempt + 1 < policy.max_attempts:
                    delay = policy.interval * policy.backoff_rate**instance.attempt
                    if policy.max_delay is not None:
                        delay = min(delay, policy.max_delay)
                    delay *= 1 - policy.jitter * engine.rng.random()
                    engine.stats.retries += 1
                    instance.attempt += 1
                    await self.begin_wait(
                        instance,
                        Wait("retry", engine.clock.now() + delay),
                        error=err.error,
                        attempt=instance.attempt + 1,
                        of=policy.max_attempts,
                    )
                    return
                break
            for clause in spec.catch:
                if error_matches(clause.errors, err.error):
                    instance.vars[clause.result_as] = err.as_dict()
                    await self.transition(instance, clause.next, caught=err.error)
                    return
        handler = workflow.definition.on_error
        if handler is not None and instance.parent_id is None:
            instance.vars[handler.result_as] = err.as_dict()
            engine.record(instance, "on_error", err.as_dict())
            try:
                await self.run_actions(instance, workflow.on_error, "on_error")
            except ActionError as handler_err:
                await self.finish(
                    instance, Status.FAILED, error={**err.as_dict(), "handler_error": handler_err.as_dict()}
                )
                return
            if handler.next is not None:
                await self.transition(instance, handler.next, caught=err.error)
                return
        await self.finish(instance, Status.FAILED, error=err.as_dict())
