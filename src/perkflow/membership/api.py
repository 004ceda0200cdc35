"""JSON API of membership: tiers, members, prepayments, plan changes, bills and points."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from perkflow.kit.bounds import IdParam, LineParam
from perkflow.membership import service as membership
from perkflow.membership.schemas import (
    BillIn,
    BundleItemOut,
    ExpiringOut,
    LiabilityOut,
    MemberOut,
    PlanIn,
    PointsEntryOut,
    PointsOut,
    PrepaymentIn,
    PrepaymentOut,
    PreviewOut,
    PreviewRowOut,
    TierChangeOut,
    TierOut,
)
from perkflow.web.auth import ApiActor, DbSession, MartDep

router = APIRouter(prefix="/v1", tags=["membership"])
ProgramBody = Annotated[
    dict[str, Any],
    Body(description="the tier programme, as in docs/membership.md (YAML's JSON form)"),
]


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


def _tiers(views: list[membership.TierView]) -> list[TierOut]:
    return [
        TierOut(
            code=v.tier.code,
            name_zh=v.tier.name_zh,
            name_en=v.tier.name_en,
            level=v.tier.level,
            points_multiplier=v.tier.points_multiplier_pct / 100,
            qualify=v.rule,
            annual_value_fen=v.annual_value_fen,
            bundle=[
                BundleItemOut(
                    id=i.item.id,
                    benefit_code=i.benefit_code,
                    name_zh=i.name_zh,
                    name_en=i.name_en,
                    mode=i.item.mode,
                    cadence=i.item.cadence,
                    quantity=i.item.quantity,
                    value_fen=i.item.value_fen,
                    pick_group=i.item.pick_group,
                    choose=i.item.choose,
                )
                for i in v.items
            ],
        )
        for v in views
    ]


def _points(posted: membership.Posted) -> PointsOut:
    return PointsOut(
        entry=PointsEntryOut.model_validate(posted.entry) if posted.entry else None,
        replayed=posted.replayed,
        balance=posted.balance,
    )


def _member(card: membership.MemberCard) -> MemberOut:
    return MemberOut(
        subscriber_id=card.subscriber_id,
        status=card.status.value,
        tier=card.tier.code if card.tier else None,
        pending_tier=card.pending_tier.code if card.pending_tier else None,
        downgrade_due_at=card.downgrade_due_at,
        next_tier=card.next_tier.code if card.next_tier else None,
        progress=card.progress.ratio if card.progress else None,
        annual_value_fen=card.annual_value_fen,
        used_value_fen=card.used_value_fen,
        points=card.points,
        points_value_fen=card.points_value_fen,
        expiring=[ExpiringOut(on=d, points=n) for d, n in card.expiring],
        entries=[PointsEntryOut.model_validate(e) for e in card.entries],
        history=[TierChangeOut.model_validate(h) for h in card.history],
    )


@router.get("/tiers", response_model=list[TierOut])
def list_tiers(actor: ApiActor, session: DbSession) -> list[TierOut]:
    """The tier programme with each tier's bundle and its value (scope `members:read`)."""
    return _tiers(membership.list_tiers(session, actor=actor))


@router.put("/tiers", response_model=list[TierOut])
def define_tiers(
    body: ProgramBody, actor: ApiActor, session: DbSession, mart: MartDep
) -> list[TierOut]:
    """Replace the tier programme (HQ staff); a bad rule is a 422 naming its field."""
    membership.define_program(session, actor=actor, raw=body, mart=mart)
    return _tiers(membership.tier_views(session))


@router.post("/tiers/preview", response_model=PreviewOut)
def preview_tiers(
    body: ProgramBody, actor: ApiActor, session: DbSession, mart: MartDep
) -> PreviewOut:
    """Subscribers per tier of a draft programme, from the mart, without saving it."""
    _, rows, none = membership.preview_program(session, actor=actor, mart=mart, raw=body)
    return PreviewOut(
        tiers=[PreviewRowOut(code=r.code, level=r.level, subscribers=r.subscribers) for r in rows],
        no_tier=none,
    )


@router.get("/members/{subscriber_id}", response_model=MemberOut)
def get_member(
    subscriber_id: IdParam, request: Request, actor: ApiActor, session: DbSession
) -> MemberOut:
    """A member's tier, progress, bundle value, points and history (scope `members:read`)."""
    return _member(
        membership.member_for_staff(
            session, actor=actor, subscriber_id=subscriber_id, zone=_zone(request)
        )
    )


@router.post("/members/{subscriber_id}/prepayments", response_model=PrepaymentOut)
def prepay(
    subscriber_id: IdParam,
    body: PrepaymentIn,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
) -> PrepaymentOut:
    """Record a prepayment (scope `members:write`), idempotent by key; the tier follows."""
    balance, replayed = membership.record_prepayment(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        amount_fen=body.amount_fen,
        idempotency_key=body.idempotency_key,
        zone=_zone(request),
        reason=body.reason,
        mart=mart,
    )
    card = membership.member_card(session, subscriber_id=subscriber_id, zone=_zone(request))
    return PrepaymentOut(
        balance_fen=balance, replayed=replayed, tier=card.tier.code if card.tier else None
    )


@router.post("/members/{subscriber_id}/plan", response_model=MemberOut)
def change_plan(
    subscriber_id: IdParam,
    body: PlanIn,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
) -> MemberOut:
    """A plan change (scope `members:write`): upgrades apply at once, downgrades after grace."""
    membership.change_plan(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        plan_fee_fen=body.plan_fee_fen,
        zone=_zone(request),
        reason=body.reason,
        mart=mart,
    )
    return _member(
        membership.member_card(session, subscriber_id=subscriber_id, zone=_zone(request))
    )


@router.post("/members/{subscriber_id}/bills", response_model=PointsOut)
def earn(
    subscriber_id: IdParam, body: BillIn, request: Request, actor: ApiActor, session: DbSession
) -> PointsOut:
    """Points for a paid bill (scope `members:write`); the same bill twice is recorded once."""
    return _points(
        membership.earn_for_bill(
            session,
            actor=actor,
            subscriber_id=subscriber_id,
            bill_ref=body.bill_ref,
            bill_fen=body.bill_fen,
            zone=_zone(request),
        )
    )


@router.post("/members/{subscriber_id}/bills/{bill_ref}/reversal", response_model=PointsOut)
def reverse(
    subscriber_id: IdParam,
    bill_ref: LineParam,
    request: Request,
    actor: ApiActor,
    session: DbSession,
) -> PointsOut:
    """A reversed bill takes its points back (as far as they are unspent; the rest is stated)."""
    return _points(
        membership.reverse_bill(
            session,
            actor=actor,
            subscriber_id=subscriber_id,
            bill_ref=bill_ref,
            zone=_zone(request),
        )
    )


@router.get("/points/liability", response_model=LiabilityOut)
def liability(request: Request, actor: ApiActor, session: DbSession) -> LiabilityOut:
    """Outstanding points, their value, and when they expire (national)."""
    rep = membership.points_liability(session, actor=actor, zone=_zone(request))
    return LiabilityOut(
        members=rep.members,
        points=rep.points,
        value_fen=rep.value_fen,
        by_expiry=[{"on": d.isoformat(), "points": n, "value_fen": v} for d, n, v in rep.by_expiry],
        accounts=rep.accounts,
    )
