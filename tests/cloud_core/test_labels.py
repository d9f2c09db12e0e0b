"""Label selectors: the grammar, error positions, the Python matcher, and the SQL translation (which must agree
with the matcher on a real SQLite database; ``test_registry_postgres`` checks PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloud_core.db import Database
from cloud_core.labels import Requirement, Selector, SelectorError, parse_selector
from cloud_core.models import Device


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("  ", ()),
        ("env=prod", (Requirement("env", "=", ("prod",)),)),
        ("env==prod", (Requirement("env", "=", ("prod",)),)),
        ("env = prod", (Requirement("env", "=", ("prod",)),)),
        ("env!=dev", (Requirement("env", "!=", ("dev",)),)),
        ("env=", (Requirement("env", "=", ("",)),)),
        ("site in (a,b)", (Requirement("site", "in", ("a", "b")),)),
        ("site in(a, b ,c)", (Requirement("site", "in", ("a", "b", "c")),)),
        ("site notin (a)", (Requirement("site", "notin", ("a",)),)),
        ("tier", (Requirement("tier", "exists"),)),
        ("!tier", (Requirement("tier", "absent"),)),
        ("! tier", (Requirement("tier", "absent"),)),
        ("in", (Requirement("in", "exists"),)),
        ("in in (in)", (Requirement("in", "in", ("in",)),)),
        ("app.kubernetes.io/name=web-1", (Requirement("app.kubernetes.io/name", "=", ("web-1",)),)),
        ("fw=1.4.2:rc1", (Requirement("fw", "=", ("1.4.2:rc1",)),)),
        (
            "env=prod,site in (a,b),!retired,tier",
            (
                Requirement("env", "=", ("prod",)),
                Requirement("site", "in", ("a", "b")),
                Requirement("retired", "absent"),
                Requirement("tier", "exists"),
            ),
        ),
    ],
)
def test_parses(text: str, expected: tuple[Requirement, ...]) -> None:
    assert parse_selector(text).requirements == expected


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("env=prod,", 9, "expected a label key, found the end"),
        (",env", 0, "expected a label key, found ','"),
        ("site in (a,b", 12, "expected ',' or ')' in the value list, found the end"),
        ("site in a,b", 8, "expected '(' after 'in', found 'a'"),
        ("site in ()", 9, "expected a value, found ')'"),
        ("site in (a,,b)", 11, "expected a value, found ','"),
        ("env=prod env=dev", 9, "expected ',' or the end, found 'e'"),
        ("env=pr od", 7, "expected ',' or the end, found 'o'"),
        ("env=pröd", 6, "expected ',' or the end, found 'ö'"),
        ("-env=prod", 0, "invalid label key '-env'"),
        ("env.=prod", 0, "invalid label key 'env.'"),
        ("env<3", 3, "expected ',' or the end, found '<'"),
        ("!", 1, "expected a label key, found the end"),
        ("!env=prod", 4, "expected ',' or the end, found '='"),
        (f"k={'v' * 257}", 2, "a label value has at most 256 characters"),
    ],
)
def test_errors_name_the_position(text: str, position: int, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert caught.value.position == position
    assert caught.value.message.startswith(message)
    assert str(caught.value) == f"{caught.value.message} at position {position} of {text!r}"


def test_matching_follows_kubernetes_semantics() -> None:
    labels = {"env": "prod", "site": "a"}
    assert parse_selector("").matches({})
    assert parse_selector("env=prod").matches(labels)
    assert not parse_selector("env=prod").matches({})
    assert parse_selector("env!=dev").matches(labels)
    assert parse_selector("env!=dev").matches({}), "!= also selects objects without the label"
    assert not parse_selector("env!=prod").matches(labels)
    assert parse_selector("site in (a,b)").matches(labels)
    assert not parse_selector("site in (b,c)").matches(labels)
    assert parse_selector("site notin (b,c)").matches(labels)
    assert parse_selector("site notin (b,c)").matches({}), "notin also selects objects without the label"
    assert parse_selector("env").matches(labels)
    assert not parse_selector("tier").matches(labels)
    assert parse_selector("!tier").matches(labels)
    assert not parse_selector("!env").matches(labels)
    assert parse_selector("env=prod,site in (a),!tier").matches(labels)
    assert not parse_selector("env=prod,site in (b)").matches(labels)


def test_str_round_trips() -> None:
    text = "env=prod,env!=dev,site in (a,b),site notin (c),tier,!retired"
    selector = parse_selector(text)
    assert str(selector) == text
    assert parse_selector(str(selector)) == selector


KEYS = ["env", "site", "tier", "app.io/name"]
VALUES = ["prod", "dev", "a", "b", "", "1.2"]
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
requirements = st.one_of(
    st.builds(
        Requirement,
        st.sampled_from(KEYS),
        st.sampled_from(["=", "!="]),
        st.tuples(st.sampled_from(VALUES)),
    ),
    st.builds(
        Requirement,
        st.sampled_from(KEYS),
        st.sampled_from(["in", "notin"]),
        st.lists(st.sampled_from([v for v in VALUES if v]), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Requirement, st.sampled_from(KEYS), st.sampled_from(["exists", "absent"])),
)
selectors = st.lists(requirements, max_size=3).map(lambda r: Selector(tuple(r)))


@given(st.lists(label_sets, min_size=1, max_size=12), st.lists(selectors, min_size=1, max_size=8))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_sql_agrees_with_the_matcher_on_sqlite(
    tmp_path: Path, fleet: list[dict[str, str]], queries: list[Selector]
) -> None:
    db_path = tmp_path / f"labels-{id(fleet)}.db"
    async with Database(f"sqlite+aiosqlite:///{db_path}") as database:
        async with database.session() as session:
            session.add_all(Device(id=f"d{n}", labels=labels) for n, labels in enumerate(fleet))
        async with database.session() as session:
            for selector in queries:
                assert parse_selector(str(selector)) == selector
                query = select(Device.id).where(selector.condition(Device.labels))
                found = set((await session.execute(query)).scalars())
                expected = {f"d{n}" for n, labels in enumerate(fleet) if selector.matches(labels)}
                assert found == expected, str(selector)
    db_path.unlink()
