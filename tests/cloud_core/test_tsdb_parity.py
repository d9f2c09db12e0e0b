"""The same data written to SQLite and to a real VictoriaMetrics: a table of queries gets the same answers.

"The same" means: the same devices, metrics and buckets, null in the same places, counts equal, and every value
equal to 11 significant digits (VictoriaMetrics keeps about 12 of each stored value; sums of rollups may differ
in the last bits from sums of samples). The data are 1 Hz readings of three devices through raw uplink batches,
60 s edge windows of two more (one window split by an agent restart), and a few samples sent twice.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cloud_core.tsdb import Aggregation, Answer, Point, Query, SQLiteStore, VictoriaMetricsStore
from tests.cloud_core.tsdbkit import HOUR, raw_points, recent_hour, victoria_server, window_points

MINUTE = 60_000
RAW = ["dev-1", "dev-2", "dev-3"]
WINDOWS = ["win-1", "win-2"]
T0 = recent_hour(4)


def _queries() -> list[tuple[list[str], list[str] | None, int, int, int, Aggregation]]:
    out: list[tuple[list[str], list[str] | None, int, int, int, Aggregation]] = []
    for every, start, end in (
        (1000, T0 + 1234, T0 + 5 * MINUTE + 17),
        (10_000, T0 - 3 * MINUTE, T0 + 25 * MINUTE + 999),
        (MINUTE, T0 - 10 * MINUTE, T0 + 2 * HOUR + 10 * MINUTE),
        (90_000, T0, T0 + HOUR),
        (5 * MINUTE, T0 - HOUR, T0 + 3 * HOUR),
        (HOUR, T0 - HOUR, T0 + 3 * HOUR),
    ):
        for agg in Aggregation:
            out.append((RAW + WINDOWS, ["temperature", "humidity", "door"], start, end, every, agg))
    out.append((RAW, None, T0, T0 + 2 * HOUR, 15 * MINUTE, Aggregation.MEAN))
    out.append((WINDOWS, None, T0, T0 + HOUR, MINUTE, Aggregation.MAX))
    out.append((WINDOWS, ["temperature@p95", "humidity@count"], T0, T0 + HOUR, 5 * MINUTE, Aggregation.LAST))
    return out


def data() -> list[Point]:
    points = raw_points(RAW, T0 - 10 * MINUTE, 2 * 3600 + 20 * 60)
    points += window_points(WINDOWS, T0, 3600, ["mean", "min", "max", "count", "p95", "last"])
    points += [Point("dev-1", p.ts, {k: v + 1.5 for k, v in p.values.items()}) for p in points[100:110]]
    points += [Point("dev-2", p.ts, {k: v - 1.5 for k, v in p.values.items()}) for p in points[200:210]]
    return points


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[SQLiteStore, VictoriaMetricsStore]]:
    root: Path = tmp_path_factory.mktemp("parity")
    with victoria_server(root / "vm") as server:
        async with SQLiteStore(root / "ts.db") as sqlite, VictoriaMetricsStore(server.url) as victoria:
            points = data()
            for i in range(0, len(points), 2000):
                await sqlite.write(points[i : i + 2000])
                await victoria.write(points[i : i + 2000])
            server.flush()
            yield sqlite, victoria


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-11, abs_tol=1e-9)


def assert_same(left: Answer, right: Answer, label: Any) -> None:
    assert left.query == right.query
    assert left.series.keys() == right.series.keys(), label
    for device, metrics in left.series.items():
        assert metrics.keys() == right.series[device].keys(), (label, device)
        for metric, values in metrics.items():
            other = right.series[device][metric]
            bad = [(i, a, b) for i, (a, b) in enumerate(zip(values, other, strict=True)) if not _close(a, b)]
            assert not bad, (label, device, metric, bad[:5])


@pytest.mark.parametrize(
    "case", _queries(), ids=lambda c: f"{c[4]}ms-{c[5]}-{'all' if c[1] is None else len(c[1])}"
)
@pytest.mark.asyncio(loop_scope="module")
async def test_both_backends_answer_alike(
    stores: tuple[SQLiteStore, VictoriaMetricsStore], case: tuple[Any, ...]
) -> None:
    devices, metrics, start, end, every, agg = case
    query = Query.aligned(devices, metrics, start, end, every, agg)
    sqlite, victoria = stores
    answer = await sqlite.query(query)
    assert any(v is not None for m in answer.series.values() for vs in m.values() for v in vs)
    assert_same(answer, await victoria.query(query), case)


@pytest.mark.asyncio(loop_scope="module")
async def test_latest_values_alike(stores: tuple[SQLiteStore, VictoriaMetricsStore]) -> None:
    sqlite, victoria = stores
    first = data()[0]  # dev-1's first sample; the next one is about a second later
    for metrics, at, within in (
        (None, T0 + 2 * HOUR, HOUR),
        (["temperature", "door"], T0 + 30 * MINUTE + 500, 5 * MINUTE),
        (["humidity"], T0 + 10 * MINUTE, 1000),
        (["humidity"], first.ts + 500, 500),  # the window is (at - within, at]: the sample is left out
        (["humidity"], first.ts + 500, 501),
    ):
        devices = RAW + WINDOWS + ["ghost"]
        left = await sqlite.latest(devices, metrics, at=at, within=within)
        right = await victoria.latest(devices, metrics, at=at, within=within)
        assert left.keys() == right.keys()
        for device, found in left.items():
            assert found.keys() == right[device].keys(), (device, metrics, at)
            for metric, latest in found.items():
                assert latest.ts == right[device][metric].ts
                assert _close(latest.value, right[device][metric].value)
        assert any(left.values())
