"""The rule engine: each source, each modifier, device selectors and actions, on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.rule_fakes import T0, rule_engine, state_change, telemetry
from workflows.events import MQTT_MESSAGE, Event


async def test_a_threshold_fires_on_the_rising_edge_and_clears_on_the_falling_edge() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    severity: critical
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=70), telemetry(temperature=85), telemetry(temperature=90))
        (alert,) = h.alerts()
        assert alert.data == {
            "rule": "hot",
            "severity": "critical",
            "device_id": "d1",
            "firing": 1,
            "metric": "temperature",
            "value": 85,
        }
        assert (alert.device_id, alert.ts, alert.source) == ("d1", T0, "rule:hot")
        await h.send(telemetry(temperature=60))
        (cleared,) = h.alerts("alert.cleared")
        assert cleared.data["value"] == 60
        await h.send(telemetry(temperature=81))
        assert [a.data["firing"] for a in h.alerts()] == [1, 2]
        assert h.engine.stats.evaluations == 5
        assert (h.engine.stats.firings, h.engine.stats.clears) == (2, 1)


async def test_clear_is_hysteresis() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    clear: "value < 75"
"""
    async with rule_engine(rules) as h:
        await h.send(*(telemetry(temperature=v) for v in (85, 78, 82, 79, 76)))
        assert len(h.alerts()) == 1
        assert h.alerts("alert.cleared") == []
        await h.send(telemetry(temperature=74), telemetry(temperature=78), telemetry(temperature=81))
        assert len(h.alerts("alert.cleared")) == 1
        assert len(h.alerts()) == 2


async def test_for_fires_at_the_deadline_without_another_message() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 5m
    actions: [{type: notify, message: "{{ device_id }} at {{ value }}"}]
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=85))
        await h.advance(299)
        assert h.alerts() == []
        await h.send(telemetry(temperature=88))
        await h.advance(1)
        (alert,) = h.alerts()
        assert alert.ts == T0 + 300
        assert h.notifier.sent[0]["message"] == "d1 at 88"  # the latest reading before the deadline


async def test_for_restarts_when_the_condition_breaks() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 5m
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=85))
        await h.advance(200)
        await h.send(telemetry(temperature=79))
        await h.advance(100)
        await h.send(telemetry(temperature=86))
        await h.advance(299)
        assert h.alerts() == []
        await h.advance(1)
        assert [a.ts for a in h.alerts()] == [T0 + 600]
        assert h.engine.rule_status()["hot"]["active"] == 1


async def test_cooldown_holds_back_a_second_firing_per_device() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    cooldown: 10m
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=85), telemetry("d2", temperature=85))
        await h.send(telemetry(temperature=70), telemetry(temperature=90))
        assert h.alert_devices() == ["d1", "d2"]
        assert h.engine.stats.suppressed == 1
        await h.advance(600)
        await h.send(telemetry(temperature=91))
        assert h.alert_devices() == ["d1", "d2", "d1"]
        assert h.alerts()[-1].ts == T0 + 600


async def test_a_for_that_ends_inside_a_cooldown_fires_when_the_cooldown_ends() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    for: 1m
    cooldown: 10m
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=85))
        await h.advance(60)
        await h.send(telemetry(temperature=70), telemetry(temperature=85))
        await h.advance(120)
        assert len(h.alerts()) == 1
        await h.advance(600)
        assert [a.ts for a in h.alerts()] == [T0 + 60, T0 + 660]


async def test_severity_and_rule_are_in_the_action_scope() -> None:
    rules = """
rules:
  - id: hot
    description: too hot
    when: {telemetry: temperature, condition: "value > 80"}
    severity: info
    actions:
      - {type: notify, severity: critical, message: "{{ rule.id }}/{{ severity }}/#{{ rule.firing }}: {{ rule.description }}"}
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=85))
        assert h.notifier.sent == [{"message": "hot/info/#1: too hot", "severity": "critical", "data": {}}]
        assert h.alerts()[0].data["description"] == "too hot"


async def test_rate_is_the_change_per_unit_between_consecutive_samples() -> None:
    rules = """
rules:
  - id: pressure-drop
    when: {telemetry: pressure}
    rate: {per: 1m, condition: "rate < -2"}
    actions: [{type: log, message: "{{ rate }} {{ previous }}"}]
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(ts=T0, pressure=100.0))
        assert h.engine.stats.evaluations == 0  # one sample has no rate
        await h.send(telemetry(ts=T0 + 30, pressure=99.5))  # -1/min
        await h.send(telemetry(ts=T0 + 20, pressure=10.0))  # out of order: ignored
        assert h.alerts() == []
        await h.send(telemetry(ts=T0 + 60, pressure=97.0))  # -5/min
        (alert,) = h.alerts()
        assert alert.data["rate"] == pytest.approx(-5.0)
        assert alert.data["previous"] == 99.5
        await h.send(telemetry(ts=T0 + 120, pressure=97.0))
        assert len(h.alerts("alert.cleared")) == 1


