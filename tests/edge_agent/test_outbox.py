"""The outbox on a real SQLite file: sealing, sequence numbers, overflow policy and its counters."""

from __future__ import annotations

from pathlib import Path

from edge_agent.outbox import KIND_CODES, Outbox
from edge_agent.store import connect
from fieldline.wire import (
    AggregateRecord,
    EventRecord,
    FlagRecord,
    RawRecord,
    RecordKind,
    StateRecord,
    decode_batch,
    encode_batch,
    encode_record,
)

RAW, AGG = KIND_CODES[RecordKind.RAW], KIND_CODES[RecordKind.AGG]


def raw_row(i: int, created: float = 0.0) -> tuple[int, float, bytes]:
    return RAW, created, encode_record(RawRecord(f"dev-{i % 3}", 1_700_000_000.0 + i, {"n": i}))


def agg_row(i: int, created: float = 0.0) -> tuple[int, float, bytes]:
    return (
        AGG,
        created,
        encode_record(AggregateRecord("dev", "t", 60.0 * i, 60.0, {"mean": 1.0, "count": 60})),
    )


def open_outbox(path: Path, **kwargs: int | float) -> Outbox:
    conn = connect(path, "normal")
    params = {"max_bytes": 1_000_000, "batch_max_bytes": 1000, "batch_max_age": 1.0, **kwargs}
    return Outbox(conn, **params)  # type: ignore[arg-type]


def test_seals_by_size_and_age_with_increasing_seq(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "a.db")
    box.add([raw_row(i, created=100.0) for i in range(200)])
    assert box.seal_due(100.0) >= 2  # over batch_max_bytes: sealed by size
    leftover = box.stats.loose_records[RAW]
    assert 0 < leftover < 200
    assert box.seal_due(100.5) == 0  # not old enough yet
    assert box.seal_due(101.0) == 1  # by age
    batches = box.fetch(0, 100)
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    records = []
    for b in batches:
        env = decode_batch(encode_batch("gw", b.seq, b.kind, b.count, b.body, backfill=False, sent_at=0))
        records.extend(env.records)
    assert [r.metrics["n"] for r in records] == list(range(200))


def test_seq_survives_reopen_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    box = open_outbox(path)
    box.add([raw_row(i) for i in range(10)])
    box.seal_due(0, force=True)
    box.delete_batches([1])
    box.conn.close()
    box = open_outbox(path)
    assert box.stats.batches == 0
    box.add([raw_row(i) for i in range(10)])
    box.seal_due(0, force=True)
    assert [b.seq for b in box.fetch(0, 10)] == [2]


def test_overflow_drops_raw_before_aggregates_and_counts_exactly(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    box = open_outbox(path, max_bytes=1500, batch_max_bytes=500)
    aggs = [agg_row(i) for i in range(10)]
    raws = [raw_row(i) for i in range(100)]
    raw_bytes = sum(len(r[2]) for r in raws)
    agg_bytes = sum(len(r[2]) for r in aggs)
    box.add(aggs)
    box.add(raws)
    box.seal_due(0.0)
    dropped = box.enforce_cap(in_flight=set())
    assert box.stats.total_bytes <= 1500
    assert "agg" not in dropped
    kept_raw = box.stats.total_records - 10
    assert dropped["raw"] + kept_raw == 100
    assert box.stats.dropped_records["raw"] == dropped["raw"]
    # The oldest raw data went first: what is left is the newest.
    left = []
    for b in box.fetch(0, 1000):
        if b.kind is RecordKind.RAW:
            env = decode_batch(encode_batch("gw", b.seq, b.kind, b.count, b.body, backfill=False, sent_at=0))
            left.extend(r.metrics["n"] for r in env.records)
    loose = box.conn.execute("SELECT count(*) FROM records WHERE kind=?", (RAW,)).fetchone()[0]
    assert left == list(range(100 - kept_raw, 100 - loose))
    assert raw_bytes + agg_bytes - box.stats.total_bytes == box.stats.dropped_bytes["raw"]
    box.conn.close()
    reopened = open_outbox(path, max_bytes=1500, batch_max_bytes=500)
    assert reopened.stats.dropped_records["raw"] == dropped["raw"]


def test_overflow_spares_in_flight_batches_and_then_drops_aggregates(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "d.db", max_bytes=10**9, batch_max_bytes=200)
    box.add([agg_row(i) for i in range(20)])
    box.seal_due(0.0, force=True)
    seqs = [b.seq for b in box.fetch(0, 100)]
    box.max_bytes = 100
    dropped = box.enforce_cap(in_flight={seqs[0]})
    assert dropped["agg"] > 0
    assert [b.seq for b in box.fetch(0, 100)] == [seqs[0]]


def test_overflow_drops_states_before_events_and_events_before_aggregates(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "e.db", max_bytes=10**9, batch_max_bytes=10**6)
    one = {
        RecordKind.RAW: RawRecord("d", 1.0, {"n": 1}),
        RecordKind.FLAG: FlagRecord("d", "n", 1.0, "stuck"),
        RecordKind.STATE: StateRecord("d", 1.0, "online"),
        RecordKind.EVENT: EventRecord("d", 1.0, "alert", {"rule": "r"}, "rule:r"),
        RecordKind.AGG: AggregateRecord("d", "n", 0.0, 60.0, {"mean": 1.0}),
    }
    box.add(
        [(KIND_CODES[kind], 0.0, encode_record(record)) for kind, record in one.items() for _ in range(10)]
    )
    sizes = {kind: 10 * len(encode_record(record)) for kind, record in one.items()}
    # Room for events and aggregates only: raw points, flags and states go, in that order; events stay.
    box.max_bytes = sizes[RecordKind.EVENT] + sizes[RecordKind.AGG]
    assert box.enforce_cap(in_flight=set()) == {"raw": 10, "dq": 10, "state": 10}
    box.max_bytes = sizes[RecordKind.AGG]
    assert box.enforce_cap(in_flight=set()) == {"event": 10}
