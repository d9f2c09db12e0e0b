"""The edge agent: wires southbound transports, pipelines, store, committer and uplink into one process.

``async with Agent(config) as agent:`` opens the store, replays the crash journal into the pipelines, and
starts one task per job (committer, window timer, uplink, MQTT southbound) plus the CoAP and status servers, the
client that sends commands to devices on the local broker (for the cloud's commands, ``CloudCommands``, and,
when configured, the local rules and workflows, ``Automation``), and with ``pki.cloud_url`` the certificate
renewal (``Renewal``), which makes the uplink reconnect with each new certificate. Leaving the block shuts down
in the order that loses nothing: stop accepting input, let the automation finish what it queued, flush open windows (as partial
aggregates), commit with every loose record sealed, let the uplink drain briefly, publish the offline status,
close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.cloud_commands import CloudCommands
from edge_agent.coap_poller import CoapPoller
from edge_agent.committer import Committer
from edge_agent.compiled import compiled_modules
from edge_agent.config import AgentConfig
from edge_agent.device_commands import DeviceCommands
from edge_agent.http_status import StatusServer
from edge_agent.ingest import Ingest
from edge_agent.journal import Journal
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import Message
from edge_agent.outbox import Outbox
from edge_agent.pipeline.pipeline import PipelineRouter
from edge_agent.quarantine import Quarantine
from edge_agent.southbound_coap import CoapServer
from edge_agent.southbound_mqtt import MqttSouthbound
from edge_agent.store import StoreThread, connect
from edge_agent.uplink import Uplink
from fieldline.tasks import cancel_and_wait

if TYPE_CHECKING:
    from edge_agent.automation import Automation
    from edge_agent.automation_files import AutomationFiles
    from edge_agent.renewal import Renewal

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


class Agent:
    """One gateway agent. Several can run in one process (tests do), each with its own store and registry."""

    def __init__(self, config: AgentConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.metrics = AgentMetrics()
        self.registry = self.metrics.registry()
        self.started_at = clock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stack = contextlib.AsyncExitStack()
        self.committer: Committer
        self.router: PipelineRouter
        self.ingest: Ingest
        self.uplink: Uplink | None = None
        self.southbound: MqttSouthbound | None = None
        self.coap: CoapServer | None = None
        self.coap_poller: CoapPoller | None = None
        self.status_server: StatusServer | None = None
        self.automation: Automation | None = None
        self.cloud_commands: CloudCommands | None = None
        self.renewal: Renewal | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Agent:
        cfg = self.config
        automation_files = self._automation_files()
        path = cfg.database_path()
        self.thread = StoreThread(path)
        self.conn = await self.thread.run(connect, path, cfg.storage.sync)
        self.outbox, self.journal, self.quarantine = await self.thread.run(self._open_tables)
        device_types = {d: c.type for d, c in cfg.devices.items() if c.type}
        # The router needs the committer as its sink and the committer needs the router's hold horizon.
        self.committer = Committer(
            self.thread,
            self.conn,
            self.outbox,
            self.journal,
            self.quarantine,
            self.metrics,
            interval=cfg.storage.commit_interval,
            ack_threshold=max(1, cfg.southbound.mqtt.receive_maximum // 2),
            max_pending_messages=cfg.storage.max_pending_messages,
            hold_horizon=0.0,
            clock=self.clock,
        )
        self.router = PipelineRouter(cfg.pipelines, self.committer, self.metrics.count_drop, device_types.get)
        self.committer.hold_horizon = self.router.hold_horizon + 60.0
        await self._replay()
        self.ingest = Ingest(
            self.committer,
            self.router,
            self.metrics,
            device_types,
            max_payload=cfg.southbound.mqtt.max_payload,
            max_future_skew=cfg.decode.max_future_skew,
            clock=self.clock,
        )
        self._register_gauges()
        self.committer.start()
        try:
            await self._start(automation_files)
        except BaseException:
            await self.shutdown()
            raise
        log.info(
            "agent started",
            extra={
                "gateway": cfg.gateway.id,
                "database": str(path),
                "compiled_modules": len(compiled_modules()),
            },
        )
        return self

    async def _start(self, automation_files: AutomationFiles | None) -> None:
        cfg = self.config
        self._spawn(self._window_timer(), "window-timer")
        commands = None
        if automation_files is not None or cfg.uplink.enabled:
            watch = automation_files.message_filters() if automation_files is not None else []
            commands = await self._stack.enter_async_context(self._device_commands(watch))
        if automation_files is not None:
            assert commands is not None
            await self._start_automation(automation_files, commands)
        if cfg.uplink.enabled:
            assert commands is not None
            self.cloud_commands = await self._stack.enter_async_context(
                CloudCommands(
                    commands,
                    self.committer,
                    ack_timeout=cfg.automation.command_ack_timeout,
                    device_types=self.ingest.device_types,
                    on_report=self.automation.observe if self.automation is not None else None,
                    clock=self.clock,
                )
            )
            self.metrics.collectors.append(self.cloud_commands.collect)
            self.uplink = Uplink(
                cfg.uplink,
                cfg.gateway.id,
                self.thread,
                self.outbox,
                self.committer,
                self.metrics,
                status=self._status_fields,
                on_command=self.cloud_commands.receive,
                clock=self.clock,
            )
            self._spawn(self.uplink.run(), "uplink")
            if cfg.pki.cloud_url is not None:
                # Imported here: an agent that does not renew does not load the PKI client (cryptography, httpx).
                from edge_agent.enrollment import IdentityFiles
                from edge_agent.renewal import Renewal

                self.renewal = await self._stack.enter_async_context(
                    Renewal(
                        cfg.pki,
                        IdentityFiles.of(cfg),
                        cfg.gateway.id,
                        on_renewed=self.uplink.reconnect,
                        clock=self.clock,
                    )
                )
                self.metrics.collectors.append(self.renewal.collect)
        if cfg.southbound.mqtt.enabled:
            self.southbound = MqttSouthbound(cfg.southbound.mqtt, cfg.gateway.id, self.ingest, self.metrics)
            self._spawn(self.southbound.run(), "southbound-mqtt")
        if cfg.southbound.coap.enabled:
            self.coap = await self._stack.enter_async_context(
                CoapServer(cfg.southbound.coap, self.ingest, metrics_hook=self._count_coap_response)
            )
            if cfg.southbound.coap.observe:
                self.coap_poller = await self._stack.enter_async_context(
                    CoapPoller(cfg.southbound.coap.observe, self.ingest)
                )
        if cfg.http.enabled:
            self.status_server = await self._stack.enter_async_context(
                StatusServer(cfg.http.bind, cfg.http.port, self.health, self.registry)
            )

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop input, stop the automation, flush windows, commit everything, drain the uplink briefly, go offline,
        close the store."""
        log.info("agent stopping", extra={"gateway": self.config.gateway.id})
        if self.southbound is not None:
            await self.southbound.close()
        await (
            self._stack.aclose()
        )  # status and CoAP servers, cloud commands, the automation, the local client
        uplink_task = next((t for t in self._tasks if t.get_name() == "uplink"), None)
        await cancel_and_wait(*(task for task in self._tasks if task is not uplink_task))
        self.router.flush(self.clock())
        await self.committer.stop()
        if self.uplink is not None and uplink_task is not None:
            await self.uplink.shutdown(self.config.uplink.drain_on_shutdown)
        await cancel_and_wait(uplink_task)
        if self.uplink is not None and self.uplink.link is not None:
            await self.uplink.link.close()
        await self.committer.commit()  # deletes for batches acknowledged while draining
        self.committer.thread.close()
        self.conn.close()
        log.info("agent stopped", extra={"gateway": self.config.gateway.id})

    async def run_until_signal(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ automation

    def _automation_files(self) -> AutomationFiles | None:
        """Load the configured rules and workflows before anything opens; strict mode refuses bad files here."""
        if not self.config.automation.configured:
            return None
        # Imported here: an agent without automation does not load the engine (Jinja2, httpx, croniter).
        from edge_agent.automation_files import load_automation
        from workflows import DefinitionError

        files = load_automation(self.config.automation)
        if self.config.automation.strict and files.disabled:
            raise DefinitionError(files.problems)
        return files

    def _device_commands(self, watch: list[str]) -> DeviceCommands:
        """The client that sends commands to devices on the local broker, for the automation and the cloud; it
        also receives the topics in ``watch`` (the automation's ``message`` rules and triggers)."""
        local = self.config.southbound.mqtt
        return DeviceCommands(
            local.endpoint() if local.enabled else None,
            client_id=f"{local.client_id or f'fl-agent-{self.config.gateway.id}'}-commands",
            keepalive=local.keepalive,
            protocol=local.protocol,
            watch=watch,
            on_watched=self._watched,
            clock=self.clock,
        )

    def _watched(self, message: Message) -> None:
        if self.automation is not None:
            self.automation.observe_message(message)

    async def _start_automation(self, files: AutomationFiles, commands: DeviceCommands) -> None:
        from edge_agent.automation import Automation

        self.automation = automation = await self._stack.enter_async_context(
            Automation(
                self.config, files, self.committer, self.ingest.device_types, commands, clock=self.clock
            )
        )
        self.metrics.collectors.append(automation.collect)
        self.router.set_tap(automation.feed.point)
        self.ingest.feed = automation.feed
        self._stack.callback(self._detach_automation)  # runs before the automation stops (last in, first out)

    def _detach_automation(self) -> None:
        self.router.set_tap(None)
        self.ingest.feed = None

    # ------------------------------------------------------------------ internals

    def _open_tables(self) -> tuple[Outbox, Journal, Quarantine]:
        s = self.config.storage
        return (
            Outbox(
                self.conn,
                max_bytes=s.max_bytes,
                batch_max_bytes=s.batch_max_bytes,
                batch_max_age=s.batch_max_age,
            ),
            Journal(self.conn),
            Quarantine(self.conn, max_rows=s.quarantine_max_rows, max_payload=s.quarantine_max_payload),
        )

    async def _replay(self) -> None:
        """Feed the crash journal back into the downsampler, skipping what the marks say was emitted."""
        marks = await self.thread.run(self.journal.marks)
        self.router.restore_marks(marks)
        points = await self.thread.run(lambda: list(self.journal.replay()))
        now = self.clock()
        for point in points:
            self.router.replay(point, now)
        if points:
            log.info("journal replayed", extra={"points": len(points), "marks": len(marks)})

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", extra={"task": task.get_name()}, exc_info=task.exception())

    async def _window_timer(self) -> None:
        """Close windows and emit heartbeats when due; sleeps until the router's next deadline (at most 1 s)."""
        while True:
            deadline = self.router.next_deadline()
            now = self.clock()
            delay = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
            await asyncio.sleep(delay)
            self.router.tick(self.clock())

    def _count_coap_response(self, code: str) -> None:
        self.metrics.coap_responses[code] += 1

    def _status_fields(self) -> dict[str, Any]:
        return {"agent_version": AGENT_VERSION, "started_at": self.started_at}

    def health(self) -> tuple[bool, dict[str, Any]]:
        c = self.committer
        ok = c.last_error is None and c.running
        return ok, {
            "gateway": self.config.gateway.id,
            "uptime_s": round(self.clock() - self.started_at, 1),
            "messages_received": sum(self.metrics.received.values()),
            "messages_committed": self.metrics.committed,
            "first_received_at": self.metrics.first_received_at,
            "last_committed_at": self.metrics.last_committed_at,
            "southbound_connected": bool(self.southbound and self.southbound.connected.is_set()),
            "uplink_connected": bool(self.uplink and self.uplink.connected),
            "uplink_error": self.uplink.last_error if self.uplink else None,
            "coap_sources": [vars(s) for s in self.coap_poller.status] if self.coap_poller else [],
            "automation": self.automation.health() if self.automation is not None else None,
            "cloud_commands": self.cloud_commands.health() if self.cloud_commands is not None else None,
            "certificate": self.renewal.health() if self.renewal is not None else None,
            **c.describe(),
        }

    def _register_gauges(self) -> None:
        m, s = self.metrics, self.outbox.stats
        compiled = len(compiled_modules())
        m.gauge(
            "fieldline_edge_compiled_modules",
            "Modules of the per-message path running compiled (0: all plain Python, about 30 % more CPU).",
            lambda: compiled,
        )
        m.gauge("fieldline_edge_outbox_records", "Records waiting in the outbox.", lambda: s.total_records)
        m.gauge("fieldline_edge_outbox_bytes", "Bytes waiting in the outbox.", lambda: s.total_bytes)
        m.gauge("fieldline_edge_outbox_batches", "Sealed batches waiting for the uplink.", lambda: s.batches)
        m.gauge("fieldline_edge_journal_rows", "Points held in the crash journal.", lambda: self.journal.rows)
        m.gauge(
            "fieldline_edge_quarantine_rows", "Rows in the quarantine table.", lambda: self.quarantine.rows
        )
        m.gauge(
            "fieldline_edge_uplink_connected",
            "1 when connected to the cloud broker.",
            lambda: float(bool(self.uplink and self.uplink.connected)),
        )
        m.gauge(
            "fieldline_edge_southbound_connected",
            "1 when subscribed on the local broker.",
            lambda: float(bool(self.southbound and self.southbound.connected.is_set())),
        )
