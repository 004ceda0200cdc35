"""Redeeming coupons at stores and partners: look-up, redemption, reversal, offline uploads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
    Redemption,
)
from perkflow.coupons.rules import (
    CouponStatus,
    Place,
    Refusal,
    Scope,
    ValueKind,
    discount_fen,
    normalize_code,
    redemption_refusal,
    reversal_problem,
)
from perkflow.coupons.schemas import OfflineEntry
from perkflow.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status as SubscriberStatus

from .access import _require_api_scope
from .binding import bind_coupons
from .claims import code_hash


class Refused(Conflict):
    """A redemption refused for a stated reason (see `rules.Refusal`)."""

    code = "redemption_refused"

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message, field="code", reason=reason.value)
        self.reason = reason


def _place_of(actor: Actor, *, category: str | None) -> Place:
    """Where an actor redeems: a clerk's store, or a partner key's merchant."""
    if actor.kind == "staff":
        org.require(actor, Perm.REDEEM)
        parts = actor.scope_path.split("/")
        if len(parts) != 4:
            raise Forbidden("redeem from a store account: your scope is not a store")
        return Place(
            store_code=parts[-1], store_path=actor.scope_path, partner_code=None, category=category
        )
    if actor.kind == "api_key":
        _require_api_scope(actor, "coupons:redeem")
        if actor.owner_kind != "partner" or not actor.owner_ref:
            raise Forbidden("only a partner merchant's key redeems coupons")
        return Place(
            store_code=None, store_path=None, partner_code=actor.owner_ref, category=category
        )
    raise Forbidden("only store clerks and partner merchants redeem coupons")


def _scope_of(batch: CouponBatch) -> Scope:
    return Scope(
        stores=tuple(batch.scope_stores),
        region_paths=tuple(batch.scope_regions),
        partners=tuple(batch.scope_partners),
        categories=tuple(batch.scope_categories),
    )


def _find_coupon(session: Session, *, vault: Vault, code: str) -> Coupon:
    normalized = normalize_code(code)
    coupon = repo.coupon_by_hash(session, code_hash(vault, normalized)) if normalized else None
    if coupon is None:
        raise Refused(Refusal.NOT_FOUND, "no coupon has this code")
    return coupon


@dataclass(frozen=True)
class CouponCard:
    """A coupon as the clerk sees it before redeeming: the subscriber masked."""

    coupon: Coupon
    batch: CouponBatch
    phone: str
    refusal: tuple[Refusal, str] | None


def look_up_coupon(
    session: Session, *, actor: Actor, vault: Vault, code: str, order_fen: int | None = None
) -> CouponCard:
    """A coupon by its typed or scanned code, and whether it can be redeemed here now."""
    place = _place_of(actor, category=None)
    coupon = _find_coupon(session, vault=vault, code=code)
    batch = repo.get_batch(session, coupon.batch_id)
    assert batch is not None
    me = subscribers.subscriber_home(session, vault=vault, subscriber_id=coupon.subscriber_id)
    scope = _scope_of(batch)
    refusal = redemption_refusal(
        coupon_status=coupon.status,
        batch_status=batch.status,
        now=clock.now(),
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        # The purchase category is only known when redeeming; a lookup does not judge it.
        scope=Scope(scope.stores, scope.region_paths, scope.partners, ()),
        place=place,
        min_spend_fen=batch.min_spend_fen,
        order_fen=order_fen if order_fen is not None else batch.min_spend_fen,
    )
    return CouponCard(coupon=coupon, batch=batch, phone=me.phone, refusal=refusal)


def redeem_coupon(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    code: str,
    order_fen: int,
    category: str | None = None,
    source: str = "counter",
    recorded_at: datetime | None = None,
    client_ref: str | None = None,
) -> Redemption:
    """Redeem a coupon once, here and now; of two clerks at the same moment exactly one wins."""
    place = _place_of(actor, category=category)
    coupon = _find_coupon(session, vault=vault, code=code)
    batch = repo.get_batch(session, coupon.batch_id)
    assert batch is not None
    now = clock.now()
    when = recorded_at or now
    refusal = redemption_refusal(
        coupon_status=coupon.status,
        batch_status=batch.status,
        now=when,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        scope=_scope_of(batch),
        place=place,
        min_spend_fen=batch.min_spend_fen,
        order_fen=order_fen,
    )
    if refusal:
        raise Refused(*refusal)
    # Compare-and-set claimed -> redeemed: the second of two simultaneous clerks updates no row.
    if not repo.cas_coupon(
        session,
        coupon_id=coupon.id,
        expected=CouponStatus.CLAIMED.value,
        target=CouponStatus.REDEEMED.value,
        at=now,
    ):
        raise Refused(Refusal.ALREADY_REDEEMED, "this coupon was already redeemed")
    off = discount_fen(
        value_kind=ValueKind(batch.value_kind),
        amount_fen=batch.amount_fen,
        percent_off=batch.percent_off,
        cap_fen=batch.cap_fen,
        order_fen=order_fen,
    )
    redemption = Redemption(
        coupon_id=coupon.id,
        batch_id=batch.id,
        store_code=place.store_code,
        partner_code=place.partner_code,
        category=category,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_name=actor.name,
        source=source,
        client_ref=client_ref,
        order_fen=order_fen,
        discount_fen=off,
        recorded_at=when,
        at=now,
        status="done",
    )
    session.add(redemption)
    try:
        session.flush()  # the partial unique index backs the CAS; the id goes to the audit
    except IntegrityError as exc:
        raise Refused(Refusal.DUPLICATE_UPLOAD, "this entry was already uploaded") from exc
    org.record_audit(
        session,
        actor=actor,
        action="coupon.redeem",
        target_type="coupon",
        target_id=str(coupon.id),
        details={
            "redemption": redemption.id,
            "store": place.store_code,
            "partner": place.partner_code,
            "order_fen": order_fen,
            "discount_fen": off,
            "source": source,
        },
    )
    session.expire(coupon)
    return redemption


def reverse_redemption(
    session: Session, *, actor: Actor, redemption_id: int, reason: str
) -> Redemption:
    """Undo a redemption within the batch's window: the coupon goes back to the wallet."""
    place = _place_of(actor, category=None)
    redemption = repo.get_redemption(session, redemption_id)
    if redemption is None:
        raise NotFound(f"no redemption {redemption_id}", field="redemption_id")
    if (place.store_code or place.partner_code) not in (
        redemption.store_code,
        redemption.partner_code,
    ):
        raise Forbidden("only the store or partner that redeemed it can reverse it")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    batch = repo.get_batch(session, redemption.batch_id)
    assert batch is not None
    now = clock.now()
    problem = reversal_problem(
        status=redemption.status,
        redeemed_at=redemption.at,
        now=now,
        window_s=batch.reversal_window_s,
    )
    if problem:
        raise Conflict(problem, field="redemption_id")
    # Coupon first, then the redemption: the same row order as redeeming, so no deadlock.
    if not repo.cas_coupon(
        session,
        coupon_id=redemption.coupon_id,
        expected=CouponStatus.REDEEMED.value,
        target=CouponStatus.CLAIMED.value,
        at=None,
    ) or not repo.cas_reverse(
        session, redemption_id=redemption.id, at=now, by=actor.name, reason=reason.strip()
    ):
        raise Conflict("this redemption changed meanwhile; reload", field="redemption_id")
    session.refresh(redemption)
    org.record_audit(
        session,
        actor=actor,
        action="coupon.reverse",
        target_type="coupon",
        target_id=str(redemption.coupon_id),
        details={"redemption": redemption.id, "reason": reason.strip()},
    )
    # Back in the wallet of a subscriber who churned or was suspended since: binding applies.
    coupon = repo.get_coupon(session, redemption.coupon_id)
    if coupon is not None:
        sid = coupon.subscriber_id
        status = subscribers.subscriber_statuses(session, subscriber_ids=[sid]).get(sid)
        if status is not None and status != SubscriberStatus.ACTIVE:
            bind_coupons(session, actor=actor, subscriber_id=sid, status=status, reason="reversed")
    return redemption