async def test_rate_refuses_values_that_are_not_numbers() -> None:
    rules = """
rules:
  - {id: r, when: {telemetry: p}, rate: {condition: "rate > 1"}}
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(p="high"), telemetry(p=True))
        assert h.engine.stats.evaluation_errors == 2
        assert h.engine.rule_status()["r"]["last_error"] == "`p`: value True is not a number"


async def test_window_average_over_a_sliding_window() -> None:
    rules = """
rules:
  - id: warm
    when: {telemetry: t}
    window: {duration: 5m, agg: avg, condition: "count >= 3 and avg > 70"}
"""
    async with rule_engine(rules) as h:
        for offset, value in ((0, 90), (60, 60), (120, 66)):  # avg 72 with only 3 samples
            await h.send(telemetry(ts=T0 + offset, t=value))
        assert h.alert_devices() == ["d1"]
        assert h.alerts()[0].data == {
            "rule": "warm",
            "severity": "warning",
            "device_id": "d1",
            "firing": 1,
            "metric": "t",
            "value": 66,
            "avg": 72.0,
            "count": 3,
        }
        await h.send(telemetry(ts=T0 + 301, t=66))  # 90 leaves the window: avg 64
        assert h.alerts("alert.cleared")[0].data["avg"] == 64.0


@pytest.mark.parametrize(("agg", "expected"), [("min", 3.0), ("max", 9.0), ("sum", 20.0), ("count", 4)])
async def test_window_aggregates(agg: str, expected: float) -> None:
    rules = f"""
rules:
  - id: w
    when: {{telemetry: t}}
    window: {{duration: 1m, agg: {agg}, condition: "count >= 4"}}
"""
    async with rule_engine(rules) as h:
        for offset, value in ((0, 100.0), (61, 5.0), (62, 9.0), (63, 3.0), (64, 3.0)):
            await h.send(telemetry(ts=T0 + offset, t=value))
        assert h.alerts()[0].data[agg] == expected


async def test_window_sample_cap_is_counted() -> None:
    rules = """
rules:
  - {id: w, when: {telemetry: t}, window: {duration: 1h, agg: max, condition: "max > 50", max_samples: 2}}
"""
    async with rule_engine(rules) as h:
        await h.send(*(telemetry(ts=T0 + i, t=v) for i, v in enumerate((60, 10, 20))))
        assert h.engine.stats.window_overflows == 1
        assert len(h.alerts("alert.cleared")) == 1  # 60 was pushed out: max is 20


async def test_sequence_in_order_within_the_window_fires_per_device() -> None:
    rules = """
rules:
  - id: intrusion
    when: {devices: {type: door}}
    sequence: {events: [door.open, motion, door.close], within: 2m}
    actions: [{type: log, message: "{{ elapsed }}"}]
"""
    async with rule_engine(rules) as h:

        def ev(kind: str, device: str = "door-1") -> Event:
            return Event(kind, {}, device_id=device, device_type="door")

        await h.send(ev("door.open"), ev("door.open", "door-2"), ev("unrelated"), ev("motion"))
        await h.advance(30)
        await h.send(ev("door.close", "door-2"), ev("door.close"))
        (alert,) = h.alerts()
        assert (alert.device_id, alert.data["elapsed"]) == ("door-1", 30)
        await h.send(ev("motion"), ev("door.close"))  # no open first
        await h.send(Event("door.open", {}, device_id="door-3", device_type="window"))
        assert len(h.alerts()) == 1


async def test_sequence_too_slow_does_not_fire_and_the_first_step_restarts_it() -> None:
    rules = """
rules:
  - {id: s, sequence: {events: [a, b, c], within: 1m}}
"""
    async with rule_engine(rules) as h:
        await h.send(Event("a", device_id="d1"), Event("b", device_id="d1"))
        await h.advance(61)
        assert h.engine.rule_status()["s"]["devices"] == 0  # the window expired: the partial sequence is gone
        await h.send(Event("c", device_id="d1"))
        await h.send(Event("a", device_id="d1"))
        await h.advance(50)
        await h.send(Event("a", device_id="d1"), Event("b", device_id="d1"))
        await h.advance(50)
        await h.send(Event("c", device_id="d1"))  # 100 s after the first a, 50 s after the second
        assert len(h.alerts()) == 1


async def test_absence_fires_once_per_silence_and_clears_when_the_device_speaks() -> None:
    rules = """
