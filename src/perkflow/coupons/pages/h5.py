"""H5 pages of coupons: the claim center, claiming, the wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.coupons import service as coupons
from perkflow.envelopes import service as envelope_service
from perkflow.errors import PerkflowError
from perkflow.kit.bounds import IdParam
from perkflow.kit.ids import token
from perkflow.web.auth import (
    CsrfProtected,
    DbSession,
    SubscriberId,
    VaultDep,
    client_ip,
)
from perkflow.web.forms import refuse
from perkflow.web.render import render

from ._common import _device_id, _with_device, _zone, qr_svg, router


def _claim_center(
    request: Request,
    session: DbSession,
    sid: int,
    *,
    error: str | None = None,
    error_code: str | None = None,
    status_code: int = 200,
) -> Response:
    offers = coupons.claim_center(session, subscriber_id=sid)
    response = render(
        request,
        "h5/coupons.html",
        {
            "offers": offers,
            "keys": {o.batch.id: token(12) for o in offers},
            "error": error,
            "error_code": error_code,
        },
        status_code=status_code,
    )
    return _with_device(request, response)


@router.get("/h5/coupons")
def claim_center(request: Request, sid: SubscriberId, session: DbSession) -> Response:
    return _claim_center(request, session, sid)


@router.post("/h5/coupons/{batch_id}/claim", dependencies=[CsrfProtected])
def claim(
    request: Request,
    batch_id: IdParam,
    sid: SubscriberId,
    session: DbSession,
    vault: VaultDep,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=64)],
) -> Response:
    device = _device_id(request) or None
    try:
        if not coupons.seen_sold_out(session, batch_id=batch_id):
            # The attempt counts even if the claim is refused, and a refused claim answers 4xx,
            # which rolls the request's transaction back: the count has its own transaction,
            # committed here (refused by the rate limit itself, it keeps nothing).
            with request.app.state.sessions() as attempt:
                coupons.admit_claim_attempt(
                    attempt, subscriber_id=sid, device_id=device, batch_id=batch_id
                )
                attempt.commit()
        outcome = coupons.claim_coupon(
            session,
            actor=coupons.subscriber_actor(sid, ip=client_ip(request)),
            vault=vault,
            batch_id=batch_id,
            subscriber_id=sid,
            idempotency_key=idempotency_key,
            channel="h5",
            device_id=device,
            zone=_zone(request),
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _claim_center(
            request,
            session,
            sid,
            error=exc.message,
            error_code=exc.code,
            status_code=status,
        )
    return RedirectResponse(f"/h5/wallet/{outcome.coupon.id}?claimed=1", status_code=303)


@router.get("/h5/wallet")
def wallet(request: Request, sid: SubscriberId, session: DbSession, vault: VaultDep) -> Response:
    items = coupons.wallet(
        session, actor=coupons.subscriber_actor(sid), vault=vault, subscriber_id=sid
    )
    envelopes = envelope_service.my_envelopes(session, subscriber_id=sid)
    return render(
        request,
        "h5/wallet.html",
        {
            "items": items,
            "envelopes": envelopes,
            "prizes": envelope_service.prizes_of(session, subscriber_id=sid),
            "balance": envelope_service.cash_balance(session, subscriber_id=sid),
        },
    )


@router.get("/h5/wallet/{coupon_id}")
def wallet_item(
    request: Request,
    coupon_id: IdParam,
    sid: SubscriberId,
    session: DbSession,
    vault: VaultDep,
    claimed: int = 0,
) -> Response:
    item = coupons.wallet_item(
        session, actor=coupons.subscriber_actor(sid), vault=vault, coupon_id=coupon_id
    )
    return render(
        request,
        "h5/coupon.html",
        {"item": item, "qr": qr_svg(item.code), "claimed": bool(claimed)},
    )
