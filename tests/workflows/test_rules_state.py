"""The bounded per-device structures of the rule engine: the LRU table and the sliding window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workflows.events import Event
from workflows.rule_state import DeviceState, DeviceTable, WindowSeries


def test_the_table_evicts_the_least_recently_active_device() -> None:
    table = DeviceTable(2)
    assert table.add("a", DeviceState()) is None
    assert table.add("b", DeviceState()) is None
    assert table.touch("a") is not None
    assert table.add("c", DeviceState()) == "b"
    assert list(table.states) == ["a", "c"]
    assert table.touch("b") is None


def test_a_state_round_trips_through_its_record() -> None:
    state = DeviceState()
    state.fired, state.since, state.deadline, state.cooldown_until = True, 10.0, 310.0, 900.0
    state.last_seen, state.step, state.started = 20.0, 2, 5.0
    state.event = Event("telemetry", {"t": 1}, device_id="d1", device_type="x", ts=3.0)
    record = state.checkpoint(with_event=True)
    assert state.saved_seen == 20.0
    back = DeviceState.from_record(record)
    for name in ("fired", "since", "deadline", "cooldown_until", "last_seen", "step", "started", "event"):
        assert getattr(back, name) == getattr(state, name), name
    assert "event" not in state.checkpoint(with_event=False)
    assert DeviceState().checkpoint(with_event=True) == {}
    assert DeviceState().idle(0.0)


samples = st.lists(
    st.tuples(st.floats(0, 30), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=200
)


@given(samples, st.sampled_from(["avg", "min", "max", "sum", "count"]), st.integers(1, 50))
def test_window_aggregates_match_a_brute_force_over_the_kept_samples(
    steps: list[tuple[float, float]], agg: str, cap: int
) -> None:
    window = WindowSeries(agg, 60.0, cap)
    ts, seen = 0.0, []
    for gap, value in steps:
        ts += gap
        seen.append((ts, value))
        window.add(ts, value)
        kept = [v for t, v in seen if t > ts - 60.0][-cap:]
        expected = {
            "avg": sum(kept) / len(kept),
            "min": min(kept),
            "max": max(kept),
            "sum": sum(kept),
            "count": len(kept),
        }[agg]
        assert window.count == len(kept)
        assert abs(window.aggregate() - expected) <= 1e-6 * max(1.0, *(abs(v) for v in kept)) * len(kept)


def test_a_late_sample_outside_the_window_is_ignored_and_the_cap_reports_overflow() -> None:
    window = WindowSeries("max", 10.0, 2)
    assert window.add(100.0, 1.0) is False
    assert window.add(85.0, 50.0) is False  # older than the window's start (90)
    assert (window.count, window.aggregate()) == (1, 1.0)
    window.add(101.0, 3.0)
    assert window.add(102.0, 2.0) is True
    assert (window.count, window.aggregate()) == (2, 3.0)
