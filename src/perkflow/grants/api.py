"""JSON API of grants: issue, read, and the partners' signed callbacks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from perkflow.errors import ValidationFailed
from perkflow.grants import service as grants
from perkflow.grants.models import Grant
from perkflow.grants.rules import SIGNATURE_HEADER
from perkflow.grants.schemas import (
    CallbackAck,
    CallbackIn,
    GrantCreate,
    GrantDetail,
    GrantEventOut,
    GrantOut,
    GrantPage,
)
from perkflow.kit.bounds import IdParam, LineParam
from perkflow.web.auth import ApiActor, DbSession, VaultDep

router = APIRouter(prefix="/v1", tags=["grants"])


def _detail(grant: Grant, events: list[GrantEventOut]) -> GrantDetail:
    return GrantDetail.model_validate(
        {**GrantOut.model_validate(grant).model_dump(), "events": events}
    )


@router.post(
    "/grants",
    response_model=GrantOut,
    status_code=201,
    responses={200: {"model": GrantOut, "description": "replayed: the key was used before"}},
)
def issue_grant(
    body: GrantCreate,
    request: Request,
    response: Response,
    actor: ApiActor,
    session: DbSession,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)
    ] = None,
) -> GrantOut:
    """Give a benefit to a subscriber (scope `grants:write`); a repeated key replays the grant."""
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise ValidationFailed(
            "the Idempotency-Key header and the body's idempotency_key differ",
            field="idempotency_key",
        )
    key = body.idempotency_key or idempotency_key
    if not key:
        raise ValidationFailed(
            "send an idempotency key in the body or the Idempotency-Key header",
            field="idempotency_key",
        )
    issued = grants.issue_grant(
        session,
        actor=actor,
        subscriber_id=body.subscriber_id,
        benefit_id=body.benefit_id,
        source=body.source,
        idempotency_key=key,
        zone=request.app.state.settings.timezone,
    )
    if issued.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return GrantOut.model_validate(issued.grant)


@router.get("/grants/{grant_id}", response_model=GrantDetail)
def get_grant(grant_id: IdParam, actor: ApiActor, session: DbSession) -> GrantDetail:
    """One grant with its history (scope `grants:read`); a partner's key sees only its own."""
    grant = grants.get_grant(session, actor=actor, grant_id=grant_id)
    events = grants.grant_history(session, actor=actor, grant_id=grant_id)
    return _detail(grant, [GrantEventOut.model_validate(e) for e in events])


@router.get("/grants", response_model=GrantPage)
def list_grants(
    actor: ApiActor,
    session: DbSession,
    subscriber_id: IdParam,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> GrantPage:
    """A subscriber's grants, newest first (scope `grants:read`)."""
    rows, total = grants.list_grants(
        session, actor=actor, subscriber_id=subscriber_id, offset=(page - 1) * size, limit=size
    )
    return GrantPage(
        items=[GrantOut.model_validate(g) for g in rows], total=total, page=page, size=size
    )


async def _raw_body(request: Request) -> bytes:
    # The signature covers the exact bytes sent, so the body is read raw, not parsed.
    return await request.body()


@router.post(
    "/partners/{partner_code}/callbacks",
    response_model=CallbackAck,
    tags=["partners"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CallbackIn.model_json_schema()}},
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "t." + raw body>',
                "schema": {"type": "string"},
            }
        ],
    },
)
def partner_callback(
    partner_code: LineParam,
    request: Request,
    body: Annotated[bytes, Depends(_raw_body)],
    session: DbSession,
    vault: VaultDep,
) -> JSONResponse:
    """A partner confirms a grant; signed with its shared secret; duplicates change nothing."""
    result = grants.receive_callback(
        session,
        vault=vault,
        partner_code=partner_code,
        body=body,
        signature=request.headers.get(SIGNATURE_HEADER),
    )
    ack = CallbackAck(grant_id=result.grant_id, outcome=result.outcome, duplicate=result.duplicate)
    return JSONResponse(ack.model_dump())
