"""Triggers: event, device_state, message, schedule (cron in a time zone, fixed interval) and api starts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.workflows.engine_factories import T0, engine_harness
from workflows.clock import FakeClock
from workflows.events import DEVICE_STATE, MQTT_MESSAGE, Event
from workflows.instance import Instance, Status
from workflows.runtime import VariableError, WorkflowNotFound


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def started(h: object, workflow_id: str) -> list[Instance]:
    """Top-level instances of a workflow, oldest first."""
    instances = await h.engine.list(workflow_id=workflow_id, limit=1000)  # type: ignore[attr-defined]
    return sorted((i for i in instances if i.parent_id is None), key=lambda i: (i.created_at, i.id))


# --- event ---------------------------------------------------------------------------------------------

ON_EVENT = """
id: overheat
variables:
  device_id: {type: string, required: true}
  temperature: {type: number, required: true}
  site: {type: string, default: unknown}
triggers:
  - type: event
    event: alarm
    condition: event.data.level == 'high' and event.data.temperature > 80
    variables:
      device_id: "{{ event.device_id }}"
      temperature: "{{ event.data.temperature }}"
start_at: done
states:
  done:
    type: succeed
    output: "{{ device.id }}/{{ device.type }}/{{ event.data.level }}"
"""


async def test_event_trigger_with_condition_and_variable_mapping() -> None:
    async with engine_harness() as h:
        await h.deploy(ON_EVENT)
        assert (
            await h.engine.handle(Event("alarm", {"level": "low", "temperature": 99}, device_id="d1")) == []
        )
        assert (
            await h.engine.handle(Event("alarm", {"level": "high", "temperature": 70}, device_id="d1")) == []
        )
        assert (
            await h.engine.handle(Event("other", {"level": "high", "temperature": 99}, device_id="d1")) == []
        )
        ids = await h.engine.handle(
            Event("alarm", {"level": "high", "temperature": 91.5}, device_id="d7", device_type="boiler")
        )
        await h.run()
        assert len(ids) == 1
        view = await h.view(ids[0])
        assert view.instance.vars == {"device_id": "d7", "temperature": 91.5, "site": "unknown"}
        assert view.instance.device == {"id": "d7", "type": "boiler"}
        assert view.instance.event is not None
        assert view.instance.event["data"] == {"level": "high", "temperature": 91.5}
        assert view.instance.output == "d7/boiler/high"
        assert view.history[0].kind == "started"
        assert view.history[0].detail["trigger"] == "event"
        assert len(await started(h, "overheat")) == 1


async def test_a_trigger_whose_condition_cannot_evaluate_starts_nothing() -> None:
    async with engine_harness() as h:
        await h.deploy(ON_EVENT)
        assert await h.engine.handle(Event("alarm", {"temperature": 99}, device_id="d1")) == []
        assert h.engine.stats.trigger_errors == 1


async def test_a_trigger_mapping_a_wrong_type_starts_nothing() -> None:
    async with engine_harness() as h:
        await h.deploy(ON_EVENT)
        ids = await h.engine.handle(Event("alarm", {"level": "high", "temperature": "99"}, device_id="d1"))
        assert ids == []
        assert h.engine.stats.trigger_errors == 1
        assert await started(h, "overheat") == []


async def test_only_one_instance_per_workflow_per_event() -> None:
    twice = ON_EVENT.replace(
        "start_at: done",
        """  - type: event
    event: alarm
    variables:
      device_id: "{{ event.device_id }}"
      temperature: "{{ event.data.temperature }}"
start_at: done""",
    )
    other = ON_EVENT.replace("id: overheat", "id: audit")
    async with engine_harness() as h:
        await h.deploy(twice)
        await h.deploy(other)
        ids = await h.engine.handle(Event("alarm", {"level": "high", "temperature": 90}, device_id="d1"))
        await h.run()
        assert len(ids) == 2
        assert len(await started(h, "overheat")) == 1
        assert len(await started(h, "audit")) == 1
        # the second trigger alone accepts this one
        ids = await h.engine.handle(Event("alarm", {"level": "low", "temperature": 90}, device_id="d1"))
        assert len(ids) == 1
        assert len(await started(h, "overheat")) == 2


# --- device_state --------------------------------------------------------------------------------------

ON_DEVICE = """
id: online
variables:
  device_id: {type: string, required: true}
  previous: {type: string}
triggers:
  - type: device_state
    devices: {id: "freezer-*", type: freezer}
    from: offline
    to: online
    variables:
      device_id: "{{ event.device_id }}"
      previous: "{{ event.data.from }}"
start_at: done
states:
  done: {type: succeed}