rules:
  - id: silent
    when: {event: telemetry}
    absence: 5m
    actions: [{type: log, message: "{{ device_id }} {{ silent_for }}"}]
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry("d1", t=1), telemetry("d2", t=1))
        await h.advance(200)
        await h.send(telemetry("d2", t=2))
        await h.advance(100)
        assert h.alert_devices() == ["d1"]
        assert (h.alerts()[0].ts, h.alerts()[0].data["silent_for"]) == (T0 + 300, 300)
        await h.advance(3600)
        assert h.alert_devices() == ["d1", "d2"]
        assert h.alerts()[1].ts == T0 + 500
        await h.send(telemetry("d1", t=3))
        assert h.alert_devices("alert.cleared") == ["d1"]
        await h.advance(299)
        assert len(h.alerts()) == 2
        await h.advance(1)
        assert h.alert_devices() == ["d1", "d2", "d1"]


async def test_absence_counts_only_matching_events_and_never_watches_unseen_devices() -> None:
    rules = """
rules:
  - id: heartbeat
    when: {message: "devices/+/heartbeat", condition: "data.ok"}
    absence: 1m
"""
    async with rule_engine(rules) as h:

        def beat(ok: bool) -> Event:
            return Event(MQTT_MESSAGE, {"ok": ok}, device_id="pump-1", topic="devices/pump-1/heartbeat")

        await h.send(beat(True))
        await h.advance(30)
        await h.send(
            beat(False), Event(MQTT_MESSAGE, {"ok": True}, device_id="pump-1", topic="devices/pump-1/x")
        )
        await h.advance(30)
        assert h.alert_devices() == ["pump-1"]
        assert h.engine.rule_status()["heartbeat"]["devices"] == 1


async def test_event_rules_fire_on_every_matching_event() -> None:
    rules = """
rules:
  - id: forced
    when: {event: door.forced, condition: "data.zone == 'vault'"}
  - id: anything
    when: {event: "*", devices: {id: "cam-*"}}
"""
    async with rule_engine(rules) as h:
        vault = Event("door.forced", {"zone": "vault"}, device_id="door-1")
        await h.send(vault, vault, Event("door.forced", {"zone": "lobby"}, device_id="door-1"))
        await h.send(Event("x", device_id="cam-1"), telemetry("cam-2", t=1), Event("x", device_id="door-1"))
        assert [(a.data["rule"], a.device_id) for a in h.alerts()] == [
            ("forced", "door-1"),
            ("forced", "door-1"),
            ("anything", "cam-1"),
            ("anything", "cam-2"),
        ]


async def test_event_cooldown() -> None:
    rules = """
rules:
  - {id: forced, when: {event: door.forced}, cooldown: 1m}
"""
    async with rule_engine(rules) as h:
        await h.send(
            *[Event("door.forced", device_id="door-1")] * 3, Event("door.forced", device_id="door-2")
        )
        await h.advance(60)
        await h.send(Event("door.forced", device_id="door-1"))
        assert h.alert_devices() == ["door-1", "door-2", "door-1"]
        assert h.engine.stats.suppressed == 2


async def test_state_rules_hold_a_level() -> None:
    rules = """
rules:
  - id: offline
    when: {state: {to: offline}, condition: "previous_state != 'maintenance'"}
    for: 5m
    actions: [{type: log, message: "{{ device_id }} is {{ state }}"}]
"""
    async with rule_engine(rules) as h:
        await h.send(state_change("d1", "online", "offline"), state_change("d2", "maintenance", "offline"))
        await h.send(state_change("d3", "online", "offline"))
        await h.advance(60)
        await h.send(state_change("d3", "offline", "online"))
        await h.advance(240)
        (alert,) = h.alerts()
        assert (alert.device_id, alert.ts, alert.data["state"]) == ("d1", T0 + 300, "offline")
        await h.send(state_change("d1", "offline", "online"))
        assert h.alerts("alert.cleared")[0].data["state"] == "online"


async def test_message_rules_match_the_topic_filter() -> None:
    rules = """
rules:
  - id: alarm
    when: {message: "site/+/alarm", condition: "data.level > 2"}
    actions: [{type: log, message: "{{ topic }}"}]
"""
    async with rule_engine(rules) as h:
        for topic, level in (
            ("site/a/alarm", 3),
            ("site/a/alarm", 1),
            ("site/a/b/alarm", 5),
            ("other/a/alarm", 9),
        ):
            await h.send(Event(MQTT_MESSAGE, {"level": level}, topic=topic))
        (alert,) = h.alerts()
        assert alert.data["topic"] == "site/a/alarm"
        assert alert.device_id is None


