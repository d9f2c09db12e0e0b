"""The value cleaning steps (range, nulls, unit, rename, drop), metric globs and step configuration errors."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from edge_agent.pipeline.base import ListSink, Step, StepContext
from edge_agent.pipeline.step_config import MAX_CACHED_NAMES, GlobMap, MetricGlobs
from edge_agent.pipeline.steps import CleaningStepConfig, build_step
from edge_agent.pipeline.units import CONVERSIONS, ConversionName
from fieldline.errors import ConfigError
from fieldline.wire import FlagRecord, Point
from fieldline.yamlconf import load_model

STEP_CONFIG: TypeAdapter[Any] = TypeAdapter(CleaningStepConfig)


class Run:
    """A step with a context whose drop counter and sink the test can read."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.step: Step = build_step(STEP_CONFIG.validate_python(config))
        self.sink = ListSink()
        self.drops: Counter[tuple[str, str]] = Counter()
        self.ctx = StepContext(self.sink, self._count)

    def _count(self, step: str, reason: str, n: int = 1) -> None:
        self.drops[(step, reason)] += n

    def __call__(
        self, metrics: dict[str, Any], ts: float = 1000.0, device: str = "dev-1"
    ) -> dict[str, Any] | None:
        point = self.step.apply(Point(device, ts, dict(metrics)), self.ctx)
        return None if point is None else point.metrics

    @property
    def flags(self) -> list[FlagRecord]:
        return [r for r in self.sink.records if isinstance(r, FlagRecord)]


def invalid(config: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        STEP_CONFIG.validate_python(config)
    return str(err.value)


# --------------------------------------------------------------------------------------------------- range


def test_range_drops_out_of_range_values_and_counts_them() -> None:
    run = Run({"type": "range", "limits": {"temperature": {"min": -40, "max": 125}}})
    assert run({"temperature": 21.5, "humidity": 900}) == {"temperature": 21.5, "humidity": 900}
    assert run({"temperature": 125}) == {"temperature": 125}
    assert run({"temperature": 125.01, "humidity": 40}) == {"humidity": 40}
    assert run({"temperature": -41}) == {}
    assert run.drops == {("range", "above_max"): 1, ("range", "below_min"): 1}


def test_range_actions_per_step_and_per_metric() -> None:
    run = Run(
        {
            "type": "range",
            "action": "clamp",
            "limits": {
                "temperature": {"min": 0, "max": 50},
                "humidity": {"min": 0, "max": 100, "action": "null"},
                "pressure": {"min": 800, "max": 1100, "action": "replace", "value": 1013.25},
                "co2": {"max": 5000, "action": "drop"},
            },
        }
    )
    got = run({"temperature": 60.0, "humidity": -3, "pressure": 20, "co2": 9000, "other": 1e9})
    assert got == {"temperature": 50.0, "humidity": None, "pressure": 1013.25, "other": 1e9}
    assert run({"temperature": -5}) == {"temperature": 0.0}
    # every out-of-range value is counted, whatever the action
    assert run.drops == {("range", "above_max"): 2, ("range", "below_min"): 3}


def test_range_one_sided_limits() -> None:
    run = Run({"type": "range", "limits": {"level": {"min": 0}, "load": {"max": 1}}})
    assert run({"level": 1e12, "load": -1e12}) == {"level": 1e12, "load": -1e12}
    assert run({"level": -0.1, "load": 1.1}) == {}


@pytest.mark.parametrize("value", [True, False, "21.5", float("nan"), [1], {"a": 1}])
def test_range_removes_values_that_are_not_numbers(value: Any) -> None:
    run = Run({"type": "range", "action": "clamp", "limits": {"temperature": {"min": 0, "max": 50}}})
    assert run({"temperature": value, "door": True}) == {"door": True}
    assert run.drops == {("range", "not_numeric"): 1}


def test_range_leaves_nulls_to_the_nulls_step() -> None:
    run = Run({"type": "range", "limits": {"temperature": {"min": 0, "max": 50}}})
    assert run({"temperature": None}) == {"temperature": None}
    assert not run.drops


def test_range_globs_and_exact_names() -> None:
    run = Run(
        {
            "type": "range",
            "limits": {"temp_*": {"min": 0, "max": 10}, "temp_oven": {"max": 300}, "t?": {"max": 1}},
        }
    )
    got = run({"temp_room": 11, "temp_oven": 250, "t1": 2, "t10": 2, "humidity": -5})
    assert got == {"temp_oven": 250, "t10": 2, "humidity": -5}


def test_range_large_integers_compare_exactly() -> None:
    run = Run({"type": "range", "limits": {"n": {"max": 1e300}}})
    assert run({"n": 10**400}) == {}
    assert run.drops == {("range", "above_max"): 1}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"limits": {"t": {"min": 10, "max": 5}}}, "min (10) is greater than max (5)"),
        ({"limits": {"t": {}}}, "a limit needs min, max or both"),
        ({"limits": {}}, "at least 1 item"),
        ({"limits": {"t": {"max": 5}}, "action": "replace"}, "limits.t: action replace needs a value"),
        ({"limits": {"t": {"max": 5, "value": 1}}}, "value is only used with action: replace"),
        ({"limits": {"t": {"max": 5}}, "value": 1}, "no limit replaces"),
        ({"limits": {"t": {"max": 5, "action": "wrap"}}}, "'drop', 'clamp', 'null' or 'replace'"),
        ({"limits": {"t": {"max": "high"}}}, "valid number"),
        ({"limits": {"t": {"max": True}}}, "valid number"),
        ({"limits": {"t": {"max": float("inf")}}}, "finite number"),
        ({"limits": {"t": {"max": 5, "maximum": 6}}}, "Extra inputs are not permitted"),
    ],
)
def test_range_config_errors(config: dict[str, Any], message: str) -> None:
    assert message in invalid({"type": "range", **config})


