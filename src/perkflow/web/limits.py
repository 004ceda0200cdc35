"""The API's edge, in front of the framework: bodies bounded in size, callers known first.

Both are pure ASGI so that neither needs the body read: a body over the limit is refused from
its Content-Length before a byte is read, and a chunked one as soon as its chunks add up past
the limit; a call without credentials is answered 401 before its body is parsed or validated,
so an anonymous caller learns nothing about a route's schema (and costs no parsing).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow.errors import Unauthenticated
from perkflow.web.auth import actor_for_key

# Partners sign their callbacks with a shared secret instead of an API key.
_UNAUTHENTICATED_PATHS = ("/callbacks",)


class BodyTooLarge(HTTPException):
    """A request body over the configured limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


def _json(status: int, body: dict[str, Any]) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": payload}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


class BodyLimit:
    """ASGI middleware: a /v1 body over `api_limit` bytes (others over `page_limit`) is a 413."""

    def __init__(self, app: ASGIApp, *, api_limit: int, page_limit: int) -> None:
        self.app = app
        self.api_limit = api_limit
        self.page_limit = page_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/v1/")
        limit = self.api_limit if api else self.page_limit
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await _refuse(scope, receive, send, limit, api=api)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised inside the app's body read: FastAPI passes an HTTPException on
                    # to the app's handler, which answers 413 in the usual error shape.
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int, *, api: bool) -> None:
    if api:
        start, body = _json(
            413,
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body larger than {limit} bytes",
                }
            },
        )
        await send(start)
        await send(body)
        return
    # Pages answer in HTML through the app's own handler (a raise before any route runs).
    from starlette.responses import PlainTextResponse

    response = PlainTextResponse("413 Content Too Large", status_code=413)
    await response(scope, receive, send)


class AuthFirst:
    """ASGI middleware: a /v1 call with no credentials, or an unknown key, is a 401 up front."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path.startswith("/v1/") or path.endswith(_UNAUTHENTICATED_PATHS):
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or b""
        if auth[:7].lower() == b"bearer ":
            client = scope.get("client")
            actor = await actor_for_key(
                scope["app"], auth[7:].decode("latin-1").strip(), ip=client[0] if client else "-"
            )
            if actor is not None:
                await self.app(scope, receive, send)
                return
            problem = Unauthenticated("unknown or revoked API key", field="authorization")
        elif b"perkflow_session=" in (_header(scope, b"cookie") or b""):
            # A signed-in browser: the session is checked by the route's own dependency.
            await self.app(scope, receive, send)
            return
        else:
            problem = Unauthenticated(
                "send an API key as 'Authorization: Bearer …' or sign in", field="authorization"
            )
        start, body = _json(401, {"error": problem.to_dict()})
        start["headers"].append((b"www-authenticate", b"Bearer"))
        await send(start)
        await send(body)
