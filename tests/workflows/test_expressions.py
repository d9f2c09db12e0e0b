"""Conditions and templates: the fast closure path agrees with Jinja2, errors are loud, the sandbox holds."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.errors import EvaluationError, ExpressionError
from workflows.expressions import ENV, Condition, Template, TemplateValue, scope_function

NOW = 1_700_000_000.0

SCOPE: dict[str, Any] = {
    "temperature": 85,
    "humidity": 40.5,
    "maintenance": False,
    "mode": "eco",
    "missing_value": None,
    "zones": ["a", "b", "c"],
    "readings": [10, 20, 30],
    "vars": {"limits": {"high": 80, "low": 10}, "name": "boiler-1", "tags": ["hot", "roof"]},
    "event": {"type": "telemetry", "data": {"temperature": 91.5, "ok": True}, "device_id": "dev-1"},
    "result": {"status": "ok", "body": {"items": [1, 2]}},
    "device": {"id": "dev-1", "type": "freezer"},
    "instance": {"id": "i1", "attempt": 0},
    "now": scope_function(lambda: NOW),
}

# Every expression here is in the fast subset; its value must equal what Jinja2 computes.
FAST_TABLE = [
    "temperature > 80",
    "temperature >= 85",
    "temperature < 85",
    "temperature <= 84.9",
    "temperature == 85",
    "temperature != 85",
    "mode == 'eco'",
    "10 < temperature < 100",
    "10 < temperature < 50",
    "0 <= humidity <= 100 < temperature",
    "temperature > 80 and not maintenance",
    "temperature > 90 or humidity > 40",
    "temperature > 90 or humidity > 50",
    "not maintenance and (mode == 'eco' or mode == 'boost')",
    "maintenance or mode",
    "temperature and mode",
    "not temperature",
    "temperature + 1 * 2",
    "(temperature - 5) / 4",
    "temperature // 7",
    "temperature % 7",
    "-temperature + +humidity",
    "humidity * 2 > temperature",
    "'a' in zones",
    "'z' in zones",
    "'z' not in zones",
    "20 in readings",
    "mode in ['eco', 'boost']",
    "mode in ('eco', 'boost')",
    "readings == [10, 20, 30]",
    "readings == (10, 20, 30)",
    "vars.limits.high",
    "vars.limits.high < temperature",
    "vars['limits']['low'] == 10",
    "vars.tags[0] == 'hot'",
    "readings[2]",
    "event.data.temperature > vars.limits.high",
    "event['data']['ok']",
    "result.body['items'][1]",
    "device.type == 'freezer' and device.id == event.device_id",
    "instance.attempt == 0",
    "event.data.temperature is defined",
    "event.data.pressure is defined",
    "event.data.pressure is undefined",
    "nothing is defined",
    "vars.limits.high is defined and vars.limits.high > 50",
    "missing_value is none",
    "mode is none",
    "now() > 0",
    "now() - 60",
    "now() == 1700000000.0",
]


def jinja(source: str, scope: dict[str, Any]) -> Any:
    """The reference: Jinja2's own sandboxed expression evaluation."""
    return ENV.compile_expression(source, undefined_to_none=False)(**scope)


@pytest.mark.parametrize("source", FAST_TABLE)
def test_fast_path_agrees_with_jinja(source: str) -> None:
    condition = Condition(source)
    assert condition.fast, f"{source} should compile to closures"
    value = condition.value(SCOPE)
    expected = jinja(source, SCOPE)
    assert value == expected
    assert type(value) is type(expected)
    assert condition(SCOPE) is bool(expected)


SLOW_TABLE = [
    "mode | upper == 'ECO'",
    "zones | length == 3",
    "readings | sum > 50",
    "readings[1:]",
    "vars.tags | join(',')",
    "temperature is number",
    "mode ~ '-x'",
    "missing_value | default('fallback', true)",
    "nothing | default(3) + 1",
    "vars.name.upper()",
]


@pytest.mark.parametrize("source", SLOW_TABLE)
def test_jinja_fallback_for_what_the_fast_path_does_not_cover(source: str) -> None:
    condition = Condition(source)
    assert not condition.fast
    assert condition.value(SCOPE) == jinja(source, SCOPE)


@pytest.mark.parametrize(
    ("source", "fast"),
    [
        ("temperature > 80", True),
        ("a.b.c == 'x' and not d", True),
        ("x in [1, 2, 3]", True),
        ("x is defined", True),
        ("x | abs > 3", False),
        ("x is number", False),
        ("x[1:2]", False),
        ("x.items()", False),
        ("x.__class__", False),
        ("x ~ y", False),
        ("x if y else z", False),
    ],
)
def test_fast_flag(source: str, fast: bool) -> None:
    assert Condition(source).fast is fast


