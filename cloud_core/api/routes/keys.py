"""``/api/v1/keys``: API keys, managed by admins. The whole key is returned once, by the create; listings show
everything else about a key but never its secret or hash. Revoking is immediate in the replica that serves the
request and takes at most ``auth.CACHE_SECONDS`` in the others (their credential caches expire)."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud_core.api.deps import AdminDep, ServicesDep, SessionDep
from cloud_core.auth import Role, create_key, list_keys, revoke_key
from cloud_core.models import ApiKey
from cloud_core.problems import not_found
from cloud_core.schemas.keys import KeyCreate, KeyCreated, KeyPublic

router = APIRouter(prefix="/api/v1/keys", tags=["access"])


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create(body: KeyCreate, principal: AdminDep, services: ServicesDep) -> KeyCreated:
    """Create a key; the response is the only place its secret ever appears."""
    new = await create_key(services.database, Role.parse(body.role), name=body.name, created_by=principal.id)
    return KeyCreated.model_validate({**KeyPublic.model_validate(new.key).model_dump(), "token": new.token})


@router.get("", response_model=list[KeyPublic])
async def list_(_: AdminDep, session: SessionDep, include_revoked: bool = True) -> list[KeyPublic]:
    """Every key, newest first."""
    return [KeyPublic.model_validate(k) for k in await list_keys(session, include_revoked=include_revoked)]


@router.get("/{key_id}", response_model=KeyPublic)
async def get(key_id: str, _: AdminDep, session: SessionDep) -> KeyPublic:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise not_found("API key", key_id)
    return KeyPublic.model_validate(key)


@router.delete("/{key_id}", response_model=KeyPublic)
async def revoke(key_id: str, _: AdminDep, services: ServicesDep) -> KeyPublic:
    """Revoke a key (idempotent): it is refused from now on in this replica, within the credential cache time
    in the others. The key stays listed, with ``revoked_at``."""
    key = await revoke_key(services.database, key_id)
    if key is None:
        raise not_found("API key", key_id)
    services.auth.forget(key_id)
    return KeyPublic.model_validate(key)
