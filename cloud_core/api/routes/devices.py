"""``/api/v1/devices``: register, read, change (merge patch with If-Match), delete, list and bulk-import devices.

Writes run in their own transaction; the registry's events go out once it has committed."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from cloud_core import bulk_import, registry
from cloud_core.api import resource
from cloud_core.api.deps import OperatorDep, ServicesDep, ViewerDep
from cloud_core.api.preconditions import (
    IfMatch,
    IfNoneMatch,
    merge_patch_body,
    not_modified,
    require_merge_patch,
)
from cloud_core.point_reads import PointReader
from cloud_core.schemas.common import (
    Cursor,
    Limit,
    Page,
    SelectorQuery,
    TextQuery,
    problem_responses,
)
from cloud_core.schemas.devices import (
    DeviceCreate,
    DevicePublic,
    DeviceStatus,
    DeviceUpdate,
    ImportReport,
)

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DEVICE = resource.Resource("device", router.prefix, DevicePublic.of)
SORT_HELP = "id, name, created_at, updated_at or last_seen; a '-' prefix sorts descending; ties by id"


@router.get("", response_model=Page[DevicePublic], responses=problem_responses(400, 401, 403, 422))
async def list_devices(
    services: ServicesDep,
    _: ViewerDep,
    selector: SelectorQuery = None,
    status: DeviceStatus | None = None,
    gateway: Annotated[str | None, Query(description="devices behind this gateway")] = None,
    type: Annotated[str | None, Query(description="devices of this device type")] = None,
    q: TextQuery = None,
    sort: Annotated[str, Query(description=SORT_HELP)] = "id",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[DevicePublic]:
    async with services.database.session() as session:
        rows, next_cursor = await registry.list_devices(
            session,
            selector=selector,
            status=status,
            gateway=gateway,
            type=type,
            q=q,
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
    return Page(items=[DevicePublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=DevicePublic,
    responses=resource.etag_responses(201, 401, 403, 409, 422),
)
async def create_device(
    data: DeviceCreate, services: ServicesDep, _: OperatorDep, response: Response
) -> DevicePublic:
    return await DEVICE.create(
        services, response, lambda session: registry.create_device(session, services.bus, data)
    )


@router.post(
    "/import",
    response_model=ImportReport,
    responses=problem_responses(400, 401, 403, 413, 415, 422),
    openapi_extra={"requestBody": bulk_import.REQUEST_BODY},
)
async def import_devices(
    request: Request,
    services: ServicesDep,
    _: OperatorDep,
    mode: Annotated[
        Literal["create", "upsert"],
        Query(description="create: existing ids are errors; upsert: existing devices are merge-patched"),
    ] = "create",
) -> ImportReport:
    """Register many devices from CSV (``text/csv``) or a JSON array; every row is reported, and a bad row
    never blocks the others."""
    rows = bulk_import.parse(request.headers.get("content-type", ""), await bulk_import.read_body(request))
    return await bulk_import.import_devices(services.database, services.bus, rows, mode=mode)


@router.get(
    "/{device_id}",
    response_model=DevicePublic,
    responses=resource.read_responses(401, 403, 404),
)
async def read_device(
    device_id: str, services: ServicesDep, _: ViewerDep, if_none_match: IfNoneMatch = None
) -> Response:
    """Read one device (the hot path: no ORM session, see ``point_reads``)."""
    reader: PointReader = services.parts["point_reads"]
    row = await reader.device(device_id)
    if row is None:
        raise registry.NotFound("device", device_id)
    headers = {"ETag": registry.etag(row.version)}
    if not_modified(if_none_match, row.version):
        return Response(status_code=304, headers=headers)
    body = DevicePublic.of(row).model_dump_json()
    return Response(body, media_type="application/json", headers=headers)


@router.patch(
    "/{device_id}",
    response_model=DevicePublic,
    responses=resource.etag_responses(200, 401, 403, 404, 412, 415, 422, 428),
    dependencies=[Depends(require_merge_patch)],
    openapi_extra=merge_patch_body("DeviceUpdate"),
)
async def update_device(
    device_id: str,
    patch: Annotated[DeviceUpdate, Body(media_type="application/merge-patch+json")],
    services: ServicesDep,
    _: OperatorDep,
    response: Response,
    if_match: IfMatch = None,
) -> DevicePublic:
    """Change a device with a JSON merge patch (RFC 7396); If-Match must carry the ETag of the last GET."""
    return await DEVICE.merge_patch(
        services,
        response,
        if_match,
        lambda session, expected: registry.update_device(
            session, services.bus, device_id, patch, if_match=expected
        ),
    )


@router.delete("/{device_id}", status_code=204, responses=problem_responses(401, 403, 404, 412))
async def delete_device(
    device_id: str, services: ServicesDep, _: OperatorDep, if_match: IfMatch = None
) -> Response:
    return await resource.delete(
        services,
        if_match,
        lambda session, expected: registry.delete_device(session, services.bus, device_id, if_match=expected),
    )
