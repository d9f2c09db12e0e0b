"""Local automation: the gateway runs YAML event rules and workflows next to its devices.

``Automation`` is an async context manager the ``Agent`` enters at start-up and leaves at shutdown. It holds a
workflow ``Engine`` and a ``RuleEngine`` over one ``SQLiteStore`` (``<agent database>.workflows.db``, with the
agent's ``storage.sync``), deploys the configured workflows, and gives both engines an ``EdgeHost``::

    ingest ─ cleaned points, state changes ─▶ AutomationFeed (bounded) ─▶ consumer ─▶ RuleEngine.handle
                                                       ▲                          └─▶ Engine.handle
    EdgeHost.emit ─▶ outbox (EventRecord → fl/{gateway}/up/events) and back into the feed
    CloudCommands reports (command.delivered/acknowledged/failed) ─▶ outbox and, through ``observe``, the feed
    DeviceCommands' watched topics (``message`` rules and triggers) ─▶ ``observe_message`` ─▶ the feed
    EdgeHost.send_command / publish ─▶ DeviceCommands ─▶ local broker

The ``DeviceCommands`` client is the agent's, shared with the commands from the cloud: the agent opens it
before the automation and closes it after. Feeding never blocks ingest: the feed is a bounded queue (``automation_feed.py``). Leaving the context stops
the consumer (events still queued are dropped and counted), lets the rule engine finish its queued alerts and
actions and write its state, stops the workflow instances (they resume from their last saved transition at the
next start) and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import orjson
from prometheus_client.core import GaugeMetricFamily, Metric

from edge_agent.automation_feed import AutomationFeed
from edge_agent.automation_files import AutomationFiles, FileKind, positioned_issue
from edge_agent.config import AgentConfig
from edge_agent.device_commands import DeviceCommands
from edge_agent.metrics import counter_family
from edge_agent.mqtt_link import Message
from edge_agent.pipeline.base import RecordSink
from fieldline.errors import ConfigIssue
from fieldline.tasks import cancel_and_wait
from fieldline.wire import EventRecord, Point, parse_device_topic
from workflows import (
    ActionError,
    DefinitionError,
    Engine,
    Event,
    LogNotifier,
    Notifier,
    RuleEngine,
    SQLiteStore,
    Status,
    SystemClock,
    VersionConflict,
    WebhookNotifier,
    WorkflowError,
)
from workflows.events import MQTT_MESSAGE, TELEMETRY

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
"""How long a ``publish`` action waits for the local broker's PUBACK."""
YIELD_EVERY = 256
"""The consumer lets the loop run after this many events, so that a backlog never starves ingest."""
ENGINE_ANNOUNCED = frozenset(f"workflow.{status.value}" for status in Status if status.terminal)
"""Events the workflow engine already feeds to itself when it emits them (an instance's end)."""


