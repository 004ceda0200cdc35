"""JSON API of coupons: batches, claims, wallet, redemption."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from perkflow.coupons import reach
from perkflow.coupons import service as coupons
from perkflow.coupons.claim_gate import ClaimGate, ClaimRequest, settle
from perkflow.coupons.rules import BatchStatus
from perkflow.coupons.schemas import (
    BatchOut,
    BatchSpec,
    BatchWarningOut,
    ClaimIn,
    ClaimOut,
    OfflineBatchIn,
    OfflineResultOut,
    RedeemIn,
    RedemptionOut,
    ReverseIn,
    StatusIn,
    StockAdditionIn,
    StockOut,
    WalletItemOut,
)
from perkflow.errors import ValidationFailed
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession, VaultDep

router = APIRouter(prefix="/v1", tags=["coupons"])

DeviceId = Annotated[str | None, Header(alias="X-Device-Id", max_length=64)]


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


def gate_of(app: Any) -> ClaimGate:
    """The app's claim gate, made on first use (one per process and app)."""
    gate = getattr(app.state, "claim_gate", None)
    if gate is None:
        sessions, settings, vault = app.state.sessions, app.state.settings, app.state.vault
        gate = ClaimGate(
            lambda group: settle(sessions, vault=vault, requests=group),
            max_group=settings.claim_max_group,
            writers=settings.claim_writers,
        )
        app.state.claim_gate = gate
    assert isinstance(gate, ClaimGate)
    return gate


@router.post("/coupon-batches", response_model=BatchOut, status_code=201)
def create_batch(body: BatchSpec, actor: ApiActor, session: DbSession) -> BatchOut:
    """A draft coupon batch (hq_admin, or a province marketer for their province)."""
    batch = coupons.create_batch(session, actor=actor, spec=body)
    out = BatchOut.model_validate(batch)
    out.warnings = [
        BatchWarningOut(field=w.field, message=w.message)
        for w in reach.batch_warnings(session, batch=batch)
    ]
    return out


@router.get("/coupon-batches", response_model=list[BatchOut])
def list_batches(actor: ApiActor, session: DbSession) -> list[BatchOut]:
    """Batches the caller may manage."""
    return [BatchOut.model_validate(b) for b in coupons.list_batches(session, actor=actor)]