async def test_a_multi_metric_rule_is_evaluated_once_per_message() -> None:
    rules = """
rules:
  - id: muggy
    when: {telemetry: [temperature, humidity], condition: "metrics.temperature > 30 and metrics.humidity > 80"}
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(temperature=35, humidity=90, other=1))
        await h.send(telemetry(humidity=95))  # no temperature: the condition cannot be evaluated
        assert h.engine.stats.evaluations == 2
        assert h.engine.stats.evaluation_errors == 1
        assert h.engine.rule_status()["muggy"]["last_error"].endswith("metrics.temperature is undefined")
        assert len(h.alerts()) == 1


async def test_device_selectors() -> None:
    rules = """
rules:
  - {id: glob, when: {telemetry: t, devices: {id: "boiler-*"}, condition: "value > 1"}}
  - {id: typed, when: {telemetry: t, devices: {type: boiler}, condition: "value > 1"}}
  - {id: both, when: {telemetry: t, devices: {id: "boiler-?", type: boiler}, condition: "value > 1"}}
"""
    async with rule_engine(rules) as h:
        await h.send(
            telemetry("boiler-1", "boiler", t=5),
            telemetry("boiler-22", None, t=5),
            telemetry("pump-1", "boiler", t=5),
            telemetry(None, None, t=5),
        )
        fired = sorted((a.data["rule"], a.device_id or "") for a in h.alerts())
        assert fired == [
            ("both", "boiler-1"),
            ("glob", "boiler-1"),
            ("glob", "boiler-22"),
            ("typed", "boiler-1"),
            ("typed", "pump-1"),
        ]


async def test_an_evaluation_error_is_counted_and_other_rules_still_run() -> None:
    rules = """
rules:
  - {id: broken, when: {telemetry: t, condition: "value > metrics.missing"}}
  - {id: fine, when: {telemetry: t, condition: "value > 1"}}
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry(t=5), telemetry("d2", t=5))
        assert h.alert_devices() == ["d1", "d2"]
        assert h.engine.stats.evaluation_errors == 2
        assert "metrics.missing is undefined" in h.engine.rule_status()["broken"]["last_error"]


async def test_workflow_actions_reach_the_control() -> None:
    rules = """
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    actions:
      - {type: start_workflow, workflow: cool-down, variables: {device: "{{ device_id }}", reading: "{{ value }}"}}
      - {type: signal, instance: "cooling-{{ device_id }}", event: overheat, data: {value: "{{ value }}"}}
      - {type: command, name: fan, params: {speed: 3}}
"""
    async with rule_engine(rules) as h:
        await h.send(telemetry("boiler-1", temperature=90))
        assert h.control.started == [
            {
                "workflow": "cool-down",
                "variables": {"device": "boiler-1", "reading": 90},
                "parent": None,
                "request_id": "hot:boiler-1:1:0",
            }
        ]
        ((instance, event),) = h.control.signals
        assert (instance, event.type, event.data) == ("cooling-boiler-1", "overheat", {"value": 90})
        assert h.host.commands[0]["id"] == "hot:boiler-1:1:2"
        assert h.engine.stats.actions_run == 3


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
OVERHEAT_EXAMPLE = (EXAMPLES / "overheat.rules.yaml").read_text(encoding="utf-8")
HEARTBEAT_EXAMPLE = (EXAMPLES / "heartbeat-loss.rules.yaml").read_text(encoding="utf-8")


async def test_the_examples_run() -> None:
    async with rule_engine(OVERHEAT_EXAMPLE) as h:
        for offset, value in ((0, 70.0), (1, 70.0), (2, 85.0)):
            await h.send(telemetry("boiler-1", "boiler", ts=T0 + offset, temperature=value))
        await h.advance(300)
        assert [a.data["rule"] for a in h.alerts()] == ["boiler-heating-too-fast", "boiler-overheat"]
        assert h.notifier.sent[1]["message"] == "boiler-1 at 85.0 °C for 5 minutes (alert #1)"
        assert h.host.commands == [
            {
                "device": "boiler-1",
                "name": "cooling",
                "params": {"mode": "max"},
                "id": "boiler-overheat:boiler-1:1:1",
                "await_ack": False,
            }
        ]
    async with rule_engine(HEARTBEAT_EXAMPLE) as h:
        await h.send(telemetry("sensor-1", "sensor", t=1))
        await h.send(
            Event(MQTT_MESSAGE, {"status": "ok"}, device_id="pump-1", topic="devices/pump-1/heartbeat")
        )
        await h.advance(300)
        assert h.notifier.sent[0]["message"] == "sensor-1 silent for 5.0 min"
        assert h.host.published[0]["topic"] == "fl/site/devices/sensor-1/liveness"
        assert h.host.published[0]["payload"] == {"alive": False, "last_seen": T0}
        assert h.control.started[0]["workflow"] == "pump-recovery"
        assert h.control.started[0]["variables"] == {"device_id": "pump-1", "silent_for": 60.0}
