"""Who is calling, and what they may do.

Credentials: an API key (``Authorization: Bearer fl_<id>_<secret>`` or ``X-API-Key: fl_...``) or an OAuth2 bearer
token (a JWT signed with the configured secret or key; the role is the ``role`` claim, or the claim named by
``auth.role_claim``; a list of roles grants the highest known one). Roles are ordered: ``viewer`` reads,
``operator`` also writes devices and sends commands, ``admin`` also manages keys and certificates and reads the
audit log.

Keys are random (160 bits of secret) and stored as a SHA-256 of the secret: a key cannot be recovered from the
database, and a fast hash is enough for a high-entropy secret. Verified credentials are cached for
``CACHE_SECONDS`` (a JWT never beyond its ``exp``). Revoking a key through this process drops it from the cache
at once; another replica of the service keeps accepting it until its cache entry expires (at most
``CACHE_SECONDS``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud_core.db import Database
from cloud_core.models import ApiKey
from cloud_core.problems import Problem
from cloud_core.settings import AuthSettings

CACHE_SECONDS = 5.0
KEY_PREFIX = "fl_"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`fl_<id>_<secret>`) or a JWT whose role claim names viewer, operator or admin.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="An API key (`fl_<id>_<secret>`)."
)


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown role {value!r} (viewer, operator, admin)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    """``key:<id>``, ``jwt:<subject>`` or ``anonymous``."""
    role: Role


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    token: str
    """The whole key, shown once."""
    key: ApiKey
    """The stored row (its hash, never the secret)."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """(id, full token, hash of the secret)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(20)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", _hash(secret)


def split_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of an API key, or None when ``token`` is not shaped like one."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


async def create_key(
    database: Database, role: Role, *, name: str = "", created_by: str | None = None
) -> NewKey:
    key_id, token, secret_hash = generate_key()
    key = ApiKey(id=key_id, name=name, role=role.label, secret_hash=secret_hash, created_by=created_by)
    async with database.session() as session:
        session.add(key)
    return NewKey(key_id, token, key)


async def list_keys(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query)).scalars())


async def revoke_key(database: Database, key_id: str) -> ApiKey | None:
    """Mark a key revoked (idempotent); None when there is no such key. Callers in a running service also call
    ``Authenticator.forget`` so that the revocation holds at once in this process."""
    async with database.session() as session:
        key = await session.get(ApiKey, key_id)
        if key is not None and key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
        return key


def _unauthorized(detail: str, *, invalid: bool = True) -> Problem:
    challenge = 'Bearer realm="fieldline"' + (', error="invalid_token"' if invalid else "")
    return Problem(401, "Unauthorized", detail, type="unauthorized", headers={"WWW-Authenticate": challenge})


async def credential(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> str | None:
    """The credential a request carries (a bearer token first, then ``X-API-Key``); a FastAPI dependency that
    also declares both schemes in the OpenAPI document."""
    if bearer is not None and bearer.credentials.strip():
        return bearer.credentials.strip()
    return api_key.strip() if api_key and api_key.strip() else None


class Authenticator:
    def __init__(self, database: Database, settings: AuthSettings) -> None:
        self.database = database
        self.settings = settings
        self._cache: dict[str, tuple[float, Principal]] = {}

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after a revocation)."""
        for token, (_, principal) in list(self._cache.items()):
            if principal.id == f"key:{key_id}":
                del self._cache[token]

    async def verify(self, token: str | None) -> Principal:
        """The principal a credential stands for; raises a 401 problem (403 for a JWT without a known role)."""
        if token is None:
            if self.settings.anonymous_role == "viewer":
                return Principal("anonymous", Role.VIEWER)
            raise _unauthorized("credentials required: an API key or a bearer token", invalid=False)
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        parts = split_key(token)
        if parts is not None:
            principal, until = await self._key(parts), now + CACHE_SECONDS
        else:
            principal, expires = self._jwt(token)
            until = now + min(CACHE_SECONDS, expires - time.time())
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[token] = (until, principal)
        return principal

    async def _key(self, parts: tuple[str, str]) -> Principal:
        key_id, secret = parts
        async with self.database.session() as session:
            key = await session.get(ApiKey, key_id)
            if key is None or not hmac.compare_digest(key.secret_hash, _hash(secret)):
                raise _unauthorized("unknown API key")
            if key.revoked_at is not None:
                raise _unauthorized("this API key was revoked")
            last = key.last_used_at
            now = datetime.now(UTC)
            if last is None or (now - last.replace(tzinfo=last.tzinfo or UTC)).total_seconds() > 60:
                key.last_used_at = now
            return Principal(f"key:{key.id}", Role.parse(key.role))

    def _jwt(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's expiry (UNIX time)."""
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=self.settings.jwt_algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        role = _role_of(claims.get(self.settings.role_claim))
        if role is None:
            raise Problem(
                403,
                "Forbidden",
                f"the token's {self.settings.role_claim!r} claim names no known role (viewer, operator, admin)",
                type="forbidden",
            )
        return Principal(f"jwt:{claims['sub']}", role), float(claims["exp"])


def _role_of(claim: Any) -> Role | None:
    """The role a claim grants: a role name, or the highest known role in a list of names."""
    names = claim if isinstance(claim, list) else [claim]
    roles = []
    for name in names:
        try:
            roles.append(Role.parse(str(name)))
        except ValueError:
            continue
    return max(roles, default=None)
