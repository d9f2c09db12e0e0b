"""``/api/v1/gateways``: register, read, rename or relabel (merge patch with If-Match), delete and list gateways.
Status, versions and last-seen come from the gateways' MQTT status topic, never from this API."""

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
    SelectorQuery,
    TextQuery,
    problem_responses,
)
from cloud_core.schemas.gateways import GatewayCreate, GatewayPublic, GatewayStatus, GatewayUpdate

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"])

GATEWAY = resource.Resource("gateway", router.prefix, GatewayPublic.of)
SORT_HELP = "id, name, created_at, updated_at or last_seen; a '-' prefix sorts descending; ties by id"


@router.get("", response_model=Page[GatewayPublic], responses=problem_responses(400, 401, 403, 422))
async def list_gateways(
    services: ServicesDep,
    _: ViewerDep,
    selector: SelectorQuery = None,
    status: GatewayStatus | None = None,
    q: TextQuery = None,
    sort: Annotated[str, Query(description=SORT_HELP)] = "id",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[GatewayPublic]:
    async with services.database.session() as session:
        rows, next_cursor = await registry.list_gateways(
            session, selector=selector, status=status, q=q, sort=sort, limit=limit, cursor=cursor
        )
    return Page(items=[GatewayPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=GatewayPublic,
    responses=resource.etag_responses(201, 401, 403, 409, 422),
)
async def create_gateway(
    data: GatewayCreate, services: ServicesDep, _: OperatorDep, response: Response
) -> GatewayPublic:
    return await GATEWAY.create(services, response, lambda session: registry.create_gateway(session, data))


@router.get(
    "/{gateway_id}",
    response_model=GatewayPublic,
    responses=resource.read_responses(401, 403, 404),
)
async def read_gateway(
    gateway_id: str,
    services: ServicesDep,
    _: ViewerDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> GatewayPublic | Response:
    return await GATEWAY.read(
        services, response, if_none_match, lambda session: registry.get_gateway(session, gateway_id)
    )


@router.patch(
    "/{gateway_id}",
    response_model=GatewayPublic,
    responses=resource.etag_responses(200, 401, 403, 404, 412, 415, 422, 428),
    dependencies=[Depends(require_merge_patch)],
    openapi_extra=merge_patch_body("GatewayUpdate"),
)
async def update_gateway(
    gateway_id: str,
    patch: Annotated[GatewayUpdate, Body(media_type="application/merge-patch+json")],
    services: ServicesDep,
    _: OperatorDep,
    response: Response,
    if_match: IfMatch = None,
) -> GatewayPublic:
    """Rename or relabel a gateway with a JSON merge patch; If-Match must carry the ETag of the last GET."""
    return await GATEWAY.merge_patch(
        services,
        response,
        if_match,
        lambda session, expected: registry.update_gateway(session, gateway_id, patch, if_match=expected),
    )


@router.delete("/{gateway_id}", status_code=204, responses=problem_responses(401, 403, 404, 409, 412))
async def delete_gateway(
    gateway_id: str,
    services: ServicesDep,
    _: OperatorDep,
    force: Annotated[
        bool, Query(description="detach the devices behind the gateway instead of refusing (409)")
    ] = False,
    if_match: IfMatch = None,
) -> Response:
    return await resource.delete(
        services,
        if_match,
        lambda session, expected: registry.delete_gateway(
            session, services.bus, gateway_id, force=force, if_match=expected
        ),
    )
