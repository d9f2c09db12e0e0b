"""Access control over real HTTP: API keys (missing, unknown, revoked), roles on every write route, key
management, JWT bearer tokens, and the `fieldline cloud create-key` bootstrap through the console script."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_core.auth import CACHE_SECONDS
from cloud_core.settings import AuthSettings, CloudSettings
from tests.cloud_core.cloudkit import Cloud, running_cloud

PROBLEM = "application/problem+json"
WRITES = {"post", "put", "patch", "delete"}
FIELDLINE = str(Path(sys.executable).parent / "fieldline")


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    if type_ is not None:
        assert body["type"] == f"urn:fieldline:problem:{type_}"
    return body


def keyed(cloud: Cloud, headers: dict[str, str]) -> httpx.AsyncClient:
    """A client of ``cloud`` sending ``headers`` (a credential of the test's own)."""
    return httpx.AsyncClient(base_url=cloud.url, headers=headers, timeout=30)


PUBLIC = {
    ("POST", "/api/v1/pki/enroll"),  # the enrollment token authenticates
    ("POST", "/api/v1/pki/renew"),  # the current certificate authenticates (proof of possession)
    ("GET", "/api/v1/pki/crl"),
    ("GET", "/api/v1/pki/ca"),
}
"""Operations that take no API credentials, on purpose (docs/enrollment.md)."""


async def api_operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path with every parameter filled) of every operation under /api/ in the OpenAPI document."""
    spec = (await client.get("/openapi.json")).json()
    operations = []
    for template, item in spec["paths"].items():
        if not template.startswith("/api/"):
            continue
        path = template
        for name in [
            p["name"] for op in item.values() for p in op.get("parameters", []) if p["in"] == "path"
        ]:
            path = path.replace("{" + name + "}", "x1")
        operations += [(method.upper(), path) for method in item]
    return operations


async def test_missing_unknown_and_revoked_keys_get_401(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud, cloud.client(None) as anonymous, cloud.client() as admin:
        missing = await anonymous.get("/api/v1/keys")
        assert_problem(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="fieldline"'

        key_id = cloud.keys["viewer"].split("_")[1]
        for token in ("fl_nosuchkey_secret", f"fl_{key_id}_wrong-secret", "not-a-key-nor-a-jwt"):
            for headers in ({"Authorization": f"Bearer {token}"}, {"X-API-Key": token}):
                refused = await anonymous.get("/api/v1/keys", headers=headers)
                assert_problem(refused, 401, "unauthorized")
                assert (
                    refused.headers["www-authenticate"] == 'Bearer realm="fieldline", error="invalid_token"'
                )

        created = (await admin.post("/api/v1/keys", json={"role": "admin", "name": "to revoke"})).json()
        async with keyed(cloud, {"X-API-Key": created["token"]}) as doomed:
            assert (await doomed.get("/api/v1/keys")).status_code == 200  # now cached as valid
            revoked = await admin.delete(f"/api/v1/keys/{created['id']}")
            assert revoked.status_code == 200
            assert revoked.json()["revoked_at"] is not None
            body = assert_problem(await doomed.get("/api/v1/keys"), 401, "unauthorized")
            assert body["detail"] == "this API key was revoked"
            assert_problem(await doomed.post("/api/v1/keys", json={"role": "admin"}), 401)


async def test_every_api_operation_requires_credentials_and_a_viewer_cannot_write(tmp_path: Path) -> None:
    async with (
        running_cloud(tmp_path) as cloud,
        cloud.client(None) as anonymous,
        cloud.client("viewer") as viewer,
        cloud.client("admin") as admin,
    ):
        operations = await api_operations(anonymous)
        assert set(operations) >= PUBLIC
        operations = [o for o in operations if o not in PUBLIC]
        assert ("POST", "/api/v1/keys") in operations
        assert ("GET", "/api/v1/audit") in operations
        writes = [(m, p) for m, p in operations if m.lower() in WRITES]
        for method, path in operations:
            assert_problem(await anonymous.request(method, path, json={}), 401)
        for method, path in writes:
            body = assert_problem(await viewer.request(method, path, json={}), 403, "forbidden")
            assert "is viewer" in body["detail"], (method, path, body)
        audit = (await admin.get("/api/v1/audit", params={"limit": 500})).json()["items"]
        refused = {
            (e["method"], e["path"]) for e in audit if e["status_code"] == 403 and e["role"] == "viewer"
        }
        assert refused == set(writes)
        assert {k["name"] for k in (await admin.get("/api/v1/keys")).json()} == {
            "test viewer",
            "test operator",
            "test admin",
        }


async def test_operator_cannot_manage_keys_and_admin_can(tmp_path: Path) -> None:
    async with (
        running_cloud(tmp_path) as cloud,
        cloud.client("operator") as operator,
        cloud.client() as admin,
    ):
        assert_problem(await operator.post("/api/v1/keys", json={"role": "viewer"}), 403, "forbidden")
        assert_problem(await operator.get("/api/v1/keys"), 403, "forbidden")
        assert_problem(await operator.get("/api/v1/audit"), 403, "forbidden")
        admin_id = cloud.keys["admin"].split("_")[1]
        assert_problem(await operator.delete(f"/api/v1/keys/{admin_id}"), 403, "forbidden")

        created = await admin.post("/api/v1/keys", json={"role": "operator", "name": "line 3 PLC"})
        assert created.status_code == 201
        new = created.json()
        assert new["token"].startswith(f"fl_{new['id']}_")
        assert (new["role"], new["name"], new["created_by"]) == ("operator", "line 3 PLC", f"key:{admin_id}")
        async with keyed(cloud, {"Authorization": f"Bearer {new['token']}"}) as fresh:
            body = assert_problem(await fresh.get("/api/v1/keys"), 403)
            assert body["detail"] == f"this needs the admin role; key:{new['id']} is operator"

        listing = await admin.get("/api/v1/keys")
        assert new["token"] not in listing.text
        assert new["token"].split("_", 2)[2] not in listing.text
        assert all(set(k) == set(new) - {"token"} for k in listing.json())
        shown = (await admin.get(f"/api/v1/keys/{new['id']}")).json()
        assert "token" not in shown
        assert shown["last_used_at"] is not None
        assert_problem(await admin.get("/api/v1/keys/nosuchkey"), 404, "not-found")
        assert_problem(await admin.delete("/api/v1/keys/nosuchkey"), 404, "not-found")
        invalid = await admin.post("/api/v1/keys", json={"role": "root"})
        assert assert_problem(invalid, 422, "validation")["errors"][0]["loc"] == ["body", "role"]

        first = (await admin.delete(f"/api/v1/keys/{new['id']}")).json()
        again = (await admin.delete(f"/api/v1/keys/{new['id']}")).json()
        assert first["revoked_at"] == again["revoked_at"] is not None
        active = (await admin.get("/api/v1/keys", params={"include_revoked": False})).json()
        assert new["id"] not in {k["id"] for k in active}


SECRET = "a-test-secret-long-enough-for-hs256-and-hs512-" + "x" * 32


def token(claims: dict[str, Any], secret: Any = SECRET, algorithm: str = "HS256") -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + 300, **claims}, secret, algorithm=algorithm)


async def test_jwt_bearer_tokens(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path / "cloud", auth=AuthSettings(jwt_secret=SECRET))
    async with running_cloud(tmp_path, settings) as cloud, cloud.client(None) as client:

        async def call(bearer: str) -> httpx.Response:
            return await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {bearer}"})

        assert (await call(token({"role": "admin"}))).status_code == 200
        assert (await call(token({"role": ["viewer", "admin", "auditor"]}))).status_code == 200
        body = assert_problem(await call(token({"role": "operator"})), 403, "forbidden")
        assert body["detail"] == "this needs the admin role; jwt:alice is operator"

        expired = assert_problem(await call(token({"role": "admin", "exp": int(time.time()) - 10})), 401)
        assert expired["detail"] == "the token has expired"
        assert_problem(await call(token({"role": "admin"}, secret=SECRET.upper())), 401)
        assert_problem(await call(token({"role": "admin"}, algorithm="HS512")), 401)
        unsigned = jwt.encode({"sub": "alice", "role": "admin", "exp": int(time.time()) + 60}, None, "none")
        assert_problem(await call(unsigned), 401, "unauthorized")
        no_exp = jwt.encode({"sub": "alice", "role": "admin"}, SECRET, algorithm="HS256")
        assert_problem(await call(no_exp), 401)
        missing_role = assert_problem(await call(token({})), 403, "forbidden")
        assert "'role' claim names no known role" in missing_role["detail"]
        assert_problem(await call(token({"role": "superuser"})), 403, "forbidden")


async def test_jwt_audience_issuer_and_role_claim_when_configured(tmp_path: Path) -> None:
    auth = AuthSettings(
        jwt_secret=SECRET,
        jwt_audience="fieldline-api",
        jwt_issuer="https://idp.example",
        role_claim="fl_role",
    )
    settings = CloudSettings(data_dir=tmp_path / "cloud", auth=auth)
    good = {"aud": "fieldline-api", "iss": "https://idp.example", "fl_role": "admin"}
    async with running_cloud(tmp_path, settings) as cloud, cloud.client(None) as client:

        async def call(claims: dict[str, Any]) -> httpx.Response:
            return await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {token(claims)}"})

        assert (await call(good)).status_code == 200
        assert_problem(await call({**good, "aud": "another-api"}), 401)
        assert_problem(await call({**good, "iss": "https://evil.example"}), 401)
        assert_problem(await call({k: v for k, v in good.items() if k != "aud"}), 401)
        assert_problem(await call({k: v for k, v in good.items() if k != "iss"}), 401)
        assert_problem(
            await call({**{k: v for k, v in good.items() if k != "fl_role"}, "role": "admin"}), 403
        )


async def fieldline(*args: str, data_dir: Path) -> tuple[int, str, str]:
    """Run the real console script (`fieldline cloud ...`) against ``data_dir``."""
    process = await asyncio.create_subprocess_exec(
        FIELDLINE,
        "cloud",
        *args,
        env={**os.environ, "FIELDLINE_DATA_DIR": str(data_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_create_key_bootstraps_the_first_admin_through_the_console_script(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code, out, err = await fieldline(
        "create-key", "--role", "admin", "--name", "bootstrap", data_dir=data_dir
    )
    assert code == 0, err
    admin_token = out.strip()
    assert admin_token.startswith("fl_")
    assert "not shown again" in err
    code, _, err = await fieldline("create-key", "--role", "root", data_dir=data_dir)
    assert code == 2
    assert "unknown role 'root'" in err

    async with (
        running_cloud(tmp_path, CloudSettings(data_dir=data_dir)) as cloud,
        keyed(cloud, {"Authorization": f"Bearer {admin_token}"}) as admin,
    ):
        keys = (await admin.get("/api/v1/keys")).json()
        bootstrap = next(k for k in keys if k["name"] == "bootstrap")
        assert (bootstrap["role"], bootstrap["created_by"]) == ("admin", "cli")
        created = await admin.post("/api/v1/keys", json={"role": "viewer", "name": "dashboard"})
        assert created.status_code == 201

        code, out, _ = await fieldline("list-keys", data_dir=data_dir)
        assert code == 0
        assert bootstrap["id"] in out
        assert "dashboard" in out
        assert admin_token.split("_", 2)[2] not in out
        code, _, err = await fieldline("revoke-key", "nosuchkey", data_dir=data_dir)
        assert code == 1
        assert "no API key 'nosuchkey'" in err

        # Revoked by another process: this replica stops accepting the key once its cache entry expires.
        code, _, err = await fieldline("revoke-key", bootstrap["id"], data_dir=data_dir)
        assert code == 0, err
        status = 200
        deadline = time.monotonic() + CACHE_SECONDS + 10
        while status == 200 and time.monotonic() < deadline:
            status = (await admin.get("/api/v1/keys")).status_code
        assert status == 401

        async with cloud.client() as other_admin:
            audit = (await other_admin.get("/api/v1/audit", params={"principal": "cli"})).json()["items"]
        assert [(e["method"], e["path"], e["resource_id"], e["status_code"]) for e in audit] == [
            ("CLI", "fieldline cloud revoke-key", bootstrap["id"], 200),
            ("CLI", "fieldline cloud create-key", bootstrap["id"], 201),
        ]


async def test_jwt_signed_with_an_asymmetric_key(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    auth = AuthSettings(jwt_secret=public.decode(), jwt_algorithms=["ES256"])
    settings = CloudSettings(data_dir=tmp_path / "cloud", auth=auth)
    async with running_cloud(tmp_path, settings) as cloud, cloud.client(None) as client:
        signed = token({"role": "admin"}, secret=private, algorithm="ES256")
        ok = await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {signed}"})
        assert ok.status_code == 200
        other = token({"role": "admin"}, secret=ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        assert_problem(await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {other}"}), 401)
        # The algorithm-confusion attack: HS256 "signed" with the public key must not verify.
        segments = [
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
            for part in ({"alg": "HS256", "typ": "JWT"}, {"sub": "mallory", "role": "admin", "exp": 2**40})
        ]
        signature = hmac.new(public, b".".join(segments), hashlib.sha256).digest()
        hs256 = b".".join([*segments, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
        assert_problem(await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {hs256}"}), 401)