def test_names_are_the_root_names_read() -> None:
    condition = Condition("event.data.t > vars.high and not maintenance and now() > 0")
    assert condition.names == frozenset({"event", "vars", "maintenance", "now"})


# --- undefined values are errors, never silently false ---------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("pressure > 3", "pressure is undefined"),
        ("not pressure", "pressure is undefined"),
        ("temperature > 80 and pressure > 3", "pressure is undefined"),
        ("event.data.pressure > 3", "event.data.pressure is undefined"),
        ("vars['nope'] == 1", "vars['nope'] is undefined"),
        ("readings[7] == 1", "readings[7] is undefined"),
        ("pressure is none", "pressure is undefined"),
        ("pressure == none", "pressure is undefined"),
    ],
)
def test_undefined_on_the_fast_path_raises(source: str, message: str) -> None:
    condition = Condition(source)
    assert condition.fast
    with pytest.raises(EvaluationError) as caught:
        condition(SCOPE)
    assert message in str(caught.value)
    assert caught.value.source == source


@pytest.mark.parametrize(
    "source",
    [
        "pressure | abs > 3",
        "mode | upper == pressure",
        "readings[1:][9]",
        "pressure is none or mode | length > 1",
        "event.data.pressure | round > 1",
    ],
)
def test_undefined_on_the_jinja_path_raises(source: str) -> None:
    condition = Condition(source)
    assert not condition.fast
    with pytest.raises(EvaluationError, match=r"(?i)undefined|no element"):
        condition(SCOPE)


def test_a_short_circuit_does_not_touch_the_undefined_side() -> None:
    assert Condition("maintenance and pressure > 3")(SCOPE) is False
    assert Condition("temperature > 80 or pressure > 3")(SCOPE) is True
    assert Condition("pressure is defined and pressure > 3")(SCOPE) is False


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing_value > 80", "missing_value is None"),
        ("temperature > mode", "cannot compare: temperature = 85 > mode = 'eco'"),
        ("temperature + mode > 1", "unsupported operand"),
        ("temperature / 0 > 1", "division by zero"),
        ("mode in temperature", "cannot compare"),
        ("zones()", "is not a function this scope provides"),
    ],
)
def test_type_errors_become_evaluation_errors(source: str, message: str) -> None:
    with pytest.raises(EvaluationError) as caught:
        Condition(source)(SCOPE)
    assert message in str(caught.value)


# --- explanations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "scope", "explanation"),
    [
        (
            "temperature > 80 and humidity < 30 and not maintenance",
            {"temperature": 85, "humidity": 45, "maintenance": False},
            "in `and`, item 2 of 3 is false: false: humidity = 45 < 30",
        ),
        (
            "temperature > 80 and sensor.temperature > 3 and ok",
            {"temperature": 85, "sensor": {"temperature": None}, "ok": True},
            "in `and`, item 2 of 3: sensor.temperature is None",
        ),
        (
            "a > 1 and b > 1",
            {"a": 2},
            "in `and`, item 2 of 2: b is undefined",
        ),
        ("a > 1 or b > 1", {"a": 0, "b": 0}, "in `or`, no item is true"),
        ("1 < a < 3", {"a": 5}, "false: 1 < a = 5 < 3"),
        ("not a", {"a": True}, "not: a is true"),
        ("a.b == 'x'", {"a": {"b": "y"}}, "false: a.b = 'y' == 'x'"),
        ("a is defined", {}, "a is undefined"),
        ("a > 1 and b | length > 1", {"a": 2, "b": ""}, "in `and`, item 2 of 2 is false"),
    ],
)
def test_explain(source: str, scope: dict[str, Any], explanation: str) -> None:
    assert Condition(source).explain(scope) == explanation


def test_the_evaluation_error_carries_the_explanation() -> None:
    condition = Condition("t > 80 and sensor.t > 3 and ok")
    with pytest.raises(EvaluationError) as caught:
        condition({"t": 85, "sensor": {"t": None}, "ok": True})
    assert caught.value.message == "in `and`, item 2 of 3: sensor.t is None"


