"""What each kind of rule does with an event and with its timer, for one device at a time.

``CompiledRule`` is a rule as loaded (immutable, shareable between engines); a ``RuleRuntime`` is that rule
inside one ``RuleEngine``, with its bounded table of device states. The runtime decides; the engine (the
``Sink``) does the side effects: alerts and actions, timers, persistence, counters.

    LevelRule        telemetry and device-state conditions: fire on the rising edge (after ``for``), re-arm on
                     the falling edge or on ``clear``
    RateRule         a LevelRule over the change per ``per`` seconds between consecutive samples
    WindowRule       a LevelRule over an aggregate of a sliding window
    OccurrenceRule   events and MQTT messages: every matching one fires (``cooldown`` permitting)
    SequenceRule     event types in order from one device within ``within``
    AbsenceRule      no matching event from a device for ``absence`` seconds
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, Protocol

from workflows.compiler import CompiledAction
from workflows.errors import EvaluationError
from workflows.events import DEVICE_STATE, Event
from workflows.expressions import Condition
from workflows.rule_definition import RuleSpec, WindowSpec
from workflows.rule_state import DeviceState, DeviceTable, WindowSeries

Scope = dict[str, Any]
Kind = Literal["level", "rate", "window", "occurrence", "sequence", "absence"]

ABSENCE_SLACK = 0.05
"""A watchdog's ``last_seen`` is rewritten to the store once it lags by this fraction of the duration."""
_MATCH_CACHE = 4096


