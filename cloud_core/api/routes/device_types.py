"""``/api/v1/device-types``: device profiles (expected metrics and units): create, read, change (merge patch
with If-Match), delete (409 while devices use the type, unless ``force``) and list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response

from cloud_core import registry
from cloud_core.api.deps import OperatorDep, ServicesDep, ViewerDep
from cloud_core.api.preconditions import (
    IfMatch,
    IfNoneMatch,
    merge_patch_body,
    not_modified,
    optional_if_match,
    require_merge_patch,
    required_if_match,
)
from cloud_core.schemas.common import (
    ETAG_HEADER,
    Cursor,
    Limit,
    Page,
    TextQuery,
    problem_responses,
)
from cloud_core.schemas.device_types import DeviceTypeCreate, DeviceTypePublic, DeviceTypeUpdate

router = APIRouter(prefix="/api/v1/device-types", tags=["device types"])

SORT_HELP = "id, name, created_at or updated_at; a '-' prefix sorts descending; ties by id"


@router.get("", response_model=Page[DeviceTypePublic], responses=problem_responses(400, 401, 403, 422))
async def list_device_types(
    services: ServicesDep,
    _: ViewerDep,
    q: TextQuery = None,
    sort: Annotated[str, Query(description=SORT_HELP)] = "id",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[DeviceTypePublic]:
    async with services.database.session() as session:
        rows, next_cursor = await registry.list_device_types(
            session, q=q, sort=sort, limit=limit, cursor=cursor
        )
    return Page(items=[DeviceTypePublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=DeviceTypePublic,
    responses={201: {"headers": ETAG_HEADER}} | problem_responses(401, 403, 409, 422),
)
async def create_device_type(
    data: DeviceTypeCreate, services: ServicesDep, _: OperatorDep, response: Response
) -> DeviceTypePublic:
    async with services.database.session() as session:
        row = await registry.create_device_type(session, data)
    response.headers["ETag"] = registry.etag(row.version)
    response.headers["Location"] = f"{router.prefix}/{row.id}"
    return DeviceTypePublic.of(row)


@router.get(
    "/{type_id}",
    response_model=DeviceTypePublic,
    responses={200: {"headers": ETAG_HEADER}, 304: {"description": "If-None-Match names the current ETag"}}
    | problem_responses(401, 403, 404),
)
async def read_device_type(
    type_id: str,
    services: ServicesDep,
    _: ViewerDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> DeviceTypePublic | Response:
    async with services.database.session() as session:
        row = await registry.get_device_type(session, type_id)
    tag = registry.etag(row.version)
    if not_modified(if_none_match, row.version):
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return DeviceTypePublic.of(row)


@router.patch(
    "/{type_id}",
    response_model=DeviceTypePublic,
    responses={200: {"headers": ETAG_HEADER}} | problem_responses(401, 403, 404, 412, 415, 422, 428),
    dependencies=[Depends(require_merge_patch)],
    openapi_extra=merge_patch_body("DeviceTypeUpdate"),
)
async def update_device_type(
    type_id: str,
    patch: Annotated[DeviceTypeUpdate, Body(media_type="application/merge-patch+json")],
    services: ServicesDep,
    _: OperatorDep,
    response: Response,
    if_match: IfMatch = None,
) -> DeviceTypePublic:
    """Change a device type with a JSON merge patch (metrics merge by name; null removes one)."""
    expected = required_if_match(if_match, "device type")
    async with services.database.session() as session:
        row = await registry.update_device_type(session, type_id, patch, if_match=expected)
    response.headers["ETag"] = registry.etag(row.version)
    return DeviceTypePublic.of(row)


@router.delete("/{type_id}", status_code=204, responses=problem_responses(401, 403, 404, 409, 412))
async def delete_device_type(
    type_id: str,
    services: ServicesDep,
    _: OperatorDep,
    force: Annotated[
        bool, Query(description="clear the type of the devices that use it instead of refusing (409)")
    ] = False,
    if_match: IfMatch = None,
) -> Response:
    async with services.database.session() as session:
        await registry.delete_device_type(
            session, services.bus, type_id, force=force, if_match=optional_if_match(if_match)
        )
    return Response(status_code=204)
