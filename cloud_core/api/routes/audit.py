"""``/api/v1/audit``: the audit log of every write request (admins only), newest first, with cursor
pagination."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud_core.api.deps import AdminDep, SessionDep
from cloud_core.audit import list_entries
from cloud_core.schemas.audit import AuditEntryPublic
from cloud_core.schemas.common import Page

router = APIRouter(prefix="/api/v1/audit", tags=["access"])


@router.get("", response_model=Page[AuditEntryPublic])
async def read(
    _: AdminDep,
    session: SessionDep,
    principal: Annotated[str | None, Query(max_length=200, description="key:<id>, jwt:<subject>")] = None,
    resource: Annotated[
        str | None, Query(max_length=64, description="a collection, e.g. devices (includes sub-resources)")
    ] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="entries at or after this time")] = None,
    until: Annotated[datetime | None, Query(description="entries before this time")] = None,
    cursor: Annotated[
        str | None, Query(pattern=r"^[1-9][0-9]{0,17}$", description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[AuditEntryPublic]:
    """Entries matching every given filter, newest first."""
    entries = await list_entries(
        session,
        principal=principal,
        resource=resource,
        resource_id=resource_id,
        since=since,
        until=until,
        before_id=int(cursor) if cursor is not None else None,
        limit=limit + 1,
    )
    page = entries[:limit]
    return Page[AuditEntryPublic](
        items=[AuditEntryPublic.model_validate(e) for e in page],
        next_cursor=str(page[-1].id) if len(entries) > limit else None,
    )
