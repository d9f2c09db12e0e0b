"""Dependencies shared by the routes, as ``Annotated`` aliases: ``ServicesDep``, ``SessionDep`` and the role
guards ``ViewerDep``, ``OperatorDep``, ``AdminDep`` (each yields the authenticated ``Principal``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.auth import Principal, Role, credential
from cloud_core.problems import Problem
from cloud_core.services import Services


async def get_services(request: Request) -> Services:
    """Async so FastAPI does not hand it to its thread pool on every request."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.database.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def require(role: Role) -> Callable[[Request, Services, str | None], Awaitable[Principal]]:
    async def guard(
        request: Request, services: ServicesDep, token: Annotated[str | None, Depends(credential)]
    ) -> Principal:
        principal = await services.auth.verify(token)
        request.state.principal = principal  # the audit log names who was refused, too
        if principal.role < role:
            raise Problem(
                403,
                "Forbidden",
                f"this needs the {role.label} role; {principal.id} is {principal.role.label}",
                type="forbidden",
            )
        return principal

    return guard


ViewerDep = Annotated[Principal, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
