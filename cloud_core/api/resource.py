"""The shape every versioned registry resource (devices, device types, gateways) shares in its routes: a read
that answers with the ETag (or 304 for a matching If-None-Match), a create that adds ETag and Location, a merge
patch that needs If-Match, a delete that honours it, and the OpenAPI ``responses`` that document them.

A router describes its resource once (``Resource``) and each route, declared as usual, hands the helper its one
registry call as a function of the session (and, for writes, of the If-Match precondition). The call runs in
its own session, so its events go out once it has committed; the route keeps its own signature and decorator,
so the OpenAPI stays its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Response
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core import registry
from cloud_core.api.preconditions import not_modified, optional_if_match, required_if_match
from cloud_core.registry import Precondition
from cloud_core.schemas.common import ETAG_HEADER, problem_responses
from cloud_core.services import Services


class Versioned(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def version(self) -> int: ...


Row = TypeVar("Row", bound=Versioned)
Public = TypeVar("Public")
Responses = dict[int | str, dict[str, Any]]


def etag_responses(status: int, *problems: int) -> Responses:
    """``responses`` of a route answering ``status`` with the resource's ETag, or one of ``problems``."""
    return {status: {"headers": ETAG_HEADER}} | problem_responses(*problems)


def read_responses(*problems: int) -> Responses:
    """``responses`` of a conditional read: 200 with the ETag, 304, or one of ``problems``."""
    unchanged = {304: {"description": "If-None-Match names the current ETag"}}
    return {200: {"headers": ETAG_HEADER}} | unchanged | problem_responses(*problems)


async def delete(
    services: Services, if_match: str | None, remove: Callable[[AsyncSession, Precondition], Awaitable[None]]
) -> Response:
    """204 once ``remove`` has deleted the resource; If-Match is optional here."""
    async with services.database.session() as session:
        await remove(session, optional_if_match(if_match))
    return Response(status_code=204)


@dataclass(frozen=True)
class Resource(Generic[Row, Public]):
    """One kind of registry resource as its routes answer it."""

    kind: registry.Kind
    """Named in the 428 for a PATCH without If-Match."""
    collection: str
    """The router's prefix; a created resource's Location is ``{collection}/{id}``."""
    public: Callable[[Row], Public]
    """The public model of a stored row."""

    async def read(
        self,
        services: Services,
        response: Response,
        if_none_match: str | None,
        fetch: Callable[[AsyncSession], Awaitable[Row]],
    ) -> Public | Response:
        """The fetched resource with its ETag; 304 (and the ETag) when If-None-Match names its version."""
        async with services.database.session() as session:
            row = await fetch(session)
        tag = registry.etag(row.version)
        if not_modified(if_none_match, row.version):
            return Response(status_code=304, headers={"ETag": tag})
        response.headers["ETag"] = tag
        return self.public(row)

    async def create(
        self, services: Services, response: Response, insert: Callable[[AsyncSession], Awaitable[Row]]
    ) -> Public:
        """The inserted resource, with its ETag and Location."""
        async with services.database.session() as session:
            row = await insert(session)
        response.headers["ETag"] = registry.etag(row.version)
        response.headers["Location"] = f"{self.collection}/{row.id}"
        return self.public(row)

    async def merge_patch(
        self,
        services: Services,
        response: Response,
        if_match: str | None,
        update: Callable[[AsyncSession, Precondition], Awaitable[Row]],
    ) -> Public:
        """The patched resource with its new ETag; 428 without If-Match."""
        expected = required_if_match(if_match, self.kind)
        async with services.database.session() as session:
            row = await update(session, expected)
        response.headers["ETag"] = registry.etag(row.version)
        return self.public(row)
