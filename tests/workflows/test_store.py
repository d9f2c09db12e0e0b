"""The instance store contract on MemoryStore and SQLiteStore; group commit, durability and failures on SQLite."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from workflows.instance import HistoryEntry, Instance, Join, Status, Wait
from workflows.sqlite_store import SQLiteStore, StoreError
from workflows.store import InstanceStore, MemoryStore, StoredDefinition

ROOT = Path(__file__).resolve().parents[2]


def instance(id: str, **fields: Any) -> Instance:
    values: dict[str, Any] = {
        "workflow_id": "boiler",
        "version": "1",
        "status": Status.RUNNING,
        "state": "heat",
        "created_at": 1000.0,
        "updated_at": 1000.0,
        **fields,
    }
    return Instance(id=id, **values)


def entry(instance_id: str, n: int) -> HistoryEntry:
    return HistoryEntry(instance_id, 1000.0 + n, "transition", f"s{n}", {"n": n, "why": ["ok", None]})


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InstanceStore]:
    store: InstanceStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "data" / "wf.db")
    )
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "wf.db")
    await store.open()
    yield store
    await store.close()


async def test_round_trip_keeps_every_field(store: InstanceStore) -> None:
    full = instance(
        "i-1",
        status=Status.WAITING,
        machine=("main", 2, "items"),
        vars={"target": 21.5, "zones": ["a", "b"], "nested": {"on": True, "none": None}},
        event={"type": "temp", "data": {"value": 19}},
        device={"id": "dev-1"},
        wait=Wait(kind="event", deadline=2000.0, event_type="ack", on_timeout="fail", token=3),
        join=Join(
            total=3, running=["c-1", "c-2"], results={0: {"ok": 1}, 2: None}, next_item=3, items=[1, 2, 3]
        ),
        inbox=[{"type": "ack", "data": {}}],
        error={"error": "Command.Nack", "cause": "busy"},
        attempt=2,
        state_deadline=1500.0,
    )
    await store.save([full], [])
    got = await store.get("i-1")
    assert got is not None
    assert got.to_record() == full.to_record()
    assert got.join is not None
    assert got.join.results == {0: {"ok": 1}, 2: None}

    full.status, full.wait, full.updated_at = Status.SUCCEEDED, None, 1100.0
    await store.save([full], [])
    updated = await store.get("i-1")
    assert updated is not None
    assert updated.to_record() == full.to_record()
    assert await store.get("nope") is None


async def test_history_is_oldest_first_per_instance(store: InstanceStore) -> None:
    await store.save([instance("a"), instance("b")], [entry("a", 0), entry("b", 0), entry("a", 1)])
    await store.save([], [entry("a", 2)])
    assert await store.history("a") == [entry("a", 0), entry("a", 1), entry("a", 2)]
    assert await store.history("b") == [entry("b", 0)]
    assert await store.history("nope") == []


async def test_list_filters_and_orders_newest_first(store: InstanceStore) -> None:
    await store.save(
        [
            instance("p", created_at=1.0),
            instance("c1", created_at=2.0, parent_id="p", status=Status.SUCCEEDED),
            instance("c2", created_at=3.0, parent_id="p"),
            instance("o", created_at=4.0, workflow_id="other", status=Status.FAILED),
        ],
        [],
    )

    async def ids(**filters: Any) -> list[str]:
        return [i.id for i in await store.list(**filters)]

    assert await ids() == ["o", "c2", "c1", "p"]
    assert await ids(workflow_id="boiler") == ["c2", "c1", "p"]
    assert await ids(status=Status.RUNNING) == ["c2", "p"]
    assert await ids(parent_id="p") == ["c2", "c1"]
    assert await ids(workflow_id="boiler", status=Status.SUCCEEDED, parent_id="p") == ["c1"]
    assert await ids(limit=2) == ["o", "c2"]
    assert await ids(workflow_id="nope") == []


async def test_load_active_excludes_terminal(store: InstanceStore) -> None:
    await store.save([instance(status.value, status=status) for status in Status], [])
    assert sorted(i.id for i in await store.load_active()) == ["running", "waiting"]


async def test_definitions_round_trip_in_deployment_order(store: InstanceStore) -> None:
    second = StoredDefinition("boiler", "2", "name: boiler\nversion: 2\n", 20.0)
    first = StoredDefinition("pump", "1", "name: pump\n", 10.0)
    await store.put_definition(second)
    await store.put_definition(first)
    assert await store.definitions() == [first, second]

    redeployed = StoredDefinition("pump", "1", "name: pump # fixed\n", 30.0)
    await store.put_definition(redeployed)
    assert await store.definitions() == [second, redeployed]


async def test_states_put_overwrite_and_delete(store: InstanceStore) -> None:
    await store.save(
        [], [], [("rules", "hot", {"since": 5.0}), ("rules", "cold", 1), ("schedules", "hot", "x")]
    )
    await store.save(
        [], [], [("rules", "hot", {"since": 6.0}), ("rules", "cold", None), ("rules", "gone", None)]
    )
    assert await store.get_states("rules") == {"hot": {"since": 6.0}}
    assert await store.get_states("schedules") == {"hot": "x"}
    assert await store.get_states("requests") == {}


async def test_concurrent_saves_share_transactions(sqlite_store: SQLiteStore) -> None:
    await asyncio.gather(*(sqlite_store.save([instance(f"i-{n}")], [entry(f"i-{n}", 0)]) for n in range(200)))
    assert sqlite_store.saves == 200
    assert sqlite_store.commits < 200
    assert len(await sqlite_store.list(limit=1000)) == 200
    assert await sqlite_store.history("i-199") == [entry("i-199", 0)]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    store = SQLiteStore(path, sync="normal")
    await store.open()
    await store.save([instance("i-1")], [entry("i-1", 0)], [("rules", "k", [1, 2])])
    await store.put_definition(StoredDefinition("boiler", "1", "src", 1.0))
    await store.close()

    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        assert [i.id for i in await reopened.load_active()] == ["i-1"]
        assert await reopened.history("i-1") == [entry("i-1", 0)]
        assert await reopened.get_states("rules") == {"k": [1, 2]}
        assert await reopened.definitions() == [StoredDefinition("boiler", "1", "src", 1.0)]
    finally:
        await reopened.close()


CRASH_SCRIPT = """
import asyncio, sys, time
from workflows.instance import HistoryEntry, Instance, Status
from workflows.sqlite_store import SQLiteStore

