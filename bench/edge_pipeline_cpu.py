"""CPU cost per message of the agent's receive path, offline: no broker, no network, one process.

    .venv/bin/python bench/edge_pipeline_cpu.py [--messages 200000] [--devices 1000] [--qos 0] [--repeat 5]
                                                [--only end_to_end] [--out result.json]

The messages are the ones ``bench/edge_throughput.py`` publishes (the same generator: 1,000 devices at 1 Hz,
temperature and humidity, ~60-byte JSON), framed as MQTT 5 PUBLISH packets and cut into 256 KiB socket reads
(what asyncio's transport hands the protocol when a backlog drains). Each stage runs over all of them with fresh
state, ``repeat`` times; the figure is the best run's ``time.process_time`` per message (CPU of the whole process,
so a loaded machine slows it much less than it slows a wall-clock rate):

- ``frame``: the subscriber protocol parses every PUBLISH (the handler does nothing);
- ``decode``: topic parsing and ``decode_telemetry`` of each message;
- ``range``, ``outlier``, ``window``: each step of the benchmark pipeline alone over the decoded points
  (``window`` includes deciding which points the crash journal must keep);
- ``commit``: the group commit's store-thread work (journal rows, marks) every ``--commit-every`` messages,
  against a real SQLite file with ``synchronous=FULL``;
- ``end_to_end``: the agent's real objects (``MqttSubscriber`` protocol, ``Ingest``, ``PipelineRouter``,
  ``Committer`` with its store thread) fed the socket reads in an event loop, committing every ``--commit-every``
  messages; at QoS 1 the PUBACKs are written to a transport that only counts bytes.

The stage figures do not add up exactly to ``end_to_end`` (each stage alone has warmer caches, and end to end
adds the ingest glue, metrics and the acknowledgement path). The process applies the garbage-collector policy that
``fieldline edge run`` applies once the agent has started (``fieldline.gc_policy``), ``--gc python`` keeps
Python's defaults; the JSON says which modules ran compiled (``setup.py``). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _output import emit

from edge_agent.committer import Committer, _Pending
from edge_agent.compiled import compiled_modules
from edge_agent.config import AgentConfig
from edge_agent.ingest import Ingest
from edge_agent.journal import Journal
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import Endpoint
from edge_agent.mqtt_subscriber import InboundMessage, MqttSubscriber, _Protocol
from edge_agent.outbox import Outbox
from edge_agent.pipeline.base import ListSink, StepContext
from edge_agent.pipeline.pipeline import Pipeline, PipelineConfig, PipelineRouter
from edge_agent.quarantine import Quarantine
from edge_agent.store import StoreThread, connect
from fieldline import gc_policy
from fieldline.mqtt_packets import publish_packet
from fieldline.payloads import decode_telemetry
from fieldline.wire import Point, parse_device_topic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clients import telemetry  # the messages the throughput benchmark publishes
from edge_throughput import PIPELINE  # the pipeline it measures

READ_SIZE = 256 * 1024
STAGES = ("frame", "decode", "range", "outlier", "window", "commit", "end_to_end")


# ------------------------------------------------------------------------------------------------- input


def device_messages(count: int, devices: int, start_ts: float) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` exactly as ``bench/_clients.py publish`` sends them."""
    return list(telemetry(count, devices, start_ts))


def socket_reads(messages: list[tuple[str, bytes]], qos: int) -> list[bytes]:
    """MQTT 5 PUBLISH packets (empty properties) of ``messages``, concatenated and cut into socket reads."""
    stream = bytearray()
    for i, (topic, payload) in enumerate(messages):
        stream += publish_packet(topic, payload, qos=qos, mid=i % 65535 + 1 if qos else 0)
    return [bytes(stream[i : i + READ_SIZE]) for i in range(0, len(stream), READ_SIZE)]


# ------------------------------------------------------------------------------------------------ stages


def _cpu(run: Callable[[], Any]) -> float:
    gc.collect()
    started = time.process_time()
    run()
    return time.process_time() - started


def stage_frame(reads: list[bytes], qos: int) -> Callable[[], Any]:
    subscriber = MqttSubscriber(Endpoint("127.0.0.1", 1), client_id="cpu", on_messages=lambda m: None)
    return lambda: _feed(subscriber, reads)


def _feed(subscriber: MqttSubscriber, reads: list[bytes]) -> None:
    protocol = _Protocol(subscriber)
    for data in reads:
        protocol.data_received(data)


def stage_decode(messages: list[tuple[str, bytes]], now: float) -> Callable[[], Any]:
    def run() -> None:
        for topic, payload in messages:
            parsed = parse_device_topic(topic)
            assert parsed is not None
            decode_telemetry(payload, parsed[0], now, max_future_skew=600.0)

    return run


def _points(messages: list[tuple[str, bytes]], now: float) -> list[Point]:
    return [
        p
        for topic, payload in messages
        for p in decode_telemetry(payload, topic.split("/")[1], now, max_future_skew=600.0)
    ]


def _pipeline(steps: list[dict[str, Any]], downsample: bool) -> Pipeline:
    config = PipelineConfig.model_validate(
        {**PIPELINE, "steps": steps, "downsample": PIPELINE["downsample"] if downsample else []}
    )
    return Pipeline(config, ListSink(), lambda step, reason, n=1: None)


def stage_step(points: list[Point], index: int) -> Callable[[], Any]:
    """One cleaning step of the benchmark pipeline over fresh copies of the points."""
    step = _pipeline([PIPELINE["steps"][index]], False).steps[0]
    ctx = StepContext(ListSink(), lambda step, reason, n=1: None)
    apply = step.apply
    return lambda: [apply(p, ctx) for p in points]