# --- compile-time errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("temperature >", "syntax error"),
        ("temperature > 80 )", "syntax error"),
        ("temperature > 80 80", "syntax error"),
        ("temperature ===  80", "syntax error"),
        ("a and", "syntax error"),
        ("{{ a }}", "syntax error"),
        ("", "syntax error"),
    ],
)
def test_syntax_errors_at_compile(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        Condition(source)
    assert message in caught.value.message
    assert caught.value.source == source


def test_unknown_names_at_compile() -> None:
    known = frozenset({"vars", "event", "now"})
    Condition("vars.a > 1 and event.type == 'x' and now() > 0", known=known)
    with pytest.raises(ExpressionError, match="unknown name temprature"):
        Condition("temprature > 80", known=known)
    with pytest.raises(ExpressionError, match="unknown names humidity, temprature"):
        Condition("temprature > 80 and humidity < 3 and vars.x", known=known)
    with pytest.raises(ExpressionError, match="unknown name mode"):
        Condition("mode | upper == 'X'", known=known)
    with pytest.raises(ExpressionError, match="unknown name enabled"):
        Condition("enabled", known=known)
    assert Condition("enabled").names == frozenset({"enabled"})


def test_template_unknown_names_and_syntax_at_compile() -> None:
    known = frozenset({"vars"})
    with pytest.raises(ExpressionError, match="unknown name device_id"):
        Template("{{ device_id }}", known=known)
    with pytest.raises(ExpressionError, match="unknown name device_id"):
        Template("device {{ device_id }} is {{ vars.state }}", known=known)
    with pytest.raises(ExpressionError, match="syntax error"):
        Template("device {{ vars.id ", known=known)
    with pytest.raises(ExpressionError, match="syntax error"):
        Template("{% if vars.x %}on", known=known)
    with pytest.raises(ExpressionError, match="unknown name other"):
        TemplateValue({"a": ["{{ vars.x }}", {"b": "{{ other }}"}]}, known=known)


# --- the sandbox ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "vars.__class__.__init__.__globals__",
        "mode.__class__.__mro__",
        "now.__globals__",
    ],
)
def test_the_sandbox_refuses_unsafe_access(source: str) -> None:
    condition = Condition(source)
    with pytest.raises(EvaluationError, match=r"unsafe|undefined|has no attribute"):
        condition.value(SCOPE)
    with pytest.raises(EvaluationError):
        Template("{{ " + source + " }}").render(SCOPE)
    with pytest.raises(EvaluationError):
        Template("x {{ " + source + " }}").render(SCOPE)


def test_only_functions_the_host_provides_are_callable_on_the_fast_path() -> None:
    scope = {"now": scope_function(lambda: NOW), "open": open}
    assert Condition("now()")(scope)
    with pytest.raises(EvaluationError, match="not a function"):
        Condition("open('/etc/passwd')").value(scope)


# --- templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ temperature }}", 85),
        ("{{ humidity }}", 40.5),
        ("  {{ temperature + 1 }}  ", 86),
        ("{{ maintenance }}", False),
        ("{{ missing_value }}", None),
        ("{{ zones }}", ["a", "b", "c"]),
        ("{{ vars.limits }}", {"high": 80, "low": 10}),
        ("{{ readings | sum }}", 60),
        ("{{ now() }}", NOW),
        ("T={{ temperature }}", "T=85"),
        ("{{ temperature }}/{{ humidity }}", "85/40.5"),
        ("{{ mode | upper }}!", "ECO!"),
        ("{% if temperature > 80 %}hot{% else %}ok{% endif %}", "hot"),
        ("plain text", "plain text"),
    ],
)
def test_template_rendering(source: str, expected: Any) -> None:
    template = Template(source)
    rendered = template.render(SCOPE)
    assert rendered == expected
    assert type(rendered) is type(expected)


def test_template_constant_and_names() -> None:
    assert Template("no templating here").constant
    assert Template("no templating here").names == frozenset()
    assert Template("{{ vars.a }}-{{ event.b }}").names == frozenset({"vars", "event"})


def test_template_value_renders_nested_native_values() -> None:
    value = TemplateValue(
        {
            "setpoint": "{{ vars.limits.high - 5 }}",
            "label": "zone {{ zones[0] }}",
            "raw": 3,
            "list": ["{{ mode }}"],
        }
    )
    assert value.render(SCOPE) == {"setpoint": 75, "label": "zone a", "raw": 3, "list": ["eco"]}
    assert value.names == frozenset({"vars", "zones", "mode"})


def test_template_undefined_raises() -> None:
    with pytest.raises(EvaluationError, match="pressure is undefined"):
        Template("{{ pressure }}").render(SCOPE)
    with pytest.raises(EvaluationError, match="'pressure' is undefined"):
        Template("p={{ pressure }}").render(SCOPE)