"""


def state_change(device_id: str, device_type: str, old: str, new: str) -> Event:
    return Event(DEVICE_STATE, {"from": old, "to": new}, device_id=device_id, device_type=device_type)


@pytest.mark.parametrize(
    ("event", "starts"),
    [
        (state_change("freezer-1", "freezer", "offline", "online"), True),
        (state_change("freezer-eu-22", "freezer", "offline", "online"), True),
        (state_change("boiler-1", "freezer", "offline", "online"), False),
        (state_change("freezer-1", "boiler", "offline", "online"), False),
        (state_change("freezer-1", "freezer", "online", "offline"), False),
        (state_change("freezer-1", "freezer", "maintenance", "online"), False),
        (state_change("freezer-1", "freezer", "offline", "error"), False),
        (
            Event(
                "telemetry", {"from": "offline", "to": "online"}, device_id="freezer-1", device_type="freezer"
            ),
            False,
        ),
    ],
)
async def test_device_state_selector_from_and_to(event: Event, starts: bool) -> None:
    async with engine_harness() as h:
        await h.deploy(ON_DEVICE)
        ids = await h.engine.handle(event)
        await h.run()
        assert bool(ids) is starts
        if starts:
            instance = (await h.view(ids[0])).instance
            assert instance.vars == {"device_id": event.device_id, "previous": "offline"}
            assert instance.status is Status.SUCCEEDED


async def test_device_state_without_from_matches_any_previous_state() -> None:
    text = ON_DEVICE.replace("    from: offline\n", "").replace(
        'devices: {id: "freezer-*", type: freezer}', "devices: {}"
    )
    async with engine_harness() as h:
        await h.deploy(text)
        assert await h.engine.handle(state_change("anything", "pump", "maintenance", "online"))
        assert await h.engine.handle(state_change("freezer-1", "freezer", "offline", "online"))
        assert not await h.engine.handle(state_change("freezer-1", "freezer", "online", "offline"))


# --- message -------------------------------------------------------------------------------------------

ON_MESSAGE = """
id: door
variables:
  topic: {type: string, required: true}
  state: {type: string, required: true}
triggers:
  - type: message
    topic: "sites/+/doors/#"
    condition: event.data.state != 'closed'
    variables:
      topic: "{{ event.topic }}"
      state: "{{ event.data.state }}"
start_at: done
states:
  done: {type: succeed}
"""


@pytest.mark.parametrize(
    ("topic", "starts"),
    [
        ("sites/berlin/doors/front", True),
        ("sites/berlin/doors/front/lock", True),
        ("sites/berlin/doors", True),  # `#` also matches the parent level
        ("sites/berlin/windows/front", False),
        ("sites/doors/front", False),
        ("other/berlin/doors/front", False),
        ("$SYS/berlin/doors/front", False),
    ],
)
async def test_message_trigger_topic_wildcards(topic: str, starts: bool) -> None:
    async with engine_harness() as h:
        await h.deploy(ON_MESSAGE)
        ids = await h.engine.handle(Event(MQTT_MESSAGE, {"state": "open"}, topic=topic))
        assert bool(ids) is starts
        if starts:
            assert (await h.view(ids[0])).instance.vars == {"topic": topic, "state": "open"}


async def test_message_trigger_condition_and_event_type() -> None:
    async with engine_harness() as h:
        await h.deploy(ON_MESSAGE)
        assert not await h.engine.handle(Event(MQTT_MESSAGE, {"state": "closed"}, topic="sites/a/doors/b"))
        assert not await h.engine.handle(Event("telemetry", {"state": "open"}, topic="sites/a/doors/b"))
        assert not await h.engine.handle(Event(MQTT_MESSAGE, {"state": "open"}))  # no topic


async def test_message_trigger_exact_single_level_filter() -> None:
    text = ON_MESSAGE.replace("sites/+/doors/#", "sites/+/door")
    async with engine_harness() as h:
        await h.deploy(text)
        assert await h.engine.handle(Event(MQTT_MESSAGE, {"state": "open"}, topic="sites/x/door"))
        assert not await h.engine.handle(Event(MQTT_MESSAGE, {"state": "open"}, topic="sites/x/door/y"))
        assert not await h.engine.handle(Event(MQTT_MESSAGE, {"state": "open"}, topic="sites/door"))


# --- schedule ------------------------------------------------------------------------------------------

SCHEDULE = """
id: report
variables:
  due: {type: number, required: true}
triggers:
  - type: schedule
    cron: "0 8 * * *"
    timezone: Europe/Berlin
    variables: {due: "{{ event.data.scheduled_at }}"}
start_at: done
states:
  done: {type: succeed}
