"""``fieldline demo``: the product on its embedded defaults, on one machine, with live counters.

A local broker (Mosquitto when installed, else the embedded amqtt), one edge agent with a cleaning and
downsampling pipeline, simulated devices over MQTT (with occasional spikes and malformed payloads), and the
cloud core on its embedded defaults: it ingests the uplink batches into its registry and time-series store and
serves its REST API (an admin key is printed). The uplink goes to the same broker on ``fl/...`` topics, standing
in for the cloud broker. With the embedded amqtt broker (no shared subscriptions, MQTT 3.1.1 only) the cloud
core is left out and a plain subscriber decodes the uplink instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from fieldline.tasks import cancel_and_wait

app = typer.Typer(add_completion=False)

DEMO_PIPELINE: dict[str, Any] = {
    "name": "thermo",
    "match": {"types": ["thermo"], "ids": ["thermo-*"]},
    "steps": [
        {"type": "range", "limits": {"temperature": {"min": -40, "max": 125}}, "action": "drop"},
        {"type": "outlier", "method": "hampel", "window": 30, "threshold": 4, "metrics": ["temperature"]},
        {"type": "stuck", "count": 20, "metrics": ["temperature"]},
    ],
    "downsample": [
        {"type": "raw", "metrics": ["door"]},
        {
            "type": "window",
            "metrics": ["*"],
            "width": "10s",
            "lateness": "2s",
            "aggregates": ["mean", "min", "max", "count", "p95"],
        },
    ],
}


class CloudView:
    """Subscribes to the uplink like the cloud would, and keeps counters and the latest aggregates."""

    def __init__(self) -> None:
        self.batches = 0
        self.records: Counter[str] = Counter()
        self.bytes = 0
        self.latest: dict[tuple[str, str], dict[str, float]] = {}
        self.seen: set[tuple[str, int]] = set()

    def on_message(self, message: Any) -> None:
        from fieldline.wire import AggregateRecord, decode_batch

        if message.topic.endswith("/status"):
            return
        batch = decode_batch(message.payload)
        if (batch.gateway, batch.seq) in self.seen:
            return
        self.seen.add((batch.gateway, batch.seq))
        self.batches += 1
        self.bytes += len(message.payload)
        self.records[batch.kind.value] += len(batch.records)
        for record in batch.records:
            if isinstance(record, AggregateRecord):
                self.latest[(record.device_id, record.metric)] = record.values


class CloudCore:
    """The cloud core served on a free port, ingesting from the demo broker."""

    def __init__(self, data_dir: Path, broker_port: int) -> None:
        self.data_dir = data_dir
        self.broker_port = broker_port
        self.url = ""
        self.key = ""
        self.services: Any = None

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        import uvicorn

        from cloud_core.app import create_app
        from cloud_core.auth import Role, create_key
        from cloud_core.settings import CloudSettings

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = CloudSettings(
            data_dir=self.data_dir,
            broker={"host": "127.0.0.1", "port": self.broker_port, "client_id": "demo-cloud-core"},
            log_level="WARNING",
        )
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            self.services = app.state.services
            self.url = f"http://127.0.0.1:{port}"
            self.key = (await create_key(self.services.database, Role.ADMIN, name="demo")).token
            yield self
        finally:
            server.should_exit = True
            await task

    def rows(self) -> list[tuple[str, str, str]]:
        ingest = self.services.parts.get("ingest") if self.services else None
        if ingest is None:
            return []
        s = ingest.stats
        return [
            ("cloud core", "batches / points / duplicates", f"{s.batches} / {s.points} / {s.duplicates}"),
            (
                "cloud core",
                "devices registered / quarantined batches",
                f"{s.devices_registered} / {s.quarantined}",
            ),
            ("cloud core", "REST API (OpenAPI at /docs)", self.url),
        ]


def _render(
    agent: Any, sim: Any, cloud: CloudView, core: CloudCore | None, started: float, broker: str
) -> Group:
    status = f"http://127.0.0.1:{agent.status_server.port}" if agent.status_server else "-"
    m = agent.metrics
    s = agent.outbox.stats
    elapsed = max(1e-9, time.monotonic() - started)
    counters = Table(
        title=f"Fieldline demo — broker: {broker} — {elapsed:.0f}s — {status}/healthz and /metrics",
        show_header=True,
    )
    counters.add_column("stage")
    counters.add_column("counter")
    counters.add_column("value", justify="right")
    rows = [
        ("devices", "messages published", f"{sim.sent}"),
        ("devices", "faults injected (spike/malformed)", f"{sim.faults}"),
        ("agent", "messages received", f"{sum(m.received.values())}"),
        ("agent", "points decoded", f"{sum(m.points.values())}"),
        ("agent", "quarantined", ", ".join(f"{k}={v}" for k, v in m.quarantined.items()) or "0"),
        ("agent", "pipeline drops", ", ".join(f"{a}/{b}={v}" for (a, b), v in m.step_drops.items()) or "0"),
        ("agent", "records emitted", ", ".join(f"{k}={v}" for k, v in m.records.items()) or "0"),
        ("outbox", "records / bytes / batches", f"{s.total_records} / {s.total_bytes} / {s.batches}"),
        ("uplink", "batches / records acked", f"{m.uplink_batches} / {m.uplink_records}"),
        (
            "uplink",
            "bytes vs device bytes",
            f"{m.uplink_bytes} / {sim.bytes} = 1/{sim.bytes / m.uplink_bytes:.0f}" if m.uplink_bytes else "-",
        ),
        (
            "cloud",
            "batches / records decoded",
            f"{cloud.batches} / " + ", ".join(f"{k}={v}" for k, v in cloud.records.items()),
        ),
    ]
    for row in [*rows, *(core.rows() if core else [])]:
        counters.add_row(*row)
    latest = Table(title="latest 10 s aggregates at the cloud (first 8 devices)")
    for col in ("device", "metric", "mean", "min", "max", "count", "p95"):
        latest.add_column(col, justify="right" if col not in ("device", "metric") else "left")
    for (device, metric), values in sorted(cloud.latest.items())[:16]:
        latest.add_row(
            device,
            metric,
            *(f"{values.get(k, float('nan')):.2f}" for k in ("mean", "min", "max")),
            f"{values.get('count', 0):.0f}",
            f"{values.get('p95', float('nan')):.2f}",
        )
    return Group(counters, latest)


async def _demo(devices: int, duration: float | None, data_dir: Path) -> None:
    from device_sim.publisher import MqttPublishers
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig
    from edge_agent.mqtt_link import Endpoint, MqttLink
    from fieldline.brokers import local_broker

    async with local_broker() as broker:
        config = AgentConfig.model_validate(
            {
                "gateway": {"id": "demo-gw"},
                "southbound": {"mqtt": {"url": broker.url, "protocol": broker.protocol}},
                "uplink": {"url": broker.url, "protocol": broker.protocol},
                "storage": {"path": str(data_dir / "edge-demo-gw.db"), "sync": "normal"},
                "http": {"port": 0},
                "pipelines": [DEMO_PIPELINE],
            }
        )
        cloud = CloudView()
        view = MqttLink(
            Endpoint("127.0.0.1", broker.port),
            client_id="demo-cloud",
            on_message=cloud.on_message,
            protocol=broker.protocol,
        )
        await view.connect()
        await view.subscribe([("fl/+/up/telemetry", 1), ("fl/+/up/events", 1)])
        sim = MqttPublishers(broker.port, devices, fault_rate=0.02)
        core = CloudCore(data_dir / "cloud", broker.port) if broker.kind == "mosquitto" else None
        async with contextlib.AsyncExitStack() as stack:
            if core is not None:
                await stack.enter_async_context(core.running())
            agent = await stack.enter_async_context(Agent(config))
            sim_task = asyncio.create_task(sim.run())
            started = time.monotonic()

            def render() -> Group:
                return _render(agent, sim, cloud, core, started, broker.kind)

            if core is not None:
                Console().print(
                    f"cloud core API: {core.url}/docs — try: curl -H 'Authorization: Bearer {core.key}' "
                    f"{core.url}/api/v1/devices",
                    soft_wrap=True,
                    markup=False,
                )
            try:
                with Live(render(), refresh_per_second=2) as live:
                    while duration is None or time.monotonic() - started < duration:
                        await asyncio.sleep(0.5)
                        live.update(render())
            finally:
                await cancel_and_wait(sim_task)
        await view.close()


@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="Simulated devices publishing at 1 Hz.")] = 20,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 0,
) -> None:
    """Run a local broker, an edge agent and simulated devices, with live counters (Ctrl-C stops)."""
    data_dir = Path(os.environ.get("FIELDLINE_DATA_DIR") or tempfile.mkdtemp(prefix="fieldline-demo-"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(devices, duration or None, data_dir))
