"""The claim lane: flash-sale claims answered in front of the web framework.

Under a flash sale the claim endpoint is nearly all the traffic, and most of a claim's CPU was
the framework around it (route matching over every route, dependency solving, the middleware
stack), not the claim (bench/README.md). The lane is an ASGI middleware that answers the
ordinary case itself: `POST /v1/coupon-batches/{id}/claims` with a known API key, a JSON body
that validates and a valid device header. It parses the body with the route's own schema,
asks the same claim gate, and writes the same answer the route would.

Anything else (no key or an unknown one, a body or header that does not validate, a staff
session) goes on to the app untouched, body included, and the route gives its usual answer
or error. So the lane changes speed, never meaning; tests/coupons/test_claim_lane.py holds the
two side by side. Nothing of the app's answer is copied here: the lane sits inside the app's
security-headers middleware (main.py), which adds the same headers to its answers, and a
claim's error is answered by the app's own exception handler for it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow.coupons.api import claim_out, gate_of
from perkflow.coupons.claim_gate import ClaimRequest
from perkflow.coupons.schemas import ClaimIn
from perkflow.web.auth import actor_for_key

_PATH = re.compile(r"/v1/coupon-batches/([1-9][0-9]{0,17})/claims")
_MAX_BODY = 4096  # a claim is ~80 bytes; anything larger is the route's to refuse


class ClaimLane:
    """ASGI middleware: answers well-formed API-key claims; passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        answered = not more and await self._answer(scope, int(match[1]), body, send)
        if not answered:
            await self.app(scope, _replay(body, more, receive), send)

    async def _answer(self, scope: Scope, batch_id: int, body: bytes, send: Send) -> bool:
        """Claim and answer if the request is the ordinary case; False to pass it on."""
        headers = _headers(scope)
        auth = headers.get(b"authorization", b"")
        device = headers.get(b"x-device-id")
        if auth[:7].lower() != b"bearer " or (device is not None and len(device) > 64):
            return False
        try:
            parsed = ClaimIn.model_validate_json(body)
        except ValidationError:
            return False
        app = scope["app"]
        client = scope.get("client")
        actor = await actor_for_key(
            app, auth[7:].decode("latin-1").strip(), ip=client[0] if client else "-"
        )
        if actor is None:
            return False
        request = ClaimRequest(
            actor=actor,
            batch_id=batch_id,
            subscriber_id=parsed.subscriber_id,
            idempotency_key=parsed.idempotency_key,
            device_id=device.decode("latin-1") if device is not None else None,
            zone=str(app.state.settings.timezone),
        )
        try:
            outcome = await gate_of(app).claim(request)
        except Exception as exc:
            # The app's own answer to this error (a refusal, a busy ledger), or none: raised.
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
            await response(scope, _no_body, send)
            return True
        status = 200 if outcome.replayed else 201
        await _respond(send, status, claim_out(outcome).model_dump_json().encode())
        return True


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope["headers"]}


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body, up to a bound; True as second value if more is left unread."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # a disconnect: let the app see it
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > _MAX_BODY:
            return b"".join(chunks), True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A receive that gives the app the bytes already read, then whatever is left."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


def _handler_for(app: Any, exc: Exception) -> Any:
    """The app's exception handler for this error (main._install_error_handlers), if any."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


async def _respond(send: Send, status: int, payload: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