def test_range_replace_value_from_the_step() -> None:
    run = Run({"type": "range", "action": "replace", "value": -1, "limits": {"t": {"max": 5}}})
    assert run({"t": 6}) == {"t": -1}


# --------------------------------------------------------------------------------------------------- nulls


def test_nulls_drop_only_selected_metrics() -> None:
    run = Run({"type": "nulls", "metrics": ["temp*"]})
    assert run({"temperature": None, "humidity": None, "temp2": 3}) == {"humidity": None, "temp2": 3}
    assert run({"temperature": None, "temp_x": None}) == {}
    assert run.drops == {("nulls", "null"): 3}


def test_nulls_fill() -> None:
    run = Run({"type": "nulls", "action": "fill", "value": 0})
    assert run({"a": None, "b": 1.5, "c": False, "d": ""}) == {"a": 0, "b": 1.5, "c": False, "d": ""}
    text = Run({"type": "nulls", "action": "fill", "value": "unknown", "metrics": ["state"]})
    assert text({"state": None, "level": None}) == {"state": "unknown", "level": None}
    assert not run.drops


def test_nulls_last_value_per_device_and_metric() -> None:
    run = Run({"type": "nulls", "action": "last"})
    assert run({"t": None}, ts=1) == {}
    assert run({"t": 20.5, "s": "ok"}, ts=2) == {"t": 20.5, "s": "ok"}
    assert run({"t": None, "s": None}, ts=3) == {"t": 20.5, "s": "ok"}
    assert run({"t": None}, ts=4, device="other") == {}
    assert run({"t": 21.0}, ts=5) == {"t": 21.0}
    assert run({"t": None}, ts=6) == {"t": 21.0}
    assert run.drops == {("nulls", "null"): 2}


def test_nulls_last_respects_max_age_and_fills_do_not_refresh_it() -> None:
    run = Run({"type": "nulls", "action": "last", "max_age": "10s"})
    run({"t": 1.0}, ts=100)
    assert run({"t": None}, ts=105) == {"t": 1.0}
    assert run({"t": None}, ts=110) == {"t": 1.0}
    assert run({"t": None}, ts=110.5) == {}
    assert run.drops == {("nulls", "null_stale"): 1}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"action": "fill"}, "action fill needs a value"),
        ({"action": "drop", "value": 1}, "value is only used with action: fill"),
        ({"action": "fill", "value": 1, "max_age": "5s"}, "max_age is only used with action: last"),
        ({"action": "last", "max_age": 0}, "max_age must be greater than zero"),
        ({"action": "last", "max_age": "5 minutes"}, "invalid duration"),
        ({"action": "zero"}, "'drop', 'fill' or 'last'"),
        ({"metrics": []}, "at least 1 item"),
        ({"metrics": [""]}, "at least 1 character"),
    ],
)
def test_nulls_config_errors(config: dict[str, Any], message: str) -> None:
    assert message in invalid({"type": "nulls", **config})


# --------------------------------------------------------------------------------------------------- unit


