"""Dependencies shared by the routes, as ``Annotated`` aliases: ``ServicesDep``, ``SessionDep`` and the role
guards ``ViewerDep``, ``OperatorDep``, ``AdminDep`` (each yields the authenticated ``Principal``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.auth import Principal, Role
from cloud_core.problems import Problem
from cloud_core.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.database.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def require(role: Role) -> Callable[[Request, Services], Awaitable[Principal]]:
    async def guard(request: Request, services: ServicesDep) -> Principal:
        principal = await services.auth.authenticate(request)
        if principal.role < role:
            raise Problem(
                403,
                "Forbidden",
                f"this needs the {role.label} role; {principal.id} is {principal.role.label}",
                type="forbidden",
            )
        request.state.principal = principal
        return principal

    return guard


ViewerDep = Annotated[Principal, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
