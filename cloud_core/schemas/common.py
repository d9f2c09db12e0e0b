"""Shapes every resource shares: ids, labels, list query parameters, a page of results, and the documented
error statuses of a route."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field, StringConstraints

from cloud_core.labels import KEY_PATTERN, VALUE_PATTERN

EntityId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
    Field(
        description="1-128 letters, digits and '._:-', starting with a letter or digit (used in MQTT topics)"
    ),
]
LabelKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=VALUE_PATTERN)]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        max_length=64,
        description="key/value pairs for selectors; keys: letters, digits, '._/-' (128 at most); "
        "values: letters, digits, '._:/-' (256 at most)",
    ),
]
LabelsPatch = Annotated[
    dict[LabelKey, LabelValue | None],
    Field(max_length=64, description="merged into the labels; a null value removes that label"),
]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters and sort) for the next page; null on the last page"
    )


# query parameters of the list routes
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
TextQuery = Annotated[
    str | None, Query(max_length=200, description="case-insensitive substring of the id or name")
]
SelectorQuery = Annotated[
    str | None,
    Query(max_length=2000, description="label selector, e.g. env=prod,site in (a,b),!decommissioned"),
]


_DESCRIPTIONS = {
    400: "malformed query (selector, sort or cursor)",
    401: "no valid credentials",
    403: "the role does not allow this",
    404: "no such resource",
    409: "conflict with the current state",
    412: "If-Match does not match the current ETag",
    413: "the request body is too large",
    415: "unsupported Content-Type",
    422: "invalid request",
    428: "If-Match is required",
    429: "too many requests from this client address (see Retry-After)",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (``problems.document`` gives them the problem schema)."""
    return {code: {"description": _DESCRIPTIONS[code]} for code in codes}


ETAG_HEADER = {
    "ETag": {
        "description": 'weak entity tag of the resource\'s version, W/"<version>"; send it back as If-Match',
        "schema": {"type": "string"},
    }
}
