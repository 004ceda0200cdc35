"""The API's OpenAPI document: bearer authentication and the error answers every call can give."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from perkflow.errors import Problem


class FieldProblem(BaseModel):
    """A `Problem` as the API answers it: its path is the `field`."""

    field: str
    message: str


def field_problems(problems: Iterable[Problem]) -> list[dict[str, str]]:
    """The `errors` of an error answer, one `{field, message}` per problem."""
    return [FieldProblem(field=p.path, message=p.message).model_dump() for p in problems]


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None
    errors: list[FieldProblem] | None = None


class ErrorAnswer(BaseModel):
    """Every error the API answers: `{"error": {"code": …, "message": …}}`."""

    error: ErrorBody


def _answer(description: str) -> dict[str, Any]:
    return {"model": ErrorAnswer, "description": description}


# One mapping for every /v1 router (main.create_app includes them with it).
API_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _answer("the body could not be read"),
    401: _answer("no credentials, or an unknown or revoked API key"),
    403: _answer("the key or role lacks the scope, or the row is outside the caller's region"),
    404: _answer("no such row (or not visible to the caller)"),
    409: _answer("the state does not allow it, or a conflicting write came first"),
    413: _answer("the request body is over the configured limit"),
    422: _answer("a value is missing, out of its bounds or malformed"),
    429: _answer("too many attempts; try again later"),
}

BEARER = "bearer"
# Partners sign callbacks with their shared secret (grants/api.py), not an API key.
_UNAUTHENTICATED = ("/callbacks",)


def install_openapi(app: FastAPI) -> None:
    """Give the app an OpenAPI document that declares bearer authentication on /v1 calls."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (`perkflow org api-key …`); a signed-in browser also works",
        }
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1") or path.endswith(_UNAUTHENTICATED):
                continue
            for operation in operations.values():
                operation["security"] = [{BEARER: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
