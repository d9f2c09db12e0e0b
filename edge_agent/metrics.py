"""The agent's counters, kept as plain integers on the hot path and exported to Prometheus at scrape time.

A ``prometheus_client`` Counter costs a lock and a label lookup per increment; at tens of thousands of messages
per second that is measurable, so the agent counts in dicts and a custom collector turns them into metric
families when ``/metrics`` is scraped. Each agent has its own registry, so several agents can share a process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class AgentMetrics:
    """Every number the agent reports; gauges are read through callables at scrape time."""

    received: Counter[str] = field(default_factory=Counter)  # by transport
    points: Counter[str] = field(default_factory=Counter)  # decoded points by transport
    quarantined: Counter[str] = field(default_factory=Counter)  # by reason
    step_drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (step, reason)
    records: Counter[str] = field(default_factory=Counter)  # emitted by kind
    outbox_dropped: Counter[str] = field(default_factory=Counter)  # by kind (overflow)
    coap_responses: Counter[str] = field(default_factory=Counter)  # telemetry requests answered, by code
    committed: int = 0  # device messages whose effects are durable
    first_received_at: float | None = None  # agent clock at the first device message (throughput figures)
    last_committed_at: float | None = None  # agent clock at the last commit that covered device messages
    uplink_batches: int = 0
    uplink_records: int = 0
    uplink_bytes: int = 0
    uplink_backfill_batches: int = 0
    uplink_reconnects: int = 0
    southbound_reconnects: int = 0
    commits: int = 0
    commit_errors: int = 0
    reads_held: int = 0  # times the southbound stopped reading until a commit took the pending messages
    commit_seconds_sum: float = 0.0
    commit_buckets: list[int] = field(default_factory=lambda: [0] * len(COMMIT_BUCKETS))
    gauges: dict[str, tuple[str, Callable[[], float]]] = field(default_factory=dict)
    collectors: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)
    """Parts of the agent that export their own families (the automation), read at scrape time."""

    def count_drop(self, step: str, reason: str, n: int = 1) -> None:
        self.step_drops[(step, reason)] += n

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds_sum += seconds
        for i, bound in enumerate(COMMIT_BUCKETS):
            if seconds <= bound:
                self.commit_buckets[i] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Exporter(self))
        return registry


def counter_family(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    """A counter family with one sample per key of ``values`` (a tuple key fills several labels)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class _Exporter(Collector):
    def __init__(self, m: AgentMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield counter_family(
            "fieldline_edge_messages_received", "Messages received from devices.", ["transport"], m.received
        )
        yield counter_family(
            "fieldline_edge_points_decoded", "Points decoded from device messages.", ["transport"], m.points
        )
        yield counter_family(
            "fieldline_edge_quarantined", "Messages quarantined, by reason.", ["reason"], m.quarantined
        )
        yield counter_family(
            "fieldline_edge_step_drops", "Values removed by pipeline steps.", ["step", "reason"], m.step_drops
        )
        yield counter_family(
            "fieldline_edge_records_emitted", "Records put in the outbox, by kind.", ["kind"], m.records
        )
        yield counter_family(
            "fieldline_edge_coap_responses",
            "CoAP telemetry requests answered, by response code.",
            ["code"],
            m.coap_responses,
        )
        yield counter_family(
            "fieldline_edge_outbox_dropped_records",
            "Records dropped by the outbox overflow policy.",
            ["kind"],
            m.outbox_dropped,
        )
        for name, doc, value in (
            ("fieldline_edge_messages_committed", "Device messages whose effects are durable.", m.committed),
            ("fieldline_edge_uplink_batches", "Batches acknowledged by the cloud broker.", m.uplink_batches),
            ("fieldline_edge_uplink_records", "Records acknowledged by the cloud broker.", m.uplink_records),
            (
                "fieldline_edge_uplink_bytes",
                "Payload bytes acknowledged by the cloud broker.",
                m.uplink_bytes,
            ),
            (
                "fieldline_edge_uplink_backfill_batches",
                "Batches sent as backfill.",
                m.uplink_backfill_batches,
            ),
            (
                "fieldline_edge_uplink_reconnects",
                "Connection attempts to the cloud broker after the first.",
                m.uplink_reconnects,
            ),
            (
                "fieldline_edge_southbound_reconnects",
                "Reconnections to the local broker.",
                m.southbound_reconnects,
            ),
            ("fieldline_edge_commit_errors", "Failed store transactions.", m.commit_errors),
            (
                "fieldline_edge_reads_held",
                "Times the southbound stopped reading until a commit took the pending messages.",
                m.reads_held,
            ),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        hist = HistogramMetricFamily("fieldline_edge_commit_seconds", "Duration of group commits.")
        buckets = [(str(b), c) for b, c in zip(COMMIT_BUCKETS, m.commit_buckets, strict=True)]
        hist.add_metric([], [*buckets, ("+Inf", m.commits)], m.commit_seconds_sum)
        yield hist
        for name, (doc, read) in m.gauges.items():
            yield GaugeMetricFamily(name, doc, value=read())
        for collect in m.collectors:
            yield from collect()


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