async def worker(store, w):
    n = 0
    while True:
        now = time.time()
        inst = Instance(f"w{w}-{n}", "crash", "1", Status.RUNNING, "s", now, now)
        await store.save([inst], [HistoryEntry(inst.id, now, "start", "s")])
        sys.stdout.write(inst.id + "\\n")
        sys.stdout.flush()
        n += 1

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    await asyncio.gather(*(worker(store, w) for w in range(8)))

asyncio.run(main())
"""


async def test_every_acknowledged_save_survives_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    path = tmp_path / "crash.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 300 and (line := await proc.stdout.readline()):
            acknowledged.append(line.decode().strip())
    finally:
        proc.kill()
        await proc.wait()
    assert len(acknowledged) == 300, "the writer process stopped early (see its stderr)"

    store = SQLiteStore(path)
    await store.open()
    try:
        stored = {i.id for i in await store.list(workflow_id="crash", limit=100_000)}
        assert set(acknowledged) <= stored
        for instance_id in acknowledged[-10:]:
            assert [e.kind for e in await store.history(instance_id)] == ["start"]
    finally:
        await store.close()


async def test_failed_transaction_raises_store_error_then_recovers(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "wf.db", isolation_level=None)
    other.execute("CREATE TRIGGER refuse BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'refused'); END")
    results = await asyncio.gather(
        *(sqlite_store.save([instance(f"f-{n}")], [entry(f"f-{n}", 0)]) for n in range(5)),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, StoreError)
        assert result.retryable
        assert isinstance(result.__cause__, sqlite3.Error)
    assert await sqlite_store.list() == []  # each failed transaction was rolled back whole
    assert sqlite_store.saves == 0

    other.execute("DROP TRIGGER refuse")
    other.close()
    await sqlite_store.save([instance("ok")], [entry("ok", 0)])
    assert [i.id for i in await sqlite_store.list()] == ["ok"]
    assert sqlite_store.saves == 1


async def test_purge_deletes_old_terminal_instances_and_their_history(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.save(
        [
            instance("old-done", status=Status.SUCCEEDED, updated_at=10.0),
            instance("old-failed", status=Status.FAILED, updated_at=10.0),
            instance("old-running", status=Status.RUNNING, updated_at=10.0),
            instance("new-done", status=Status.CANCELLED, updated_at=100.0),
        ],
        [entry("old-done", 0), entry("old-running", 0), entry("new-done", 0)],
    )
    assert await sqlite_store.purge(50.0) == 2
    assert sorted(i.id for i in await sqlite_store.list()) == ["new-done", "old-running"]
    assert await sqlite_store.history("old-done") == []
    assert await sqlite_store.history("old-running") == [entry("old-running", 0)]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99") as raised:
        await SQLiteStore(path).open()
    assert not raised.value.retryable