def test_unit_named_and_linear_conversions() -> None:
    run = Run(
        {
            "type": "unit",
            "conversions": {
                "temp_f": {"convert": "f_to_c"},
                "flow": {"scale": 0.001},
                "level": {"scale": 2, "offset": -1},
                "bias": {"offset": 10},
                "pct_*": {"convert": "percent_to_ratio", "digits": 3},
            },
        }
    )
    got = run({"temp_f": 212, "flow": 1500, "level": 3, "bias": 1.5, "pct_a": 33.3333, "other": 5})
    assert got is not None
    assert got["temp_f"] == pytest.approx(100.0)
    assert got == {"temp_f": got["temp_f"], "flow": 1.5, "level": 5, "bias": 11.5, "pct_a": 0.333, "other": 5}
    assert run({"temp_f": 32.0}) == {"temp_f": pytest.approx(0.0, abs=1e-12)}


@pytest.mark.parametrize("value", [True, "72F", 10**400])
def test_unit_removes_values_it_cannot_convert(value: Any) -> None:
    run = Run({"type": "unit", "conversions": {"t": {"convert": "f_to_c"}}})
    assert run({"t": value, "u": value}) == {"u": value}
    assert run.drops == {("unit", "not_numeric"): 1}


def test_unit_passes_nulls_and_nan() -> None:
    run = Run({"type": "unit", "conversions": {"t": {"convert": "c_to_k"}}})
    assert run({"t": None}) == {"t": None}
    got = run({"t": float("nan")})
    assert got is not None
    assert math.isnan(got["t"])
    assert not run.drops


def test_every_named_conversion_has_an_inverse_or_a_known_value() -> None:
    assert set(get_args(ConversionName)) == set(CONVERSIONS)
    known = {
        "c_to_f": (100, 212),
        "k_to_c": (0, -273.15),
        "psi_to_kpa": (1, 6.894757),
        "mph_to_ms": (1, 0.44704),
        "kmh_to_ms": (36, 10),
        "inhg_to_hpa": (29.92, 1013.21),
        "knots_to_ms": (1, 0.514444),
        "f_to_k": (32, 273.15),
        "gal_to_l": (1, 3.785412),
        "in_to_mm": (1, 25.4),
        "ft_to_m": (1, 0.3048),
        "bar_to_kpa": (1, 100),
        "wh_to_kwh": (1500, 1.5),
        "ratio_to_percent": (0.5, 50),
    }
    for name, (given, expected) in known.items():
        scale, offset = CONVERSIONS[name]
        assert given * scale + offset == pytest.approx(expected, abs=0.01), name
    for name, (scale, offset) in CONVERSIONS.items():
        source, target = name.split("_to_")
        back = CONVERSIONS.get(f"{target}_to_{source}")
        if back is not None:
            assert (37.5 * scale + offset) * back[0] + back[1] == pytest.approx(37.5), name


@pytest.mark.parametrize(
    ("conversion", "message"),
    [
        ({"convert": "f_to_x"}, "Input should be 'f_to_c', 'c_to_f'"),
        ({"convert": "f_to_c", "scale": 2}, "either convert or scale/offset, not both"),
        ({}, "give convert (a named conversion) or scale and/or offset"),
        ({"scale": 0}, "scale 0"),
        ({"scale": 1, "digits": 20}, "less than or equal to 12"),
    ],
)
def test_unit_config_errors(conversion: dict[str, Any], message: str) -> None:
    assert message in invalid({"type": "unit", "conversions": {"t": conversion}})


# --------------------------------------------------------------------------------------------------- rename


def test_rename_moves_values_and_the_renamed_value_wins() -> None:
    run = Run({"type": "rename", "map": {"temp": "temperature", "hum": "humidity"}})
    assert run({"temp": 20.0, "x": 1}) == {"x": 1, "temperature": 20.0}
    assert run({"temp": 20.0, "temperature": 99.0}) == {"temperature": 20.0}
    assert run({"temperature": 5}) == {"temperature": 5}
    assert run.drops == {("rename", "overwritten"): 1}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"a": "b", "c": "b"}, "a and c are both renamed to b"),
        ({"a": "b", "b": "c"}, "b is both a rename target and renamed itself"),
        ({"a": "a"}, "a is renamed to itself"),
        ({"t_*": "temperature"}, "exact metric names, not globs"),
        ({}, "at least 1 item"),
        ({"a": ""}, "at least 1 character"),
    ],
)
def test_rename_config_errors(mapping: dict[str, str], message: str) -> None:
    assert message in invalid({"type": "rename", "map": mapping})


# --------------------------------------------------------------------------------------------------- drop


def test_drop_listed_metrics() -> None:
    run = Run({"type": "drop", "metrics": ["debug_*", "rssi"]})
    assert run({"debug_a": 1, "debug_b": "x", "rssi": -70, "t": 1}) == {"t": 1}
    assert run.drops == {("drop", "dropped_by_config"): 3}


