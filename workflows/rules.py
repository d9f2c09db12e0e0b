"""Event rules: load a rules file, then run its rules over the events a host feeds in.

``load_rules`` (from ``rule_compiler.py``) reads ``rules: [...]``, compiles each condition once against the
names in scope for its source and each action against the registry, and raises ``DefinitionError`` listing
every problem as ``file:line:col`` (schema, expressions, unknown or workflow-only actions, duplicate ids).

``RuleEngine`` is an async context manager. ``handle(event)`` routes the event through an index (telemetry by
metric name, other events by type) so it only touches the rules that watch it, evaluates them synchronously
and queues what they fire: ``alert``/``alert.cleared`` events go to ``host.emit`` through one ordered emitter
task, actions run on a pool of worker tasks. Neither queue blocks ``handle``: when one is full the item is
dropped and counted. One background task runs the timers (``for``, ``absence``, ``sequence`` windows) on the
injected clock; another writes changed state to the store (write-behind, see ``flush_interval``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import httpx

from fieldline.errors import ConfigIssue
from workflows.actions import ActionContext, Control, Host, LogNotifier, Notifier
from workflows.clock import Clock
from workflows.errors import (
    TASK_FAILED,
    ActionError,
    DefinitionError,
    EngineNotRunning,
    EvaluationError,
)
from workflows.events import MQTT_MESSAGE, TELEMETRY, Event
from workflows.expressions import scope_function
from workflows.rule_compiler import LoadedRules, load_rules
from workflows.rule_kinds import (
    RUNTIMES,
    CompiledRule,
    DeviceMatcher,
    RuleRuntime,
    RuleStats,
    Scope,
    event_scope,
    event_view,
)
from workflows.rule_state import DeviceState
from workflows.topics import matches

__all__ = ["ALERT", "ALERT_CLEARED", "LoadedRules", "RuleEngine", "StateStore", "load_rules"]

log = logging.getLogger("fieldline.workflows.rules")

ALERT = "alert"
ALERT_CLEARED = "alert.cleared"


class StateStore(Protocol):
    """The part of ``InstanceStore`` the rule engine uses: key-value states."""

    async def save(
        self, instances: Sequence[Any], history: Sequence[Any], states: Sequence[tuple[str, str, Any]] = ()
    ) -> None: ...

    async def get_states(self, namespace: str) -> dict[str, Any]: ...


_Route = tuple[Any, DeviceMatcher | None, tuple[str, ...] | None]
"""(runtime.sample, device matcher, the metrics of a multi-metric rule)."""


class RuleEngine:
    """Runs loaded rules over the events a host feeds to ``handle``.

    ``max_devices`` bounds the devices each rule remembers (least recently active evicted, counted);
    ``workers`` actions run at once, ``queue_size`` firings (and as many alert events) may wait, beyond that
    they are dropped and counted. Changed state is written to ``store`` under ``namespace`` at most
    ``flush_interval`` seconds (engine clock) after the change; ``0`` writes as soon as the previous write is
    done. The engine owns its namespace: on entry it deletes the state of rules it does not run. On exit it lets
    queued alerts and actions finish for up to ``drain_timeout`` seconds, then cancels them and flushes.
    """

    def __init__(
        self,
        rules: LoadedRules | Iterable[LoadedRules],
        *,
        clock: Clock,
        store: StateStore,
        host: Host,
        control: Control,
        notifiers: Mapping[str, Notifier] | None = None,
        http: httpx.AsyncClient | None = None,
        namespace: str = "rules",
        max_devices: int = 10_000,
        workers: int = 8,
        queue_size: int = 1024,
        flush_interval: float = 1.0,
        drain_timeout: float = 5.0,
    ) -> None:
        self.stats = RuleStats()
        self._clock = clock
        self._store = store
        self._host = host
        self._control = control
        self._notifiers: Mapping[str, Notifier] = notifiers or {"log": LogNotifier()}
        self._http = http
        self._own_http = False
        self._namespace = namespace
        self._workers = workers
        self._flush_interval = flush_interval
        self._drain_timeout = drain_timeout
        self._events: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._jobs: asyncio.Queue[tuple[RuleRuntime, str, int, Scope]] = asyncio.Queue(queue_size)
        self._timers: list[tuple[float, int, RuleRuntime, str]] = []
        self._order = itertools.count()
        self._timer_wake = asyncio.Event()
        self._dirty: set[tuple[RuleRuntime, str]] = set()
        self._dirty_counters: set[RuleRuntime] = set()
        self._stale: list[str] = []
        self._dirty_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

        def now() -> float:
            return clock.now()

        self._now = scope_function(now)
        self._by_id: dict[str, RuleRuntime] = {}
        self._by_metric: dict[str, list[_Route]] = {}
        self._by_type: dict[str, list[_Route]] = {}
        self._any: list[_Route] = []
        self._by_topic: list[tuple[str, _Route]] = []
        issues = []
        for loaded in [rules] if isinstance(rules, LoadedRules) else rules:
            for rule in loaded.rules:
                if rule.id in self._by_id:
                    other = self._by_id[rule.id].rule.file
                    issues.append(
                        ConfigIssue(rule.file, None, None, rule.id, f"rule id also defined in {other}")
                    )
                    continue
                runtime = RUNTIMES[rule.kind](rule, self, max_devices)
                self._by_id[rule.id] = runtime
                self._index(runtime)
        if issues:
            raise DefinitionError(issues)

    def _index(self, runtime: RuleRuntime) -> None:
        rule = runtime.rule
        route: _Route = (runtime.sample, rule.matcher, rule.metrics if len(rule.metrics) > 1 else None)
        if rule.source == "telemetry":
            for metric in rule.metrics:
                self._by_metric.setdefault(metric, []).append(route)
        elif rule.source == "message":
            assert rule.topic is not None
            self._by_topic.append((rule.topic, route))
        else:
            for kind in rule.event_types:
                (self._any if kind == "*" else self._by_type.setdefault(kind, [])).append(route)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> RuleEngine:
        if self._http is None:
            self._http, self._own_http = httpx.AsyncClient(), True
        await self._restore()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._run_timers(), name="rules-timers"),
            asyncio.create_task(self._run_flusher(), name="rules-flusher"),
            asyncio.create_task(self._run_emitter(), name="rules-emitter"),
            *(
                asyncio.create_task(self._run_worker(), name=f"rules-worker-{i}")
                for i in range(self._workers)
            ),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._running = False
        try:
            async with asyncio.timeout(self._drain_timeout):
                await self._drain()
        except TimeoutError:
            log.warning(
                "rule actions still running after %.1fs: cancelled (%d alerts, %d firings queued)",
                self._drain_timeout,
                self._events.qsize(),
                self._jobs.qsize(),
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http, self._own_http = None, False

    async def _drain(self) -> None:
        await self._events.join()
        await self._jobs.join()

    async def _restore(self) -> None:
        """Load the namespace: firing counters, then device states. A rule whose watching part changed since the
        states were written (its ``digest``) starts afresh; states of rules no longer run are deleted."""
        records = await self._store.get_states(self._namespace)
        changed = set()
        for rule_id, runtime in self._by_id.items():
            counter = records.get(rule_id) or {}
            runtime.firings = int(counter.get("firings", 0))
            if counter.get("digest") != runtime.rule.digest:
                changed.add(rule_id)
                self._dirty_counters.add(runtime)
        for key, record in records.items():
            rule_id, slash, device = key.partition("/")
            runtime = self._by_id.get(rule_id)
            if runtime is None or (slash and rule_id in changed):
                self._stale.append(key)
            elif slash:
                runtime.restore(device, record)
        if self._stale or self._dirty_counters:
            self._dirty_event.set()

    # -- events ---------------------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """Evaluate the rules that watch ``event``. Firings are queued; a failing rule is counted, never raised."""
        if not self._running:
            raise EngineNotRunning("the rule engine is not running: use it inside `async with`")
        self.stats.messages += 1
        now = self._clock.now()
        key = event.device_id or ""
        kind = event.type
        if kind == TELEMETRY and self._by_metric:
            self._telemetry(event, key, now)
        typed = self._by_type.get(kind)
        topical = self._by_topic if kind == MQTT_MESSAGE and event.topic is not None else None
        if typed or self._any or topical:
            scope = event_scope(event, self._now)
            if typed:
                self._route(typed, key, scope, event, now)
            if self._any:
                self._route(self._any, key, scope, event, now)
            if topical:
                topic = event.topic
                assert topic is not None
                self._route([r for f, r in topical if matches(f, topic)], key, scope, event, now)

    def _telemetry(self, event: Event, key: str, now: float) -> None:
        data = event.data
        by_metric = self._by_metric
        device_id, device_type = event.device_id, event.device_type
        base: Scope | None = None
        for metric, value in data.items():
            routes = by_metric.get(metric)
            if routes is None:
                continue
            if base is None:
                base = self._base(event)
            scope = {**data, **base, "metric": metric, "value": value}
            for sample, matcher, many in routes:
                if matcher is not None and not matcher(device_id, device_type):
                    continue
                if many is not None and next(m for m in many if m in data) != metric:
                    continue  # a multi-metric rule is evaluated once per message, for its first metric present
                sample(key, scope, event, now)

    @staticmethod
    def _route(routes: list[_Route], key: str, scope: Scope, event: Event, now: float) -> None:
        for sample, matcher, _ in routes:
            if matcher is None or matcher(event.device_id, event.device_type):
                sample(key, scope, event, now)

    def _base(self, event: Event) -> Scope:
        return {
            "metrics": event.data,
            "device_id": event.device_id,
            "device": {"id": event.device_id, "type": event.device_type},
            "event": event_view(event),
            "now": self._now,
        }

    # -- the Sink the runtimes call --------------------------------------------------------------------------

    def scope_of(self, rule: CompiledRule, event: Event | None, key: str) -> Scope:
        """The scope a timer's firing sees: rebuilt from the latest event the state kept."""
        if event is None:
            device = key or None
            return {
                "device_id": device,
                "device": {"id": device, "type": None},
                "event": None,
                "now": self._now,
            }
        if rule.source == "telemetry" and event.type == TELEMETRY:
            data = event.data
            metric = next((m for m in rule.metrics if m in data), rule.metrics[0])
            return {**data, **self._base(event), "metric": metric, "value": data.get(metric)}
        return event_scope(event, self._now)

    def fire(self, runtime: RuleRuntime, key: str, number: int, scope: Scope, now: float) -> None:
        self.stats.firings += 1
        rule = runtime.rule
        self._dirty_counters.add(runtime)
        self._dirty_event.set()
        data: dict[str, Any] = {
            "rule": rule.id,
            "severity": rule.severity,
            "device_id": key or None,
            "firing": number,
        }
        if rule.spec.description:
            data["description"] = rule.spec.description
        self._alert(ALERT, rule, key, scope, data, now)
        if rule.actions:
            info = {
                "id": rule.id,
                "severity": rule.severity,
                "firing": number,
                "description": rule.spec.description,
            }
            try:
                self._jobs.put_nowait(
                    (runtime, key, number, {**scope, "rule": info, "severity": rule.severity})
                )
            except asyncio.QueueFull:
                self._dropped(rule, f"the actions of firing {number}")

    def cleared(self, runtime: RuleRuntime, key: str, scope: Scope, now: float) -> None:
        self.stats.clears += 1
        rule = runtime.rule
        self._alert(
            ALERT_CLEARED,
            rule,
            key,
            scope,
            {"rule": rule.id, "severity": rule.severity, "device_id": key or None},
            now,
        )

    def _alert(
        self, kind: str, rule: CompiledRule, key: str, scope: Scope, data: dict[str, Any], now: float
    ) -> None:
        for name in rule.alert_keys:
            if name in scope:
                data[name] = scope[name]
        device = scope.get("device")
        event = Event(
            kind,
            data,
            device_id=key or None,
            device_type=device.get("type") if isinstance(device, dict) else None,
            ts=now,
            source=f"rule:{rule.id}",
        )
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped(rule, f"an {kind} event")

    def _dropped(self, rule: CompiledRule, what: str) -> None:
        """Count a drop; log the 1st, 2nd, 4th, 8th ... so that a storm cannot flood the log."""
        self.stats.dropped += 1
        count = self.stats.dropped
        if count & (count - 1) == 0:
            log.warning("rule %s: %s dropped, the queue is full (%d drops so far)", rule.id, what, count)

    def schedule(self, runtime: RuleRuntime, key: str, state: DeviceState) -> None:
        deadline = state.deadline
        if deadline is None or (state.scheduled is not None and state.scheduled <= deadline):
            return  # the queued entry comes first and re-queues itself for the later deadline
        state.scheduled = deadline
        if not self._timers or deadline < self._timers[0][0]:
            self._timer_wake.set()
        heapq.heappush(self._timers, (deadline, next(self._order), runtime, key))

    def changed(self, runtime: RuleRuntime, key: str) -> None:
        self._dirty.add((runtime, key))
        self._dirty_event.set()

    def evicted(self, runtime: RuleRuntime, key: str) -> None:
        self.stats.evictions += 1
        self.changed(runtime, key)

    def failed(self, runtime: RuleRuntime, error: EvaluationError) -> None:
        self.stats.evaluation_errors += 1
        runtime.last_error = str(error)
        log.debug("rule %s: %s", runtime.rule.id, error)

    # -- background tasks ------------------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        heap, clock = self._timers, self._clock
        while True:
            self._timer_wake.clear()
            now = clock.now()
            while heap and heap[0][0] <= now:
                deadline, _, runtime, key = heapq.heappop(heap)
                runtime.expire(key, deadline, now)
            if not heap:
                await self._timer_wake.wait()
                continue
            sleeper = asyncio.ensure_future(clock.sleep_until(heap[0][0]))
            waker = asyncio.ensure_future(self._timer_wake.wait())
            try:
                await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def _run_flusher(self) -> None:
        while True:
            await self._dirty_event.wait()
            if self._flush_interval > 0:
                await self._clock.sleep_until(self._clock.now() + self._flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write every changed state to the store now (the background flusher calls this after each change)."""
        self._dirty_event.clear()
        dirty, self._dirty = self._dirty, set()
        counters, self._dirty_counters = self._dirty_counters, set()
        stale, self._stale = self._stale, []
        ns = self._namespace
        batch: list[tuple[str, str, Any]] = [(ns, key, None) for key in stale]
        for runtime, key in dirty:
            state = runtime.table.get(key)
            record = state.checkpoint(runtime.keeps_event) if state is not None else None
            batch.append((ns, f"{runtime.rule.id}/{key}", record))
        batch += [
            (ns, runtime.rule.id, {"firings": runtime.firings, "digest": runtime.rule.digest})
            for runtime in counters
        ]
        if not batch:
            return
        try:
            await self._store.save([], [], states=batch)
        except asyncio.CancelledError:
            self._requeue(dirty, counters, stale)
            raise
        except Exception:
            self.stats.store_failures += 1
            log.exception("rule state not saved (%d records): will retry", len(batch))
            self._requeue(dirty, counters, stale)

    def _requeue(
        self, dirty: set[tuple[RuleRuntime, str]], counters: set[RuleRuntime], stale: list[str]
    ) -> None:
        self._dirty |= dirty
        self._dirty_counters |= counters
        self._stale += stale
        self._dirty_event.set()

    async def _run_emitter(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._host.emit(event)
            except Exception:
                self.stats.emit_failures += 1
                log.exception("%s event of %s not emitted", event.type, event.source)
            finally:
                self._events.task_done()

    async def _run_worker(self) -> None:
        while True:
            runtime, key, number, scope = await self._jobs.get()
            try:
                await self._run_actions(runtime, key, number, scope)
            finally:
                self._jobs.task_done()

    async def _run_actions(self, runtime: RuleRuntime, key: str, number: int, scope: Scope) -> None:
        """Run a firing's actions in order; a failed action is counted and the next one still runs."""
        rule = runtime.rule
        assert self._http is not None
        for index, action in enumerate(rule.actions):
            ctx = ActionContext(
                idempotency_key=f"{rule.id}:{key}:{number}:{index}",
                scope=scope,
                host=self._host,
                control=self._control,
                notifiers=self._notifiers,
                http=self._http,
                now=self._clock.now,
            )
            try:
                await action.kind.run(action.config, ctx)
            except ActionError as exc:
                log.warning("rule %s: action %d (%s) failed: %s", rule.id, index, action.type, exc)
                self._action_failed(runtime, index, exc)
            except Exception as exc:
                log.exception("rule %s: action %d (%s) raised", rule.id, index, action.type)
                self._action_failed(runtime, index, ActionError(TASK_FAILED, f"{type(exc).__name__}: {exc}"))
            else:
                self.stats.actions_run += 1

    def _action_failed(self, runtime: RuleRuntime, index: int, error: ActionError) -> None:
        self.stats.action_failures += 1
        if error.retryable:
            self.stats.action_failures_retryable += 1
        runtime.last_error = f"actions.{index}: {error}"

    # -- inspection -----------------------------------------------------------------------------------------

    def rule_status(self) -> dict[str, dict[str, Any]]:
        """Per rule: its kind, devices remembered, active alerts, firings and the latest error."""
        return {
            rule_id: {
                "kind": runtime.rule.kind,
                "devices": len(runtime.table),
                "active": sum(1 for s in runtime.table.states.values() if s.fired),
                "firings": runtime.firings,
                "last_error": runtime.last_error,
            }
            for rule_id, runtime in self._by_id.items()
        }
