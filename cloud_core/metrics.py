"""Prometheus metrics of one cloud core: HTTP requests by route, plus counters each part publishes.

Each app has its own registry (several apps can run in one test process). A part registers a source, a
function returning ``{name: value}``; ``/metrics`` shows each as ``fieldline_cloud_<part>_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

Source = Callable[[], dict[str, float]]


class CloudMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fieldline_cloud_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fieldline_cloud_http_request_seconds",
            "HTTP request duration by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self._sources: dict[str, Source] = {}
        self.registry.register(_Sources(self._sources))

    def register_source(self, part: str, source: Source) -> None:
        self._sources[part] = source


class _Sources:
    def __init__(self, sources: dict[str, Source]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for part, source in self.sources.items():
            for name, value in source().items():
                family = GaugeMetricFamily(
                    f"fieldline_cloud_{part}_{name}", f"{part}: {name.replace('_', ' ')}"
                )
                family.add_metric([], float(value))
                yield family