@dataclass(frozen=True)
class OfflineResult:
    """The fate of one offline entry: a redemption, or a refusal with its reason."""

    client_ref: str
    redemption_id: int | None
    reason: str | None
    message: str | None


def redeem_offline(
    session: Session, *, actor: Actor, vault: Vault, entries: Sequence[OfflineEntry]
) -> list[OfflineResult]:
    """Redeem a store's offline batch in the order the clerk took them; each entry on its own."""
    place = _place_of(actor, category=None)
    results: dict[str, OfflineResult] = {}
    refs = [e.client_ref for e in entries]
    if len(set(refs)) != len(refs):
        raise ValidationFailed("client_ref must be unique within an upload", field="entries")
    # The earliest entry of a code wins; later ones are refused as already redeemed.
    for entry in sorted(entries, key=lambda e: (e.recorded_at, e.client_ref)):
        if place.store_code is not None:
            earlier = repo.redemption_by_ref(
                session, store_code=place.store_code, client_ref=entry.client_ref
            )
            if earlier is not None:
                results[entry.client_ref] = OfflineResult(
                    entry.client_ref, earlier.id, None, "already recorded by an earlier upload"
                )
                continue
        try:
            # A savepoint per entry: a refused entry rolls back alone, the others stand.
            with session.begin_nested():
                redemption = redeem_coupon(
                    session,
                    actor=actor,
                    vault=vault,
                    code=entry.code,
                    order_fen=entry.order_fen,
                    category=entry.category,
                    source="offline",
                    recorded_at=entry.recorded_at,
                    client_ref=entry.client_ref,
                )
            results[entry.client_ref] = OfflineResult(entry.client_ref, redemption.id, None, None)
        except Refused as exc:
            results[entry.client_ref] = OfflineResult(
                entry.client_ref, None, exc.reason.value, exc.message
            )
    refused = [r for r in results.values() if r.redemption_id is None]
    org.record_audit(
        session,
        actor=actor,
        action="coupon.offline_upload",
        target_type="store",
        target_id=place.store_code or place.partner_code or "-",
        details={
            "entries": len(entries),
            "refused": [{"ref": r.client_ref, "reason": r.reason} for r in refused][:200],
        },
    )
    return [results[e.client_ref] for e in entries]


@dataclass(frozen=True)
class StoreRedemption:
    """A redemption on the clerk's list of the day."""

    redemption: Redemption
    batch: CouponBatch
    reversible: bool


def store_today(session: Session, *, actor: Actor, zone: str) -> list[StoreRedemption]:
    """The clerk's store's redemptions since local midnight."""
    place = _place_of(actor, category=None)
    if place.store_code is None:
        return []
    tz = ZoneInfo(zone)
    midnight = datetime.combine(clock.today(zone), datetime.min.time(), tzinfo=tz)
    now = clock.now()
    return [
        StoreRedemption(
            redemption=r,
            batch=b,
            reversible=reversal_problem(
                status=r.status, redeemed_at=r.at, now=now, window_s=b.reversal_window_s
            )
            is None,
        )
        for r, _c, b in repo.store_redemptions(session, store_code=place.store_code, since=midnight)
    ]