def test_drop_keeps_only_listed_metrics() -> None:
    run = Run({"type": "drop", "keep": ["temperature", "hum*"]})
    assert run({"temperature": 1, "humidity": 2, "rssi": -70, "uptime": 5}) == {
        "temperature": 1,
        "humidity": 2,
    }
    assert run.drops == {("drop", "dropped_by_config"): 2}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "give exactly one of metrics (what to drop) or keep (what to keep)"),
        ({"metrics": ["a"], "keep": ["b"]}, "give exactly one of metrics"),
        ({"metrics": []}, "at least 1 item"),
    ],
)
def test_drop_config_errors(config: dict[str, Any], message: str) -> None:
    assert message in invalid({"type": "drop", **config})


# --------------------------------------------------------------------------------------------------- globs


def test_metric_globs() -> None:
    globs = MetricGlobs(["temp_*", "humidity", "[ab]?"])
    assert [globs(n) for n in ("temp_x", "temp_", "humidity", "a1", "b2", "c1", "Temp_x", "ab1")] == [
        True, True, True, True, True, False, False, False,
    ]  # fmt: skip
    assert MetricGlobs(["*"])("anything")
    exact = MetricGlobs(["a", "b"])
    assert exact("a")
    assert not exact("c")


def test_glob_caches_are_bounded() -> None:
    globs = MetricGlobs(["m_*"])
    table: GlobMap[int] = GlobMap([("m_*", 1), ("m_7", 2)])
    for i in range(3 * MAX_CACHED_NAMES):
        assert globs(f"m_{i}")
        assert table.get(f"m_{i}") == (2 if i == 7 else 1)
    assert len(globs._cache) <= MAX_CACHED_NAMES
    assert len(table._cache) <= MAX_CACHED_NAMES
    assert table.get("x") is None


# --------------------------------------------------------------------------------------------------- YAML


class PipelineSteps(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[CleaningStepConfig]


BAD_STEPS = """\
steps:
  - type: range
    limits:
      temperature: {min: 10, max: -5}
  - type: outlier
    method: mad
    window: 2
  - type: unit
    conversions:
      t: {convert: f_to_x}
  - type: stuck
    count: 1
  - type: sharpen
  - type: rename
    map: {a: b, c: b}
  - type: dedupe
    windw: 8
"""


def test_config_errors_name_file_line_and_field() -> None:
    with pytest.raises(ConfigError) as err:
        load_model(PipelineSteps, "pipeline.yaml", text=BAD_STEPS)
    issues = err.value.issues
    spans = {0: (2, 4), 1: (5, 7), 2: (8, 10), 3: (11, 12), 4: (13, 13), 5: (14, 15), 6: (16, 17)}
    expected = [
        (0, "temperature", "min (10) is greater than max (-5)"),
        (1, "method", "'hampel' or 'zscore'"),
        (1, "window", "greater than or equal to 3"),
        (2, "convert", "Input should be 'f_to_c'"),
        (3, "count", "greater than or equal to 2"),
        (4, "", "does not match any of the expected tags"),
        (5, "", "a and c are both renamed to b"),
        (6, "windw", "Extra inputs are not permitted"),
    ]
    assert len(issues) == len(expected)
    for issue, (index, field, message) in zip(issues, expected, strict=True):
        first, last = spans[index]
        assert issue.file == "pipeline.yaml"
        assert issue.line is not None
        assert first <= issue.line <= last, str(issue)
        assert issue.path.startswith(f"steps.{index}"), str(issue)
        assert issue.path.endswith(field), str(issue)
        assert message in issue.message
    assert str(issues[0]).startswith("pipeline.yaml:")


def test_valid_yaml_builds_every_step() -> None:
    text = """\
steps:
  - {type: rename, map: {temp: temperature}}
  - {type: unit, conversions: {temperature: {convert: f_to_c}}}
  - {type: range, limits: {temperature: {min: -40, max: 125}}}
  - {type: nulls, action: last, max_age: 5m}
  - {type: dedupe}
  - {type: outlier, method: zscore}
  - {type: stuck, count: 5, tolerance: 0.01, min_duration: 1m}
  - {type: drop, keep: ["*"]}
  - {type: rate_limit, interval: 1s}
"""
    config = load_model(PipelineSteps, "pipeline.yaml", text=text)
    steps = [build_step(step) for step in config.steps]
    assert [step.name for step in steps] == [step.type for step in config.steps]
