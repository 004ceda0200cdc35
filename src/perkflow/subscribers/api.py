"""JSON API of the subscriber master for channels, partners and the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from perkflow.errors import ValidationFailed
from perkflow.kit.bounds import IdParam
from perkflow.membership import service as membership
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from perkflow.subscribers.schemas import (
    StatusChange,
    StatusEventOut,
    SubscriberOut,
    SubscriberPage,
)
from perkflow.web.auth import ApiActor, DbSession, MartDep, VaultDep

router = APIRouter(prefix="/v1", tags=["subscribers"])


def _out(view: subscribers.SubscriberView) -> SubscriberOut:
    return SubscriberOut(**view.__dict__)


@router.get("/subscribers", response_model=SubscriberPage)
def list_subscribers(
    request: Request,
    actor: ApiActor,
    session: DbSession,
    vault: VaultDep,
    status: Status | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SubscriberPage:
    """Subscribers in the caller's region, phones masked (look a phone up with POST …/search)."""
    if "phone" in request.query_params:
        # Ignoring it would answer the whole list to an old client asking for one number.
        raise ValidationFailed(
            "phone numbers do not go in URLs: POST /v1/subscribers/search", field="phone"
        )
    rows, total = subscribers.list_subscribers(
        session, actor=actor, vault=vault, status=status, offset=(page - 1) * size, limit=size
    )
    return SubscriberPage(items=[_out(r) for r in rows], total=total, page=page, size=size)


class SubscriberSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(min_length=1, max_length=20)
    status: Status | None = None
    page: int = Field(default=1, ge=1, le=100_000, strict=True)
    size: int = Field(default=50, ge=1, le=500, strict=True)


@router.post("/subscribers/search", response_model=SubscriberPage)
def search_subscribers(
    body: SubscriberSearch, actor: ApiActor, session: DbSession, vault: VaultDep
) -> SubscriberPage:
    """Subscribers with this phone number in the caller's region; the number travels in the body."""
    rows, total = subscribers.list_subscribers(
        session,
        actor=actor,
        vault=vault,
        status=body.status,
        phone=body.phone,
        offset=(body.page - 1) * body.size,
        limit=body.size,
    )
    return SubscriberPage(
        items=[_out(r) for r in rows], total=total, page=body.page, size=body.size
    )


@router.get("/subscribers/{subscriber_id}", response_model=SubscriberOut)
def get_subscriber(
    subscriber_id: IdParam,
    actor: ApiActor,
    session: DbSession,
    vault: VaultDep,
    reveal: bool = False,
) -> SubscriberOut:
    """One subscriber; `reveal=true` shows the full phone to roles allowed to, and is audited."""
    return _out(
        subscribers.get_subscriber(
            session, actor=actor, vault=vault, subscriber_id=subscriber_id, reveal=reveal
        )
    )


@router.post("/subscribers/{subscriber_id}/status", response_model=StatusEventOut)
def change_status(
    subscriber_id: IdParam,
    body: StatusChange,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
) -> StatusEventOut:
    """Move a subscriber to active, suspended or churned; the change is kept as an event."""
    # The one status change path: grants, coupons and membership follow in this transaction.
    changed = membership.change_status(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        status=body.status,
        reason=body.reason,
        source="api",
        zone=str(request.app.state.settings.timezone),
        mart=mart,
    )
    return StatusEventOut.model_validate(changed.event)


@router.get("/subscribers/{subscriber_id}/events", response_model=list[StatusEventOut])
def status_events(
    subscriber_id: IdParam, actor: ApiActor, session: DbSession
) -> list[StatusEventOut]:
    """Every status change of one subscriber."""
    return [
        StatusEventOut.model_validate(e)
        for e in subscribers.status_history(session, actor=actor, subscriber_id=subscriber_id)
    ]


class LoginLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(min_length=11, max_length=20)


class LoginLinkOut(BaseModel):
    subscriber_id: int
    url: str
    expires_in_s: int


@router.post("/h5-links", response_model=LoginLinkOut, tags=["h5"])
def create_login_link(
    body: LoginLinkRequest, request: Request, actor: ApiActor, session: DbSession, vault: VaultDep
) -> LoginLinkOut:
    """A signed, short-lived one-click link into the subscriber's H5 pages."""
    ttl = request.app.state.settings.h5_link_max_age_s
    sid, signed = subscribers.issue_login_token(
        session, actor=actor, vault=vault, phone=body.phone, max_age_s=ttl
    )
    return LoginLinkOut(
        subscriber_id=sid, url=str(request.url_for("h5_enter")) + f"?t={signed}", expires_in_s=ttl
    )
