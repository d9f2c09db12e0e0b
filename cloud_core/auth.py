"""Who is calling, and what they may do.

Credentials: an API key (``Authorization: Bearer fl_<id>_<secret>`` or ``X-API-Key: fl_...``) or an OAuth2 bearer
token (a JWT signed with the configured secret or algorithm; the role is the ``role`` claim, or the claim named
by ``auth.role_claim``). Roles are ordered: ``viewer`` reads, ``operator`` also writes devices and sends commands,
``admin`` also manages keys and certificates and reads the audit log.

Keys are random (160 bits of secret) and stored as a SHA-256 of the secret: a key cannot be recovered from the
database, and a fast hash is enough for a high-entropy secret. Verified keys are cached for ``CACHE_SECONDS``;
revoking a key through this process drops it from the cache at once.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from fastapi import Request
from sqlalchemy import select

from cloud_core.db import Database
from cloud_core.models import ApiKey
from cloud_core.problems import Problem
from cloud_core.settings import AuthSettings

CACHE_SECONDS = 5.0
KEY_PREFIX = "fl_"


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


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """(id, full token, hash of the secret)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(20)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", _hash(secret)


def split_key(token: str) -> tuple[str, str] | None:
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
    async with database.session() as session:
        session.add(
            ApiKey(id=key_id, name=name, role=role.label, secret_hash=secret_hash, created_by=created_by)
        )
    return NewKey(key_id, token)


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "Unauthorized",
        detail,
        type="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="fieldline"'},
    )


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

    async def authenticate(self, request: Request) -> Principal:
        token = _credential(request)
        if token is None:
            if self.settings.anonymous_role == "viewer":
                return Principal("anonymous", Role.VIEWER)
            raise _unauthorized("credentials required: an API key or a bearer token")
        cached = self._cache.get(token)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        parts = split_key(token)
        principal = await self._key(parts) if parts is not None else self._jwt(token)
        self._cache[token] = (now + CACHE_SECONDS, principal)
        if len(self._cache) > 10_000:
            self._cache.clear()
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

    def _jwt(self, token: str) -> Principal:
        options = {"require": ["sub", "exp"]}
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=self.settings.jwt_algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        try:
            role = Role.parse(str(claims.get(self.settings.role_claim, "")))
        except ValueError:
            raise Problem(403, "Forbidden", "the token carries no known role", type="forbidden") from None
        return Principal(f"jwt:{claims['sub']}", role)


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


async def revoke_key(database: Database, key_id: str) -> bool:
    async with database.session() as session:
        key = (await session.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()
        if key is None:
            return False
        if key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
        return True
