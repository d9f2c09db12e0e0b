"""Conditional requests on registry resources: ``If-Match`` for writes, ``If-None-Match`` for reads, and the
merge-patch media types a PATCH accepts.

Entity tags are weak (``W/"<version>"``) and compared weakly, as RFC 9110 allows for a tag that stands for a
version rather than for the exact bytes of one representation.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Request

from cloud_core.problems import Problem
from cloud_core.registry import Precondition

PATCH_MEDIA_TYPES = ("application/merge-patch+json", "application/json")

IfMatch = Annotated[
    str | None,
    Header(
        description='the ETag from the last GET (W/"<version>"), or * for any version; '
        "required for PATCH (428 without it), optional for DELETE"
    ),
]
IfNoneMatch = Annotated[
    str | None, Header(description="answer 304 Not Modified while the resource still has this ETag")
]


def _versions(header: str) -> set[int] | None:
    """Versions named by an If-Match/If-None-Match value; None for ``*``. Tags that are not ours are ignored
    (they cannot match)."""
    versions: set[int] = set()
    for raw in header.split(","):
        tag = raw.strip()
        if tag == "*":
            return None
        tag = tag.removeprefix("W/")
        if len(tag) > 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
            versions.add(int(tag[1:-1]))
    return versions


def required_if_match(header: str | None, kind: str) -> Precondition:
    """The versions a PATCH may apply to; 428 when the request carries no If-Match."""
    if header is None:
        raise Problem(
            428,
            "Precondition required",
            f"send If-Match with the {kind}'s ETag from a GET, so that a concurrent change is not overwritten",
            type="if-match-required",
        )
    return _versions(header)


def optional_if_match(header: str | None) -> Precondition:
    return None if header is None else _versions(header)


def not_modified(header: str | None, version: int) -> bool:
    """True when If-None-Match names ``version`` (or is ``*``)."""
    if header is None:
        return False
    versions = _versions(header)
    return versions is None or version in versions


def merge_patch_body(schema: str) -> dict[str, Any]:
    """``openapi_extra`` documenting that a PATCH body may also be sent as ``application/json``."""
    ref = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    return {"requestBody": {"content": {"application/json": ref}}}


def require_merge_patch(request: Request) -> None:
    """415 unless the body is JSON (``application/merge-patch+json`` or ``application/json``)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in PATCH_MEDIA_TYPES:
        raise Problem(
            415,
            "Unsupported media type",
            f"send the patch as {' or '.join(PATCH_MEDIA_TYPES)}, not {media_type or 'no Content-Type'}",
            type="unsupported-media-type",
        )
