"""Rule-engine sections of ``bench/workflow_engine.py``: telemetry messages per second through 100 rules, the cost
of one evaluation per kind of condition and of rule, and the memory per rule and per (rule, device).
Each section measures its own baselines in the same run."""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from workflows.clock import FakeClock
from workflows.events import DEVICE_STATE, TELEMETRY, Event
from workflows.expressions import ENV, Condition
from workflows.rules import LoadedRules, RuleEngine, load_rules
from workflows.store import MemoryStore

T0 = 1_700_000_000.0
METRICS = [f"m{i:02d}" for i in range(20)]


class NullControl:
    async def start_workflow(
        self, workflow_id: str, variables: dict[str, Any], *, parent: str | None, request_id: str
    ) -> str:
        return request_id

    async def signal(self, instance_id: str, event: Event) -> None:
        return None


class NullHost:
    """A host that accepts everything and does nothing (the engine's own cost is what is measured)."""

    async def send_command(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def emit(self, event: Event) -> None:
        return None


def _engine(rules: LoadedRules | list[LoadedRules], clock: FakeClock, **options: Any) -> RuleEngine:
    return RuleEngine(
        rules,
        clock=clock,
        store=MemoryStore(),
        host=NullHost(),
        control=NullControl(),
        queue_size=100_000,
        **options,
    )


# ---------------------------------------------------------------------------------------------- rules


def rule_set(general_share: float, seed: int = 7) -> str:
    """100 rules over 20 metrics, 5 per metric. ``general_share`` of them need Jinja (filters); the others are
    plain thresholds, and/or chains and arithmetic that compile to closures. Some carry selectors and
    modifiers (``for``, ``clear``, ``cooldown``) so that the state machinery is on the path."""
    rng = random.Random(seed)
    general = set(rng.sample(range(100), round(100 * general_share)))
    lines = ["rules:"]
    for i in range(100):
        metric = METRICS[i % 20]
        other = METRICS[(i % 20) ^ 1]  # the metric sent with this one
        if i in general:
            condition = rng.choice(
                [
                    "(value - 50) | abs > 35",
                    "value | round > 85",
                    f"[value, metrics.{other} | default(0)] | max > 88",
                ]
            )
        else:
            condition = rng.choice(
                [
                    "value > 85",
                    "value < 15",
                    "value > 80 and device.type == 'sensor'",
                    f"value - metrics.{other} > 45" if i % 3 else "value > 82 or value < 12",
                ]
            )
        selector = (
            ", devices: {type: sensor}" if i % 5 == 0 else ', devices: {id: "dev-1*"}' if i % 10 == 1 else ""
        )
        modifier = ["", "for: 30s", 'clear: "value < 60"', "cooldown: 5m"][i % 4]
        extra = f", {modifier}" if modifier else ""
        lines.append(
            f'  - {{id: r{i}, when: {{telemetry: {metric}, condition: "{condition}"{selector}}}{extra}}}'
        )
    return "\n".join(lines) + "\n"


def messages(count: int, devices: int = 200, seed: int = 11) -> list[Event]:
    """Telemetry from ``devices`` sensors, each message carrying a pair of the 20 metrics (m00 with m01, m02 with
    m03 ...), so it concerns the 10 rules of that pair, plus an unwatched ``rssi``."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        device = f"dev-{rng.randrange(devices):03d}"
        pair = rng.randrange(10) * 2
        data: dict[str, Any] = {m: round(rng.gauss(50, 12), 2) for m in METRICS[pair : pair + 2]}
        data["rssi"] = -70
        out.append(Event(TELEMETRY, data, device_id=device, device_type="sensor", ts=T0 + n * 0.01))
    return out


async def _drive(
    handle: Callable[[Event], Any], events: list[Event], repeat: int, clock: FakeClock | None = None
) -> float:
    """Best seconds to hand every event to ``handle``. Every 1,000 events the loop gets a turn, and the fake
    clock (when given) moves 10 s so that timers and the state flusher run inside the measured time."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for index, event in enumerate(events):
            await handle(event)
            if index % 1000 == 999:
                await (clock.advance(10) if clock is not None else asyncio.sleep(0))
        best = min(best, time.perf_counter() - start)
    return best


async def _noop(event: Event) -> None:
    return None


async def _rules_rate(text: str, events: list[Event], repeat: int) -> dict[str, Any]:
    clock = FakeClock(T0)
    loaded = load_rules("bench.rules.yaml", text=text)
    async with _engine(loaded, clock) as engine:
        await _drive(engine.handle, events[:2000], 1, clock)  # warm the selector caches and device states
        before = engine.stats.as_dict()
        seconds = await _drive(engine.handle, events, repeat, clock)
        after = engine.stats.as_dict()
    handled = after["messages"] - before["messages"]
    fast = sum(1 for r in loaded.rules if r.condition is None or r.condition.fast)
    return {
        "rules": len(loaded.rules),
        "rules_needing_jinja": len(loaded.rules) - fast,
        "msgs_per_s": round(len(events) / seconds),
        "us_per_msg": round(seconds / len(events) * 1e6, 2),
        "evaluations_per_msg": round((after["evaluations"] - before["evaluations"]) / handled, 2),
        "firings_per_1000_msgs": round((after["firings"] - before["firings"]) / handled * 1000, 2),
    }


def bench_rules(count: int = 50_000, repeat: int = 3) -> dict[str, Any]:
    """Telemetry messages per second through 100 rules over 20 metrics, each message concerning ~10 rules."""
    events = messages(count)

    async def run() -> dict[str, Any]:
        bare = await _drive(_noop, events, repeat)
        clock = FakeClock(T0)
        async with _engine(load_rules("none.rules.yaml", text="rules: []\n"), clock) as empty:
            no_rules = await _drive(empty.handle, events, repeat, clock)
        return {
            "mixed_20pct_jinja": await _rules_rate(rule_set(0.2), events, repeat),
            "all_closures": await _rules_rate(rule_set(0.0), events, repeat),
            "half_jinja": await _rules_rate(rule_set(0.5), events, repeat),
            "baseline_bare_loop_msgs_per_s": round(count / bare),
            "baseline_engine_without_rules_msgs_per_s": round(count / no_rules),
        }

    result = asyncio.run(run())
    scope = {"value": 85.0}
    compiled = ENV.compile_expression("value > 80", undefined_to_none=False)
    result["baseline_compile_expression_call_us"] = round(_per_call(lambda: compiled(**scope)), 3)
    result["target_msgs_per_s"] = 30_000
    result["meets_target"] = result["mixed_20pct_jinja"]["msgs_per_s"] >= 30_000
    return result


# ---------------------------------------------------------------------------------------------- conditions


def _per_call(call: Callable[[], Any], number: int = 200_000, repeat: int = 5) -> float:
    """Best µs per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


CONDITIONS = {
    "fast_comparison": "value > 80",
    "fast_and_or_chain": "value > 80 and metrics.humidity < 30 or device.type == 'boiler'",
    "fast_arithmetic": "metrics.a - metrics.b > 2",
    "jinja_filter": "value | abs > 3",
    "jinja_filter_chain": "(metrics.a - metrics.b) | abs > 2 and value is number",
}

KIND_RULES = {
    "level_threshold": ("{id: k, when: {telemetry: t, condition: 'value > 1000'}}", "telemetry"),
    "level_with_for_pending": ("{id: k, when: {telemetry: t, condition: 'value > 0'}, for: 1h}", "telemetry"),
    "rate": ("{id: k, when: {telemetry: t}, rate: {per: 1m, condition: 'rate > 1000'}}", "telemetry"),
    "window_avg": (
        "{id: k, when: {telemetry: t}, window: {duration: 1m, agg: avg, condition: 'avg > 1000'}}",
        "telemetry",
    ),
    "window_max": (
        "{id: k, when: {telemetry: t}, window: {duration: 1m, agg: max, condition: 'max > 1000'}}",
        "telemetry",
    ),
    "absence": ("{id: k, when: {event: telemetry}, absence: 1h}", "telemetry"),
    "state": ("{id: k, when: {state: {to: offline}}}", "state"),
    "event_no_match": ("{id: k, when: {event: device.state, condition: \"data.to == 'gone'\"}}", "state"),
    "sequence": ("{id: k, sequence: {events: [device.state, x], within: 1h}}", "state"),
}


def _kind_events(source: str, count: int) -> list[Event]:
    if source == "telemetry":
        return [
            Event(TELEMETRY, {"t": float(i % 50)}, device_id=f"d{i % 100}", ts=T0 + i) for i in range(count)
        ]
    return [
        Event(DEVICE_STATE, {"from": "online", "to": "online"}, device_id=f"d{i % 100}", ts=T0 + i)
        for i in range(count)
    ]


def bench_conditions(count: int = 20_000, repeat: int = 3) -> dict[str, Any]:
    """µs per evaluation for each kind of condition, and µs per message through one rule of each kind."""
    scope = {
        "value": 85.0,
        "metrics": {"a": 5.0, "b": 1.0, "humidity": 40.0},
        "device": {"id": "d1", "type": "sensor"},
        "device_id": "d1",
    }
    out: dict[str, Any] = {}
    for name, source in CONDITIONS.items():
        condition = Condition(source)
        out[name] = {
            "source": source,
            "fast": condition.fast,
            "us": round(_per_call(lambda c=condition: c(scope)), 3),
        }
    compiled = ENV.compile_expression("value > 80", undefined_to_none=False)
    out["baseline_compile_expression_call"] = {
        "source": "value > 80",
        "us": round(_per_call(lambda: compiled(**scope)), 3),
    }

    async def per_kind() -> dict[str, Any]:
        clock = FakeClock(T0)
        kinds: dict[str, Any] = {}
        async with _engine(load_rules("none.yaml", text="rules: []\n"), clock) as empty:
            baseline = await _drive(empty.handle, _kind_events("telemetry", count), repeat)
        kinds["baseline_engine_without_rules_us_per_msg"] = round(baseline / count * 1e6, 3)
        for name, (rule, source) in KIND_RULES.items():
            events = _kind_events(source, count)
            async with _engine(load_rules("k.yaml", text=f"rules:\n  - {rule}\n"), FakeClock(T0)) as engine:
                seconds = await _drive(engine.handle, events, repeat)
            kinds[name] = {"us_per_msg": round(seconds / count * 1e6, 3)}
        return kinds

    out["per_rule_kind"] = asyncio.run(per_kind())
    return out


# ---------------------------------------------------------------------------------------------- memory

MEMORY_RULES = {
    "level_for_pending": ("{id: k, when: {telemetry: t, condition: 'value > 0'}, for: 1h}", 1),
    "level_fired": ("{id: k, when: {telemetry: t, condition: 'value > 0'}}", 1),
    "rate": ("{id: k, when: {telemetry: t}, rate: {condition: 'rate > 1e9'}}", 2),
    "window_avg_60_samples": (
        "{id: k, when: {telemetry: t}, window: {duration: 1h, agg: avg, condition: 'avg > 1e9'}}",
        60,
    ),
    "window_max_60_samples": (
        "{id: k, when: {telemetry: t}, window: {duration: 1h, agg: max, condition: 'max > 1e9'}}",
        60,
    ),
    "absence_watchdog": ("{id: k, when: {event: telemetry}, absence: 1h}", 1),
    "sequence_in_progress": ("{id: k, sequence: {events: [telemetry, x], within: 1h}}", 1),
    "occurrence_cooldown": ("{id: k, when: {event: telemetry}, cooldown: 1h}", 1),
}
"""rule -> samples per device (a rate needs two to have one, a window of 60 samples)."""


class NullStore:
    """Keeps nothing, so that only the engine's own memory is traced."""

    async def save(self, instances: Any, history: Any, states: Any = ()) -> None:
        return None

    async def get_states(self, namespace: str) -> dict[str, Any]:
        return {}


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` (its result kept alive)."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, kept


async def _state_bytes(rule: str, devices: int, samples: int) -> int:
    """Bytes per device a rule holds once ``devices`` devices sent ``samples`` messages each (alert queue
    drained, changed state flushed: only the state itself remains)."""
    clock = FakeClock(T0)
    loaded = load_rules("m.yaml", text=f"rules:\n  - {rule}\n")
    engine = RuleEngine(
        loaded,
        clock=clock,
        store=NullStore(),
        host=NullHost(),
        control=NullControl(),
        max_devices=devices + 1,
        queue_size=devices + 1,
    )
    async with engine:
        await engine.handle(Event(TELEMETRY, {"t": 0.5}, device_id="warm-up", ts=T0 - 1))
        await clock.settle()
        await engine.flush()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(samples):
            for d in range(devices):
                await engine.handle(Event(TELEMETRY, {"t": 1.0 + n}, device_id=f"dev-{d:05d}", ts=T0 + n))
            await clock.settle()  # the emitter drains the alert queue
        await engine.flush()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        assert engine.rule_status()["k"]["devices"] >= devices
    return used


def bench_rule_memory(devices: int = 5000) -> dict[str, Any]:
    """tracemalloc: bytes per compiled rule, per rule inside an engine, per (rule, device) state by kind."""
    tracemalloc.start()
    try:
        _traced(lambda: load_rules("warm-up.yaml", text=rule_set(0.5)))  # one-time caches (Jinja, pydantic)
        closures, kept = _traced(lambda: load_rules("closures.yaml", text=rule_set(0.0)))
        jinja, _ = _traced(lambda: load_rules("jinja.yaml", text=rule_set(1.0)))
        runtimes, _ = _traced(lambda: _engine(kept, FakeClock(T0)))
        states = {
            name: round(asyncio.run(_state_bytes(rule, devices, samples)) / devices)
            for name, (rule, samples) in MEMORY_RULES.items()
        }
    finally:
        tracemalloc.stop()
    return {
        "compiled_rule_bytes_closure_condition": round(closures / 100),
        "compiled_rule_bytes_jinja_condition": round(jinja / 100),
        "engine_bytes_per_rule_excl_compiled": round(runtimes / 100),
        "per_rule_device_state_bytes": states,
        "devices_measured": devices,
        "note": "a state includes its device-table entry, the device id string and the latest event it keeps",
    }
