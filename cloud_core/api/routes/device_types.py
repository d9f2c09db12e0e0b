"""``/api/v1/device-types``: device profiles (expected metrics and units): create, read, change (merge patch
with If-Match), delete (409 while devices use the type, unless ``force``) and list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response

from cloud_core import registry
from cloud_core.api import resource
from cloud_core.api.deps import OperatorDep, ServicesDep, ViewerDep
from cloud_core.api.preconditions import IfMatch, IfNoneMatch, merge_patch_body, require_merge_patch
from cloud_core.schemas.common import (
    Cursor,
    Limit,
    Page,
    TextQuery,
    problem_responses,
)
from cloud_core.schemas.device_types import DeviceTypeCreate, DeviceTypePublic, DeviceTypeUpdate

router = APIRouter(prefix="/api/v1/device-types", tags=["device types"])

DEVICE_TYPE = resource.Resource("device type", router.prefix, DeviceTypePublic.of)
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
    responses=resource.etag_responses(201, 401, 403, 409, 422),
)
async def create_device_type(
    data: DeviceTypeCreate, services: ServicesDep, _: OperatorDep, response: Response
) -> DeviceTypePublic:
    return await DEVICE_TYPE.create(
        services, response, lambda session: registry.create_device_type(session, data)
    )


@router.get(
    "/{type_id}",
    response_model=DeviceTypePublic,
    responses=resource.read_responses(401, 403, 404),
)
async def read_device_type(
    type_id: str,
    services: ServicesDep,
    _: ViewerDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> DeviceTypePublic | Response:
    return await DEVICE_TYPE.read(
        services, response, if_none_match, lambda session: registry.get_device_type(session, type_id)
    )


@router.patch(
    "/{type_id}",
    response_model=DeviceTypePublic,
    responses=resource.etag_responses(200, 401, 403, 404, 412, 415, 422, 428),
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
    return await DEVICE_TYPE.merge_patch(
        services,
        response,
        if_match,
        lambda session, expected: registry.update_device_type(session, type_id, patch, if_match=expected),
    )


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
    return await resource.delete(
        services,
        if_match,
        lambda session, expected: registry.delete_device_type(
            session, services.bus, type_id, force=force, if_match=expected
        ),
    )
