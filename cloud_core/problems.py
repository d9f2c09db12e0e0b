"""Errors as RFC 9457 problem details (``application/problem+json``), everywhere.

Routes raise ``Problem`` (or a subclass); FastAPI's own HTTP and validation errors are translated by the same
handlers, so every error response has ``type``, ``title``, ``status`` and ``detail`` (validation errors add
``errors`` with each field's location and message). ``install`` also makes the OpenAPI document say so
(``document``): each operation's errors are problem details, so a schemathesis run can check every response.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("fieldline.cloud")


class Problem(Exception):
    """An error answered as problem details. ``type`` is a short slug turned into ``urn:fieldline:problem:...``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type if type == "about:blank" or ":" in type else f"urn:fieldline:problem:{type}"
        self.headers = headers
        self.extra = extra
        super().__init__(f"{status} {title}: {detail}")

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def not_found(kind: str, key: str) -> Problem:
    return Problem(404, f"{kind} not found", f"no {kind} {key!r}", type="not-found")


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(str(request.url.path) if request else None),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    428: "Precondition required",
    429: "Too many requests",
    503: "Service unavailable",
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem details."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else ""
        return problem_response(Problem(exc.status_code, title, detail, headers=exc.headers), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": ""}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return problem_response(
            Problem(422, "Invalid request", detail, type="validation", errors=errors), request
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            Problem(500, "Internal error", "the server failed; the error is logged", type="internal"), request
        )

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem",
        "description": "RFC 9457 problem details",
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "description": "about:blank or urn:fieldline:problem:<slug>"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "the request path"},
        },
    },
    "ValidationProblem": {
        "title": "ValidationProblem",
        "allOf": [_PROBLEM],
        "type": "object",
        "properties": {
            "errors": {
                "description": "each field that failed validation (absent when the request as a whole is refused)",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg", "type"],
                    "properties": {
                        "loc": {
                            "type": "array",
                            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        },
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            }
        },
    },
}


def _problem_response(description: str, schema: dict[str, Any] = _PROBLEM) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": schema}}}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the handlers above do: every error of every operation is problem
    details (``default``), 422 carries the field errors, and operations that take credentials answer 401 (with
    ``WWW-Authenticate``) and 403."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(copy.deepcopy(_SCHEMAS))
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code[:1] in "45":
                    declared = response.get("content", {}).get(MEDIA_TYPE)
                    response["content"] = {MEDIA_TYPE: declared or {"schema": _PROBLEM}}
            if "422" in responses:
                responses["422"] = _problem_response(
                    "Invalid request", {"$ref": "#/components/schemas/ValidationProblem"}
                )
            if operation.get("security"):
                responses.setdefault(
                    "401", _problem_response("Missing, unknown, revoked or expired credentials")
                )
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
                }
                responses.setdefault("403", _problem_response("The principal's role does not allow this"))
            responses.setdefault("default", _problem_response("Problem details (RFC 9457)"))
    return schema