@router.get("/coupon-batches/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: IdParam, actor: ApiActor, session: DbSession) -> BatchOut:
    """One batch (staff who manage batches in its region, or a key with coupons:read)."""
    return BatchOut.model_validate(coupons.read_batch(session, actor=actor, batch_id=batch_id))


@router.post("/coupon-batches/{batch_id}/status", response_model=BatchOut)
def set_status(batch_id: IdParam, body: StatusIn, actor: ApiActor, session: DbSession) -> BatchOut:
    """Activate, pause, resume or end a batch."""
    try:
        target = BatchStatus(body.status)
    except ValueError as exc:
        raise ValidationFailed(f"{body.status!r} is not a batch status", field="status") from exc
    batch = coupons.set_batch_status(session, actor=actor, batch_id=batch_id, status=target)
    return BatchOut.model_validate(batch)


@router.get("/coupon-batches/{batch_id}/stock", response_model=StockOut)
def stock(batch_id: IdParam, actor: ApiActor, session: DbSession) -> StockOut:
    """Stock levels: total, remaining (per shard), claimed, redeemed."""
    view = coupons.stock_of(session, actor=actor, batch_id=batch_id)
    return StockOut(batch_id=batch_id, **view.__dict__)


@router.post("/coupon-batches/{batch_id}/stock-additions", response_model=StockOut, status_code=201)
def add_stock(
    batch_id: IdParam, body: StockAdditionIn, actor: ApiActor, session: DbSession
) -> StockOut:
    """Add units to an active or paused batch (new shards, new slots); the stock after."""
    view = coupons.add_stock(session, actor=actor, batch_id=batch_id, quantity=body.quantity)
    return StockOut(batch_id=batch_id, **view.__dict__)


@router.post("/coupon-batches/{batch_id}/claims", response_model=ClaimOut, status_code=201)
async def claim(
    batch_id: IdParam,
    body: ClaimIn,
    request: Request,
    response: Response,
    actor: ApiActor,
    device_id: DeviceId = None,
) -> ClaimOut:
    """Claim a coupon into a subscriber's wallet; a repeated idempotency key returns that claim.

    201 with the new claim, 200 when the idempotency key had already claimed (a replay).
    Well-formed calls with an API key are answered by the claim lane in front of the app
    (coupons/claim_lane.py) with the same answers; this route answers everything else.
    """
    # The flash-sale hot path: concurrent claims are settled in groups, one transaction each,
    # committed before any of them answers (coupons/claim_gate.py).
    outcome = await gate_of(request.app).claim(
        ClaimRequest(
            actor=actor,
            batch_id=batch_id,
            subscriber_id=body.subscriber_id,
            idempotency_key=body.idempotency_key,
            device_id=device_id,
            zone=_zone(request),
        )
    )
    if outcome.replayed:
        response.status_code = 200
    return claim_out(outcome)


def claim_out(outcome: coupons.ClaimOutcome) -> ClaimOut:
    """The answer to a claim."""
    return ClaimOut(
        coupon_id=outcome.coupon.id,
        batch_id=outcome.coupon.batch_id,
        subscriber_id=outcome.coupon.subscriber_id,
        replayed=outcome.replayed,
        valid_until=outcome.coupon.valid_until,
    )


@router.get("/subscribers/{subscriber_id}/coupons", response_model=list[WalletItemOut])
def wallet(
    subscriber_id: IdParam, actor: ApiActor, session: DbSession, vault: VaultDep
) -> list[WalletItemOut]:
    """A subscriber's wallet with clear codes, for the channel that serves that subscriber."""
    return [
        WalletItemOut(
            coupon_id=i.coupon.id,
            batch_id=i.batch.id,
            name_zh=i.batch.name_zh,
            name_en=i.batch.name_en,
            status=i.coupon.status,
            code=i.code,
            valid_from=i.coupon.valid_from,
            valid_until=i.coupon.valid_until,
        )
        for i in coupons.wallet(session, actor=actor, vault=vault, subscriber_id=subscriber_id)
    ]


@router.post("/redemptions", response_model=RedemptionOut, status_code=201)
def redeem(body: RedeemIn, actor: ApiActor, session: DbSession, vault: VaultDep) -> RedemptionOut:
    """Redeem a coupon at the caller's store (clerk) or merchant (partner key)."""
    redemption = coupons.redeem_coupon(
        session,
        actor=actor,
        vault=vault,
        code=body.code,
        order_fen=body.order_fen,
        category=body.category,
        source="api" if actor.kind == "api_key" else "counter",
    )
    return RedemptionOut.model_validate(redemption)


@router.post("/redemptions/offline", response_model=list[OfflineResultOut])
def redeem_offline(
    body: OfflineBatchIn, actor: ApiActor, session: DbSession, vault: VaultDep
) -> list[OfflineResultOut]:
    """A store's offline redemptions: each entry succeeds or is refused with its reason."""
    return [
        OfflineResultOut(
            client_ref=r.client_ref,
            ok=r.redemption_id is not None and r.reason is None,
            redemption_id=r.redemption_id,
            reason=r.reason,
            message=r.message,
        )
        for r in coupons.redeem_offline(session, actor=actor, vault=vault, entries=body.entries)
    ]


@router.post("/redemptions/{redemption_id}/reverse", response_model=RedemptionOut)
def reverse(
    redemption_id: IdParam, body: ReverseIn, actor: ApiActor, session: DbSession
) -> RedemptionOut:
    """Reverse a redemption within the batch's window."""
    return RedemptionOut.model_validate(
        coupons.reverse_redemption(
            session, actor=actor, redemption_id=redemption_id, reason=body.reason
        )
    )