class DeviceMatcher:
    """``devices: {id: <glob>, type: <type>}``; glob results are cached per device id (bounded)."""

    __slots__ = ("_cache", "pattern", "type")

    def __init__(self, pattern: str | None, device_type: str | None) -> None:
        self.pattern = pattern
        self.type = device_type
        self._cache: dict[str, bool] = {}

    def __call__(self, device_id: str | None, device_type: str | None) -> bool:
        if self.type is not None and device_type != self.type:
            return False
        if self.pattern is None:
            return True
        if device_id is None:
            return False
        hit = self._cache.get(device_id)
        if hit is None:
            if len(self._cache) >= _MATCH_CACHE:
                self._cache.clear()
            hit = self._cache[device_id] = fnmatchcase(device_id, self.pattern)
        return hit


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A validated rule with its conditions and actions compiled."""

    spec: RuleSpec
    file: str
    kind: Kind
    source: str
    """``telemetry``, ``event``, ``state``, ``message`` or ``sequence``."""
    metrics: tuple[str, ...]
    event_types: tuple[str, ...]
    topic: str | None
    matcher: DeviceMatcher | None
    condition: Condition | None
    """``when.condition`` (or ``rate``/``window``'s condition), compiled."""
    test: Callable[[Scope], Any] | None
    """The condition (its truth value decides), None when every selected event matches."""
    clear: Condition | None
    actions: tuple[CompiledAction, ...]
    alert_keys: tuple[str, ...]
    """Scope names copied into the ``alert`` event's data."""
    digest: str
    """Hash of what the rule watches and how (not its actions): stored state is kept across a restart only
    while this is unchanged."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def severity(self) -> str:
        return self.spec.severity

    @property
    def hold(self) -> float | None:
        return self.spec.for_

    @property
    def cooldown(self) -> float | None:
        return self.spec.cooldown


class RuleStats:
    """Counters of one engine (read them as ``engine.stats.as_dict()``)."""

    __slots__ = (
        "action_failures",
        "action_failures_retryable",
        "actions_run",
        "clears",
        "dropped",
        "emit_failures",
        "evaluation_errors",
        "evaluations",
        "evictions",
        "firings",
        "messages",
        "store_failures",
        "suppressed",
        "window_overflows",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Sink(Protocol):
    """What a runtime asks of its engine."""

    stats: RuleStats

    def fire(self, rule: RuleRuntime, key: str, number: int, scope: Scope, now: float) -> None: ...

    def cleared(self, rule: RuleRuntime, key: str, scope: Scope, now: float) -> None: ...

    def schedule(self, rule: RuleRuntime, key: str, state: DeviceState) -> None: ...

    def changed(self, rule: RuleRuntime, key: str) -> None: ...

    def evicted(self, rule: RuleRuntime, key: str) -> None: ...

    def failed(self, rule: RuleRuntime, error: EvaluationError) -> None: ...

    def scope_of(self, rule: CompiledRule, event: Event | None, key: str) -> Scope: ...


class RuleRuntime:
    """A compiled rule inside one engine. ``sample`` sees every event the engine routes to the rule."""

    __slots__ = ("firings", "last_error", "rule", "sink", "table")
    keeps_event = False
    """Whether the durable record carries the latest event (to rebuild a timer firing's scope after a restart)."""

    def __init__(self, rule: CompiledRule, sink: Sink, limit: int) -> None:
        self.rule = rule
        self.sink = sink
        self.table = DeviceTable(limit)
        self.firings = 0
        self.last_error: str | None = None

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        raise NotImplementedError

    def on_deadline(self, key: str, state: DeviceState, now: float) -> None:
        """The state's deadline has come."""

    def expire(self, key: str, deadline: float, now: float) -> None:
        """A timer entry is due; entries superseded by a later deadline are re-queued, stale ones skipped."""
        state = self.table.get(key)
        if state is None or state.scheduled != deadline:
            return
        state.scheduled = None
        if state.deadline is None:
            return
        if state.deadline > now:
            self.sink.schedule(self, key, state)
        else:
            self.on_deadline(key, state, now)

    def restore(self, key: str, record: dict[str, Any]) -> None:
        state = DeviceState.from_record(record)
        self.add(key, state)
        if state.deadline is not None:
            self.sink.schedule(self, key, state)

    def add(self, key: str, state: DeviceState) -> DeviceState:
        evicted = self.table.add(key, state)
        if evicted is not None:
            self.sink.evicted(self, evicted)
        return state

    def settle(self, key: str, state: DeviceState, now: float) -> None:
        """Forget a state that has nothing left to remember."""
        if state.idle(now):
            self.table.remove(key)
            self.sink.changed(self, key)

    def check(self, scope: Scope) -> bool | None:
        """The rule's test on ``scope``; None when it cannot be evaluated (counted, remembered)."""
        test = self.rule.test
        if test is None:
            return True
        self.sink.stats.evaluations += 1
        try:
            return bool(test(scope))
        except EvaluationError as exc:
            self.sink.failed(self, exc)
            return None

    def attempt(self, key: str, state: DeviceState | None, scope: Scope, now: float, *, latch: bool) -> None:
        """Fire unless a cooldown runs; a timer-driven firing (the state has a deadline) waits for its end."""
        sink = self.sink
        if state is not None and state.cooldown_until > now:
            sink.stats.suppressed += 1
            if state.deadline is not None:
                state.deadline = state.cooldown_until
                sink.schedule(self, key, state)
                sink.changed(self, key)
            return
        cooldown = self.rule.cooldown
        if state is None and cooldown is not None:
            state = self.add(key, DeviceState())
        if state is not None:
            state.fired = latch
            state.since = state.deadline = None
            if cooldown is not None:
                state.cooldown_until = now + cooldown
            sink.changed(self, key)
        self.firings += 1
        sink.fire(self, key, self.firings, scope, now)


class LevelRule(RuleRuntime):
    """Fires when the condition becomes true (and has held for ``for``); re-arms when it becomes false, or when
    ``clear`` is true if the rule has one (hysteresis)."""

    __slots__ = ()
    keeps_event = True

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        # The hot path of a threshold: ``check`` and ``DeviceTable.touch`` inlined.
        sink = self.sink
        sink.stats.evaluations += 1
        try:
            ok = self.rule.test(scope)  # type: ignore[misc]  # a level rule always has a test
        except EvaluationError as exc:
            sink.failed(self, exc)
            return
        states = self.table.states
        state = states.get(key)
        if state is None:
            if not ok:
                return
            state = self.add(key, DeviceState())
        else:
            states.move_to_end(key)
        self.level(key, state, bool(ok), scope, event, now)

    def level(self, key: str, state: DeviceState, ok: bool, scope: Scope, event: Event, now: float) -> None:
        state.event = event
        if state.fired:
            if self.rearms(ok, scope):
                state.fired = False
                self.sink.cleared(self, key, scope, now)
                self.sink.changed(self, key)
                self.settle(key, state, now)
            return
        if not ok:
            if state.since is not None:
                state.since = state.deadline = None
                self.sink.changed(self, key)
            self.settle(key, state, now)
            return
        hold = self.rule.hold
        if hold is not None:
            if state.since is None:
                state.since = now
                state.deadline = now + hold
                self.sink.schedule(self, key, state)
                self.sink.changed(self, key)
                return
            if state.deadline is not None and now < state.deadline:
                return
        self.attempt(key, state, scope, now, latch=True)

    def rearms(self, ok: bool, scope: Scope) -> bool:
        clear = self.rule.clear
        if clear is None:
            return not ok
        try:
            return clear(scope)
        except EvaluationError as exc:
            self.sink.failed(self, exc)
            return False

    def on_deadline(self, key: str, state: DeviceState, now: float) -> None:
        if state.fired or state.since is None:
            return
        scope = self.sink.scope_of(self.rule, state.event, key)
        if state.extras:
            scope.update(state.extras)
        self.attempt(key, state, scope, now, latch=True)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SeriesRule(LevelRule):
    """A LevelRule whose condition reads what the series of the metric's samples adds to the scope."""

    __slots__ = ()

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        value = scope["value"]
        if not _number(value):
            self.sink.failed(self, EvaluationError(str(scope["metric"]), f"value {value!r} is not a number"))
            return
        state = self.table.touch(key) or self.add(key, DeviceState())
        extras = self.extend(state, event.ts if event.ts is not None else now, value)
        if extras is None:
            return
        full = {**scope, **extras}
        ok = self.check(full)
        if ok is None:
            return
        state.extras = extras
        self.level(key, state, ok, full, event, now)

    def extend(self, state: DeviceState, ts: float, value: float) -> dict[str, Any] | None:
        """Add the sample to the series; the names it puts in scope, or None when it cannot judge yet."""
        raise NotImplementedError


class RateRule(SeriesRule):
    """``rate`` = (value - previous) / (ts - previous ts) * ``per``; the first sample only starts the series."""

    __slots__ = ()

    def extend(self, state: DeviceState, ts: float, value: float) -> dict[str, Any] | None:
        previous = state.series
        if isinstance(previous, tuple) and ts <= previous[0]:
            return None  # a repeated or out-of-order sample says nothing about the rate
        state.series = (ts, value)
        if not isinstance(previous, tuple):
            return None
        per = self.rule.spec.rate.per  # type: ignore[union-attr]
        return {"rate": (value - previous[1]) / (ts - previous[0]) * per, "previous": previous[1]}


class WindowRule(SeriesRule):
    """The window's aggregate is in scope by its name (``avg``, ``min`` ...) with ``count``."""

    __slots__ = ()

    def extend(self, state: DeviceState, ts: float, value: float) -> dict[str, Any] | None:
        spec: WindowSpec = self.rule.spec.window  # type: ignore[assignment]
        series = state.series
        if not isinstance(series, WindowSeries):
            series = state.series = WindowSeries(spec.agg, spec.duration, spec.max_samples)
        if series.add(ts, value):
            self.sink.stats.window_overflows += 1
        return {spec.agg: series.aggregate(), "count": series.count}


class OccurrenceRule(RuleRuntime):
    """Every matching event fires; a cooldown holds back the ones that come too soon."""

    __slots__ = ()

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        if not self.check(scope):
            return
        self.attempt(key, self.table.touch(key), scope, now, latch=False)


class SequenceRule(RuleRuntime):
    """Steps are matched greedily: the next expected type advances, the first type (re)starts the window."""

    __slots__ = ()

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        spec = self.rule.spec.sequence
        assert spec is not None
        steps, kind = spec.events, event.type
        state = self.table.touch(key)
        if (
            state is not None
            and (started := state.started) is not None
            and now - started <= spec.within
            and kind == steps[state.step]
        ):
            state.step += 1
        elif kind == steps[0]:
            state = state or self.add(key, DeviceState())
            state.started = started = now
            state.step = 1
            state.deadline = now + spec.within
            self.sink.schedule(self, key, state)
        else:
            return
        self.sink.changed(self, key)
        if state.step < len(steps):
            return
        elapsed = now - started
        state.step, state.started, state.deadline = 0, None, None
        self.attempt(key, state, {**scope, "elapsed": elapsed}, now, latch=False)
        self.settle(key, state, now)

    def on_deadline(self, key: str, state: DeviceState, now: float) -> None:
        state.step, state.started, state.deadline = 0, None, None
        self.sink.changed(self, key)
        self.settle(key, state, now)


class AbsenceRule(RuleRuntime):
    """A watchdog per device, from its first matching event on; fires once per silence, clears when it speaks."""

    __slots__ = ()
    keeps_event = True

    def sample(self, key: str, scope: Scope, event: Event, now: float) -> None:
        if not self.check(scope):
            return
        duration: float = self.rule.spec.absence  # type: ignore[assignment]
        state = self.table.touch(key)
        if state is None:
            state = self.add(key, DeviceState())
            self.sink.changed(self, key)
        state.last_seen = now
        state.event = event
        if state.fired:
            state.fired = False
            self.sink.cleared(self, key, scope, now)
            self.sink.changed(self, key)
        elif state.saved_seen is None or now - state.saved_seen >= duration * ABSENCE_SLACK:
            self.sink.changed(self, key)
        state.deadline = now + duration
        self.sink.schedule(self, key, state)

    def on_deadline(self, key: str, state: DeviceState, now: float) -> None:
        duration: float = self.rule.spec.absence  # type: ignore[assignment]
        if state.fired or state.last_seen is None:
            return
        if now < state.last_seen + duration:
            state.deadline = state.last_seen + duration
            self.sink.schedule(self, key, state)
            return
        scope = self.sink.scope_of(self.rule, state.event, key)
        scope["last_seen"] = state.last_seen
        scope["silent_for"] = now - state.last_seen
        self.attempt(key, state, scope, now, latch=True)


RUNTIMES: dict[Kind, type[RuleRuntime]] = {
    "level": LevelRule,
    "rate": RateRule,
    "window": WindowRule,
    "occurrence": OccurrenceRule,
    "sequence": SequenceRule,
    "absence": AbsenceRule,
}


def state_test(
    change_from: str | None, change_to: str | None, condition: Condition | None
) -> Callable[[Scope], bool]:
    """The test of a ``state`` rule: the change matches ``from``/``to`` and the condition holds."""

    def test(scope: Scope) -> bool:
        if change_to is not None and scope["state"] != change_to:
            return False
        if change_from is not None and scope["previous_state"] != change_from:
            return False
        return condition is None or condition(scope)

    return test


def event_view(event: Event) -> dict[str, Any]:
    """``event`` as conditions and templates see it."""
    return {
        "type": event.type,
        "data": event.data,
        "device_id": event.device_id,
        "device_type": event.device_type,
        "topic": event.topic,
        "ts": event.ts,
        "source": event.source,
    }


def event_scope(event: Event, now: Callable[[], float]) -> Scope:
    """The scope of a non-telemetry event (``device.state`` adds ``state`` and ``previous_state``)."""
    scope: Scope = {
        "device_id": event.device_id,
        "device": {"id": event.device_id, "type": event.device_type},
        "event": event_view(event),
        "data": event.data,
        "topic": event.topic,
        "now": now,
    }
    if event.type == DEVICE_STATE:
        scope["state"] = event.data.get("to")
        scope["previous_state"] = event.data.get("from")
    return scope