def stage_window(points: list[Point], now: float) -> Callable[[], Any]:
    downsampler = _pipeline([], True).downsampler

    def run() -> None:
        add = downsampler.add
        for p in points:
            add(p, now)  # returns whether the point must be journaled

    return run


def stage_commit(points: list[Point], every: int, workdir: Path) -> Callable[[], Any]:
    conn = connect(workdir / f"commit-{time.monotonic_ns()}.db", "full")
    outbox = Outbox(conn, max_bytes=10**9, batch_max_bytes=65536, batch_max_age=5.0)
    committer = Committer(
        StoreThread(workdir / "unused.db"),
        conn,
        outbox,
        Journal(conn),
        Quarantine(conn, max_rows=100, max_payload=100),
        AgentMetrics(),
        interval=0.05,
        ack_threshold=every,
        hold_horizon=3600.0,
    )

    def run() -> None:
        for i in range(0, len(points), every):  # one point per message
            pending = _Pending(journal=points[i : i + every], messages=every)
            committer._write(pending, time.time(), set(), False)

    return run


async def _end_to_end(reads: list[bytes], qos: int, every: int, workdir: Path) -> float:
    config = AgentConfig.model_validate(
        {
            "gateway": {"id": "cpu"},
            "southbound": {"mqtt": {"url": "mqtt://127.0.0.1:1", "qos": qos}},
            "uplink": {"enabled": False},
            "storage": {"path": str(workdir / f"e2e-{time.monotonic_ns()}.db"), "sync": "full"},
            "decode": {"max_future_skew": "10m"},
            "pipelines": [PIPELINE],
        }
    )
    path = config.database_path()
    thread = StoreThread(path)
    conn = await thread.run(connect, path, "full")
    s = config.storage
    outbox = Outbox(
        conn, max_bytes=s.max_bytes, batch_max_bytes=s.batch_max_bytes, batch_max_age=s.batch_max_age
    )
    metrics = AgentMetrics()
    committer = Committer(
        thread,
        conn,
        outbox,
        Journal(conn),
        Quarantine(conn, max_rows=100, max_payload=100),
        metrics,
        interval=s.commit_interval,
        ack_threshold=10**9,
        hold_horizon=3600.0,
    )
    router = PipelineRouter(config.pipelines, committer, metrics.count_drop, lambda d: None)
    ingest = Ingest(committer, router, metrics, {}, max_payload=65536, max_future_skew=600.0)
    loop = asyncio.get_running_loop()

    class CountingTransport:
        written = 0

        def write(self, data: bytes) -> None:
            self.written += len(data)

        def close(self) -> None:
            pass

    def on_messages(messages: list[InboundMessage]) -> None:
        ingest.on_mqtt_messages(messages, subscriber)

    subscriber = MqttSubscriber(Endpoint("127.0.0.1", 1), client_id="cpu", on_messages=on_messages)

    protocol = _Protocol(subscriber)
    protocol.connection_made(CountingTransport())  # type: ignore[arg-type]
    subscriber._protocol = protocol
    subscriber._loop = loop
    subscriber.closed = loop.create_future()
    gc.collect()
    started = time.process_time()
    for data in reads:
        protocol.data_received(data)
        if metrics.received["mqtt"] - metrics.committed >= every:
            await committer.commit()
            await asyncio.sleep(0)  # let the coalesced PUBACKs go out
    await committer.commit()
    await asyncio.sleep(0)
    spent = time.process_time() - started
    assert metrics.committed == metrics.received["mqtt"], (metrics.committed, metrics.received)
    if qos:
        assert protocol.transport.written == 4 * metrics.committed  # type: ignore[union-attr]
    thread.close()
    conn.close()
    return spent


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--commit-every", type=int, default=2048)
    parser.add_argument("--only", action="append", choices=STAGES, help="stages to run (default: all)")
    parser.add_argument("--gc", choices=("agent", "python"), default="agent")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.gc == "agent":
        gc_policy.apply()
    stages = args.only or list(STAGES)
    now = time.time()
    start_ts = math.ceil(now / 60) * 60 + 60
    messages = device_messages(args.messages, args.devices, start_ts)
    reads = socket_reads(messages, args.qos)
    points = _points(messages, now)
    n = args.messages

    def fresh_points() -> list[Point]:
        return [Point(p.device_id, p.ts, dict(p.metrics)) for p in points]

    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fieldline-cpu-") as tmp:
        workdir = Path(tmp)
        for _ in range(args.repeat):
            for stage in stages:
                if stage == "end_to_end":
                    spent = asyncio.run(_end_to_end(reads, args.qos, args.commit_every, workdir))
                else:
                    if stage == "frame":
                        run = stage_frame(reads, args.qos)
                    elif stage == "decode":
                        run = stage_decode(messages, now)
                    elif stage in ("range", "outlier"):
                        run = stage_step(fresh_points(), 0 if stage == "range" else 1)
                    elif stage == "window":
                        run = stage_window(fresh_points(), now)
                    else:
                        run = stage_commit(fresh_points(), args.commit_every, workdir)
                    spent = _cpu(run)
                best[stage] = min(best.get(stage, math.inf), spent)
    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "messages": n,
        "devices": args.devices,
        "qos": args.qos,
        "repeat": args.repeat,
        "gc": args.gc,
        "compiled_modules": compiled_modules(),
        "us_per_message": {stage: round(best[stage] / n * 1e6, 3) for stage in stages},
    }
    if "end_to_end" in best:
        result["end_to_end_msg_per_cpu_second"] = round(n / best["end_to_end"])
    emit(result, args.out)


if __name__ == "__main__":
    main()