class EdgeHost:
    """``workflows.Host`` on the gateway: commands and publishes go to the local broker; emitted events go up
    to the cloud through the outbox and back into the local engines."""

    def __init__(
        self,
        commands: DeviceCommands,
        sink: RecordSink,
        feed: AutomationFeed,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.commands = commands
        self.sink = sink
        self.feed = feed
        self.clock = clock
        self.feeding = True

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
        return await self.commands.send(
            device_id, name, params, command_id=command_id, await_ack=await_ack, ack_timeout=ack_timeout
        )

    async def publish(self, topic: str, payload: Any, *, qos: int, retain: bool) -> None:
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            try:
                body = b"" if payload is None else orjson.dumps(payload)
            except TypeError as exc:
                raise ActionError("Publish.Invalid", f"{topic}: {exc}", retryable=False) from None
        await self.commands.publish(topic, body, qos=qos, retain=retain, within=PUBLISH_TIMEOUT)

    async def emit(self, event: Event) -> None:
        # The outbox encodes records as CBOR inside its transaction: make the data plain JSON-like values first.
        data = orjson.loads(orjson.dumps(event.data, default=str, option=orjson.OPT_NON_STR_KEYS))
        ts = event.ts if event.ts is not None else self.clock()
        self.sink.emit(EventRecord(event.device_id, ts, event.type, data, event.source, event.device_type))
        if self.feeding:
            self.feed.event(event, to_engine=event.type not in ENGINE_ANNOUNCED)


class Automation:
    """Runs the configured rules and workflows for one agent (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        files: AutomationFiles,
        sink: RecordSink,
        device_types: Mapping[str, str],
        commands: DeviceCommands,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config.automation
        self.files = files
        self.store_path = config.workflows_database_path()
        self.sync = config.storage.sync
        self.device_types = device_types
        self.feed = AutomationFeed(self.config.queue_size)
        self.commands = commands
        self.host = EdgeHost(self.commands, sink, self.feed, clock)
        self.handled: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_error: str | None = None
        self.engine: Engine
        self.rules: RuleEngine
        self._stack = contextlib.AsyncExitStack()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Automation:
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient())
            notifiers = self._notifiers(http)
            clock = SystemClock()
            self.engine = await stack.enter_async_context(
                Engine(
                    store=SQLiteStore(self.store_path, sync=self.sync),
                    host=self.host,
                    clock=clock,
                    registry=self.files.registry,
                    notifiers=notifiers,
                    http=http,
                )
            )
            await self._deploy()
            self.rules = await stack.enter_async_context(
                RuleEngine(
                    self.files.rules,
                    clock=clock,
                    store=self.engine.store,
                    host=self.host,
                    control=self.engine,
                    notifiers=notifiers,
                    http=http,
                )
            )
            consumer = asyncio.create_task(self._consume(), name="automation-feed")
            stack.push_async_callback(self._stop_feeding, consumer)
            self._stack = stack.pop_all()
        log.info(
            "automation started",
            extra={
                "workflows": dict(self.engine.latest),
                "rules": len(self.rules.rule_status()),
                "disabled": [d.file for d in self.files.disabled],
                "database": str(self.store_path),
            },
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def observe_message(self, message: Message) -> None:
        """A message on a topic a ``message`` rule or trigger watches, as an ``mqtt.message`` event: ``data`` is
        the payload's JSON object, or ``{"payload": value}`` for any other JSON value or for text."""
        if not self.host.feeding:
            return
        payload = message.payload
        try:
            value: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            value = payload.decode("utf-8", "replace")
        device = parse_device_topic(message.topic)
        device_id = device[0] if device is not None else None
        self.feed.event(
            Event(
                MQTT_MESSAGE,
                value if isinstance(value, dict) else {"payload": value},
                device_id=device_id,
                device_type=self.device_types.get(device_id) if device_id is not None else None,
                topic=message.topic,
                ts=self.host.clock(),
            )
        )

    def observe(self, record: EventRecord) -> None:
        """An event the agent raised outside the automation (a cloud command's ``command.delivered``,
        ``command.acknowledged`` or ``command.failed``), fed to the rules and workflows as it goes up."""
        if self.host.feeding:
            self.feed.event(Event.from_record(record))

    async def _stop_feeding(self, consumer: asyncio.Task[None]) -> None:
        self.host.feeding = False
        await cancel_and_wait(consumer)
        if discarded := self.feed.discard():
            log.info("automation stopped with events queued", extra={"discarded": discarded})

    def _notifiers(self, http: httpx.AsyncClient) -> dict[str, Notifier]:
        notifiers: dict[str, Notifier] = {"log": LogNotifier()}
        webhook = self.config.notifiers.webhook
        if webhook is not None:
            notifiers["webhook"] = WebhookNotifier(webhook.url, http, timeout=webhook.timeout)
        return notifiers

    async def _deploy(self) -> None:
        """Deploy each configured workflow unless the store already has it current with the same text; retire
        the workflows no longer configured (running instances go on, nothing new starts)."""
        engine = self.engine
        stored = {(d.workflow_id, d.version): d.source for d in await engine.store.definitions()}
        running: set[str] = set()
        conflicts: list[ConfigIssue] = []
        for file, loaded in self.files.workflows:
            workflow = loaded.workflow
            key = (workflow.id, workflow.version)
            if stored.get(key) != loaded.source or engine.latest.get(workflow.id) != workflow.version:
                try:
                    await engine.deploy(loaded)
                except VersionConflict as exc:
                    issue = positioned_issue(file, loaded.source, ("version",), str(exc))
                    conflicts.append(issue)
                    self._disable(file, "workflow", [issue])
                    continue
            running.add(workflow.id)
        if conflicts and self.config.strict:
            raise DefinitionError(conflicts)
        for workflow_id in set(engine.latest) - running:
            del engine.latest[workflow_id]

    def _disable(self, file: str, kind: FileKind, issues: list[ConfigIssue]) -> None:
        self.files.disable(file, kind, issues)
        log.error(
            "automation file disabled",
            extra={"file": file, "kind": kind, "problems": [str(i) for i in issues]},
        )

    # ------------------------------------------------------------------ feeding

    async def _consume(self) -> None:
        feed = self.feed
        device_types = self.device_types
        rules, engine = self.rules, self.engine
        while True:
            await feed.wait()
            handled = 0
            while (item := feed.pop()) is not None:
                if isinstance(item, Point):
                    device_id = item.device_id
                    event = Event(
                        TELEMETRY,
                        item.metrics,
                        device_id=device_id,
                        device_type=device_types.get(device_id),
                        ts=item.ts,
                    )
                    to_engine = True
                else:
                    event, to_engine = item
                self.handled[event.type] += 1
                try:
                    await rules.handle(event)
                    if to_engine:
                        await engine.handle(event)
                except WorkflowError as exc:
                    self._failed(event, type(exc).__name__, exc)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the feed: counted, shown, logged
                    self._failed(event, "internal", exc)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    def _failed(self, event: Event, error: str, exc: Exception) -> None:
        """Count a failure, keep it for /healthz, and log the 1st, 2nd, 4th ... so a storm cannot flood the log."""
        self.errors[error] += 1
        self.last_error = f"{event.type} from {event.device_id or event.source}: {exc}"
        count = sum(self.errors.values())
        if count & (count - 1) == 0:
            log.error(
                "automation could not handle an event",
                extra={"event": event.type, "device": event.device_id, "failures_so_far": count},
                exc_info=exc,
            )

    # ------------------------------------------------------------------ inspection

    def health(self) -> dict[str, Any]:
        """The summary ``/healthz`` shows."""
        rules = self.rules.rule_status()
        return {
            "workflows": dict(self.engine.latest),
            "instances_active": len(self.engine.instances),
            "rules_loaded": len(rules),
            "alerts_active": sum(r["active"] for r in rules.values()),
            "disabled": [{"file": d.file, "kind": d.kind, "reason": d.reason} for d in self.files.disabled],
            "local_broker_connected": self.commands.connected,
            "queued": len(self.feed),
            "dropped": sum(self.feed.dropped.values()),
            "last_error": self.last_error,
        }

    def collect(self) -> Iterator[Metric]:
        """Prometheus families, read at scrape time through the agent's collector."""
        yield counter_family(
            "fieldline_edge_automation_events",
            "Events handed to the rules and workflows, by type.",
            ["type"],
            self.handled,
        )
        yield counter_family(
            "fieldline_edge_automation_dropped",
            "Events dropped because the automation queue was full (or at shutdown), by type.",
            ["type"],
            self.feed.dropped,
        )
        yield counter_family(
            "fieldline_edge_automation_errors", "Events the engines failed to handle.", ["error"], self.errors
        )
        disabled = GaugeMetricFamily(
            "fieldline_edge_automation_disabled",
            "Automation files not running because they failed to load or deploy (1 per file).",
            labels=["file", "kind"],
        )
        for d in self.files.disabled:
            disabled.add_metric([d.file, d.kind], 1.0)
        yield disabled
        rules = self.rules.rule_status()
        for name, doc, value in (
            ("fieldline_edge_automation_queued", "Events waiting for the engines.", len(self.feed)),
            (
                "fieldline_edge_workflows_deployed",
                "Workflows that start new instances.",
                len(self.engine.latest),
            ),
            (
                "fieldline_edge_workflow_instances_active",
                "Running or waiting instances.",
                len(self.engine.instances),
            ),
            ("fieldline_edge_rules_loaded", "Rules evaluated.", len(rules)),
            (
                "fieldline_edge_rules_alerts_active",
                "Alerts raised and not cleared.",
                sum(r["active"] for r in rules.values()),
            ),
            (
                "fieldline_edge_commands_connected",
                "1 when connected to the local broker for commands.",
                float(self.commands.connected),
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        stats = {
            **{f"workflow_{k}": v for k, v in dataclasses.asdict(self.engine.stats).items()},
            **{f"rules_{k}": v for k, v in self.rules.stats.as_dict().items()},
            "commands_sent": self.commands.sent,
        }
        for name, value in stats.items():
            yield counter_family(
                f"fieldline_edge_{name}", f"Engine counter {name} (docs/edge-agent.md).", [], {(): value}
            )
        yield counter_family(
            "fieldline_edge_command_acks",
            "Command answers by outcome: ok, error, timeout, invalid, unmatched.",
            ["outcome"],
            self.commands.acks,
        )