"""


async def test_cron_in_a_time_zone_fires_at_local_time_over_several_days() -> None:
    assert datetime.fromtimestamp(T0, UTC).isoformat() == "2023-11-14T22:13:20+00:00"
    async with engine_harness() as h:
        await h.deploy(SCHEDULE)
        await h.run(3 * 86400)
        instances = await started(h, "report")
        expected = [utc("2023-11-15T07:00:00"), utc("2023-11-16T07:00:00"), utc("2023-11-17T07:00:00")]
        assert [i.created_at for i in instances] == expected  # 08:00 CET is 07:00 UTC
        assert [i.vars["due"] for i in instances] == expected
        assert {i.status for i in instances} == {Status.SUCCEEDED}
        assert {(await h.view(i.id)).history[0].detail["trigger"] for i in instances} == {"schedule"}


async def test_cron_follows_daylight_saving_time() -> None:
    clock = FakeClock(utc("2024-03-29T12:00:00"))  # Berlin moves to CEST on Sunday 31 March
    async with engine_harness(clock=clock) as h:
        await h.deploy(SCHEDULE)
        await h.run(4 * 86400)
        assert [i.created_at for i in await started(h, "report")] == [
            utc("2024-03-30T07:00:00"),
            utc("2024-03-31T06:00:00"),
            utc("2024-04-01T06:00:00"),
            utc("2024-04-02T06:00:00"),
        ]


async def test_schedule_every_fixed_interval_aligned_to_the_epoch() -> None:
    text = SCHEDULE.replace('    cron: "0 8 * * *"\n    timezone: Europe/Berlin\n', "    every: 1h\n")
    async with engine_harness() as h:
        await h.deploy(text)
        await h.run(3 * 86400)
        instances = await started(h, "report")
        assert len(instances) == 72
        first = (T0 // 3600 + 1) * 3600
        assert [i.created_at for i in instances] == [first + n * 3600 for n in range(72)]
        assert [i.vars["due"] for i in instances] == [first + n * 3600 for n in range(72)]


async def test_a_redeployed_schedule_replaces_the_old_one() -> None:
    async with engine_harness() as h:
        await h.deploy(SCHEDULE)
        noon = SCHEDULE.replace("id: report", "id: report\nversion: 2.0.0").replace("0 8 * * *", "0 12 * * *")
        await h.deploy(noon)
        await h.run(2 * 86400)
        instances = await started(h, "report")
        assert [i.created_at for i in instances] == [utc("2023-11-15T11:00:00"), utc("2023-11-16T11:00:00")]
        assert {i.version for i in instances} == {"2.0.0"}


# --- api -----------------------------------------------------------------------------------------------

API = """
id: api
variables:
  device_id: {type: string, required: true}
  setpoint: {type: number, default: 21}
  enabled: {type: boolean, default: true}
  options: {type: object, default: {mode: eco}}
  zones: {type: list, default: [a]}
triggers:
  - type: api
start_at: done
states:
  done: {type: succeed}
"""


async def test_api_start_applies_defaults_and_copies_them() -> None:
    async with engine_harness() as h:
        await h.deploy(API)
        first = await h.engine.start("api", {"device_id": "d1"})
        second = await h.engine.start("api", {"device_id": "d2", "setpoint": 19.5, "zones": ["x", "y"]})
        await h.run()
        a = (await h.view(first)).instance
        b = (await h.view(second)).instance
        assert a.vars == {
            "device_id": "d1",
            "setpoint": 21,
            "enabled": True,
            "options": {"mode": "eco"},
            "zones": ["a"],
        }
        assert b.vars["setpoint"] == 19.5
        assert b.vars["zones"] == ["x", "y"]
        assert a.status is Status.SUCCEEDED
        assert (await h.view(first)).history[0].detail == {"trigger": "api", "variables": a.vars}


@pytest.mark.parametrize(
    ("variables", "problems"),
    [
        ({}, ["missing required variable 'device_id'"]),
        ({"device_id": "d1", "colour": "red"}, ["unknown variable 'colour'"]),
        ({"device_id": 7}, ["device_id must be a string, got int"]),
        ({"device_id": "d1", "setpoint": "21"}, ["setpoint must be a number, got str"]),
        ({"device_id": "d1", "setpoint": True}, ["setpoint must be a number, got bool"]),
        ({"device_id": "d1", "enabled": 1}, ["enabled must be a boolean, got int"]),
        ({"device_id": "d1", "options": ["mode"]}, ["options must be a object, got list"]),
        ({"device_id": "d1", "zones": "a"}, ["zones must be a list, got str"]),
        (
            {"colour": "red", "setpoint": "x"},
            [
                "unknown variable 'colour'",
                "missing required variable 'device_id'",
                "setpoint must be a number, got str",
            ],
        ),
    ],
)
async def test_api_start_with_bad_variables(variables: dict[str, object], problems: list[str]) -> None:
    async with engine_harness() as h:
        await h.deploy(API)
        with pytest.raises(VariableError) as caught:
            await h.engine.start("api", variables)
        assert caught.value.problems == problems
        assert caught.value.workflow_id == "api"
        assert await h.engine.list() == []


async def test_api_start_of_an_unknown_workflow_or_version() -> None:
    async with engine_harness() as h:
        await h.deploy(API)
        with pytest.raises(WorkflowNotFound, match="'nope' is not deployed"):
            await h.engine.start("nope", {})
        with pytest.raises(WorkflowNotFound, match=r"version 9\.9\.9"):
            await h.engine.start("api", {"device_id": "d"}, version="9.9.9")
