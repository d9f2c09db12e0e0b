"""``/api/v1/devices/{id}/commands`` and ``/api/v1/commands/{id}``: send a command to a device through its
gateway (202: it is on its way) and follow it to its outcome (pending → delivered → acknowledged | failed, or
expired)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from cloud_core import commands, registry
from cloud_core.api.deps import OperatorDep, ServicesDep, ViewerDep
from cloud_core.broker import BrokerUnavailable
from cloud_core.pagination import PaginationError, Sort, decode_cursor, encode_cursor
from cloud_core.problems import Problem
from cloud_core.schemas.commands import CommandCreate, CommandPublic
from cloud_core.schemas.common import Cursor, Limit, Page, problem_responses
from cloud_core.schemas.timestamps import as_utc

router = APIRouter(prefix="/api/v1", tags=["commands"])

ORDER = Sort("created_at", descending=True)


@router.post(
    "/devices/{device_id}/commands",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPublic,
    responses={
        202: {"headers": {"Location": {"description": "the command's URL", "schema": {"type": "string"}}}},
        503: {"description": "the broker is unreachable: the command was not sent (it is stored as failed)"},
    }
    | problem_responses(401, 403, 404, 409, 422),
)
async def send_command(
    device_id: str, body: CommandCreate, services: ServicesDep, principal: OperatorDep, response: Response
) -> CommandPublic:
    """Route a command to the device's gateway; poll the command (or watch the events) for its outcome."""
    router_: commands.CommandRouter = services.parts["commands"]
    try:
        command = await router_.send(
            device_id, body.name, body.params, expires_in=body.expires_in, created_by=principal.id
        )
    except BrokerUnavailable as exc:
        raise Problem(503, "Service unavailable", str(exc), type="broker-unavailable") from None
    response.headers["Location"] = f"{router.prefix}/commands/{command.id}"
    return CommandPublic.of(command)


@router.get(
    "/devices/{device_id}/commands",
    response_model=Page[CommandPublic],
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_device_commands(
    device_id: str, services: ServicesDep, _: ViewerDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[CommandPublic]:
    """The device's commands, newest first."""
    after = None
    if cursor is not None:
        try:
            created, command_id = decode_cursor(cursor, ORDER)
            after = (as_utc(created), command_id)
        except (PaginationError, AttributeError, TypeError, OverflowError):
            raise registry.InvalidQuery("the cursor is not one this API issued") from None
    async with services.database.session() as session:
        await registry.get_device(session, device_id)
        rows = await commands.list_device_commands(session, device_id, after=after, limit=limit)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(ORDER, rows[-1].created_at, rows[-1].id)
    return Page(items=[CommandPublic.of(c) for c in rows], next_cursor=next_cursor)


@router.get(
    "/commands/{command_id}", response_model=CommandPublic, responses=problem_responses(401, 403, 404)
)
async def read_command(command_id: str, services: ServicesDep, _: ViewerDep) -> CommandPublic:
    async with services.database.session() as session:
        return CommandPublic.of(await commands.get_command(session, command_id))
