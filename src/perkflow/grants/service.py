"""Use cases of grants: issue, fulfil through partners (outbox), callbacks, binding, expiry."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import rules as catalog_rules
from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus, FulfilmentKind, ValidityKind
from perkflow.coupons import service as coupons
from perkflow.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant, GrantEvent, OutboxMessage
from perkflow.grants.rules import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TOTAL_PERIOD,
    Delivery,
    GrantStatus,
    OutboxKind,
    OutboxStatus,
    Outcome,
    OutcomeKind,
    backoff_s,
    can_pause,
    month_period,
    resume_to,
    sign,
    signature_problem,
)
from perkflow.kit import clock, metrics
from perkflow.kit.crypto import Vault
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status, normalize_phone

# --- who may do what ------------------------------------------------------------------------------


def _require_issue(actor: Actor) -> None:
    if actor.kind == "subscriber":
        raise Forbidden("subscribers claim benefits through the H5 pages")
    if actor.kind in ("staff", "api_key"):
        org.require_perm_or_scope(actor, perm=Perm.GRANTS_ISSUE, scope="grants:write")


def _require_read(actor: Actor) -> None:
    if actor.kind in ("staff", "api_key"):
        org.require_perm_or_scope(
            actor, perm=Perm.GRANTS_READ, scope=("grants:read", "grants:write")
        )


def require_read(actor: Actor) -> None:
    """403 unless the actor may read grants."""
    _require_read(actor)


def _partner_may_see(session: Session, *, actor: Actor, partner_id: int) -> bool:
    """A partner's key sees only its own partner's benefits and grants."""
    if not _is_partner_key(actor):
        return True
    # A partner key that names no partner sees nothing.
    return (
        actor.owner_ref is not None
        and catalog.get_partner(session, partner_id=partner_id).code == actor.owner_ref
    )


def _is_partner_key(actor: Actor) -> bool:
    return actor.kind == "api_key" and (
        actor.owner_kind == "partner" or actor.owner_ref is not None
    )


def _require_visible(session: Session, *, actor: Actor, grant: Grant) -> None:
    _require_read(actor)
    if actor.kind == "staff":
        subscribers.require_in_scope(session, actor=actor, subscriber_id=grant.subscriber_id)
    elif actor.kind == "subscriber" and actor.id != str(grant.subscriber_id):
        raise NotFound(f"no grant {grant.id}", field="grant_id")
    if not _partner_may_see(session, actor=actor, partner_id=grant.partner_id):
        raise NotFound(f"no grant {grant.id}", field="grant_id")


def _partner_actor(partner: Any) -> Actor:
    return Actor(kind="partner", id=str(partner.code), name=str(partner.name))


# --- small shared steps ---------------------------------------------------------------------------


def _event(
    session: Session, *, grant_id: int, from_status: str | None, to_status: str, reason: str
) -> None:
    repo.add_event(
        session,
        grant_id=grant_id,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        at=clock.now(),
    )


def _took_stock(session: Session, grant: Grant) -> bool:
    """Whether the grant's outstanding reservation took stock (recorded with its latest message)."""
    for message in reversed(repo.messages_of(session, grant.id, OutboxKind.FULFIL)):
        if "took_stock" in message.payload:
            return bool(message.payload["took_stock"])
    return catalog.get_benefit(session, benefit_id=grant.benefit_id).stock_total is not None


def _release(session: Session, grants: Sequence[Grant]) -> None:
    """Give back what pending grants reserved, benefit rows in primary-key order."""
    for grant in sorted(grants, key=lambda g: (g.benefit_id, g.id)):
        catalog.release_reservation(
            session,
            reservation=catalog.Reservation(
                benefit_id=grant.benefit_id,
                took_stock=_took_stock(session, grant),
                card_code_id=grant.card_code_id,
            ),
        )


def _count(session: Session, *, grant: Grant, limits: tuple[int | None, int | None]) -> None:
    """Count a grant against the month and total limits, or raise 409 and count nothing."""
    # Periods in key order ("2026-11" < "total"): concurrent grants lock the rows alike.
    for period, limit, label in (
        (grant.period, limits[0], "per month"),
        (TOTAL_PERIOD, limits[1], "in total"),
    ):
        repo.ensure_counter(
            session, subscriber_id=grant.subscriber_id, benefit_id=grant.benefit_id, period=period
        )
        # One conditional UPDATE: the row count says whether this grant still fits the limit.
        if not repo.bump_counter(
            session,
            subscriber_id=grant.subscriber_id,
            benefit_id=grant.benefit_id,
            period=period,
            limit=limit,
        ):
            raise Conflict(
                f"limit reached: {limit} {label} for this benefit",
                field="benefit_id",
                limit=label,
            )


def _uncount(session: Session, grant: Grant) -> None:
    for period in (grant.period, TOTAL_PERIOD):
        repo.drop_counter(
            session, subscriber_id=grant.subscriber_id, benefit_id=grant.benefit_id, period=period
        )


def _partner_secret(vault: Vault, partner: Any) -> str | None:
    if not partner.connector_secret_enc:
        return None
    secret: str = vault.pii.decrypt(
        partner.connector_secret_enc, f"partner:{partner.code}".encode()
    )
    return secret


def _has_connector(partner: Any) -> bool:
    return bool(partner.connector_kind == "http" and partner.connector_url)


# --- issuing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A grant and whether this request created it or replayed an earlier one with its key."""

    grant: Grant
    replayed: bool


def _replay(
    session: Session, *, actor: Actor, grant: Grant, subscriber_id: int, benefit_id: int
) -> Issued:
    _require_visible(session, actor=actor, grant=grant)
    if (grant.subscriber_id, grant.benefit_id) != (subscriber_id, benefit_id):
        raise Conflict(
            "this idempotency key was used for another subscriber or benefit",
            field="idempotency_key",
            grant_id=grant.id,
        )
    return Issued(grant=grant, replayed=True)


def issue_grant(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    benefit_id: int,
    source: str,
    idempotency_key: str,
    zone: str,
) -> Issued:
    """Give one benefit to one subscriber, exactly once per idempotency key."""
    _require_issue(actor)
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise ValidationFailed(
            "idempotency key must be 1 to 128 characters", field="idempotency_key"
        )
    source = source.strip()
    if not source or len(source) > 64:
        raise ValidationFailed("source must be 1 to 64 characters", field="source")
    existing = repo.get_by_key(session, key)
    if existing is not None:
        return _replay(
            session, actor=actor, grant=existing, subscriber_id=subscriber_id, benefit_id=benefit_id
        )
    benefit = catalog.get_benefit(session, benefit_id=benefit_id)
    if not _partner_may_see(session, actor=actor, partner_id=benefit.partner_id):
        raise NotFound(f"no benefit {benefit_id}", field="benefit_id")
    if benefit.status != BenefitStatus.LISTED.value:
        raise Conflict(f"benefit is {benefit.status}, not listed", field="benefit_id")
    now = clock.now()
    # In UTC, as the ledger gives it back: a replay reads the stored grant, and the first answer
    # must be the same, field for field, not the same instant in the operator's zone.
    valid_until = catalog_rules.valid_until(
        kind=ValidityKind(benefit.validity_kind),
        granted_at=now,
        zone=zone,
        valid_days=benefit.valid_days,
        fixed_until=benefit.valid_until,
    ).astimezone(UTC)
    if valid_until <= now:
        raise Conflict("this benefit's validity has ended", field="benefit_id")
    repo.begin_write(session)
    try:
        # A savepoint: if a concurrent request with the same key wins, only this attempt is undone.
        with session.begin_nested():
            grant = _create(
                session,
                actor=actor,
                benefit=benefit,
                subscriber_id=subscriber_id,
                source=source,
                key=key,
                zone=zone,
                now=now,
                valid_until=valid_until,
            )
    except IntegrityError:
        winner = repo.get_by_key(session, key)
        if winner is None:
            raise
        return _replay(
            session, actor=actor, grant=winner, subscriber_id=subscriber_id, benefit_id=benefit_id
        )
    metrics.GRANTS_ISSUED.labels(path="one").inc()
    return Issued(grant=grant, replayed=False)


def _create(
    session: Session,
    *,
    actor: Actor,
    benefit: Any,
    subscriber_id: int,
    source: str,
    key: str,
    zone: str,
    now: datetime,
    valid_until: datetime,
) -> Grant:
    # Share lock on the subscriber first: a churn or suspension waits for this grant, then binds it.
    subscribers.hold_active_subscriber(session, actor=actor, subscriber_id=subscriber_id)
    kind = FulfilmentKind(benefit.fulfilment_kind)
    # Only a partner's direct recharge waits; everything else is fulfilled in this transaction.
    immediate = kind != FulfilmentKind.DIRECT_RECHARGE
    grant = Grant(
        idempotency_key=key,
        subscriber_id=subscriber_id,
        benefit_id=benefit.id,
        partner_id=benefit.partner_id,
        source=source,
        status=(GrantStatus.FULFILLED if immediate else GrantStatus.PENDING).value,
        period=month_period(now, zone),
        sale_price_fen=benefit.sale_price_fen,
        cost_price_fen=benefit.cost_price_fen,
        partner_order_id="CP-" + token(9) if kind == FulfilmentKind.COUPON else None,
        valid_until=valid_until,
        created_at=now,
        updated_at=now,
        fulfilled_at=now if immediate else None,
    )
    session.add(grant)
    session.flush()  # the unique idempotency key decides between concurrent requests, here
    _count(session, grant=grant, limits=(benefit.limit_per_month, benefit.limit_total))
    _event(
        session,
        grant_id=grant.id,
        from_status=None,
        to_status="pending",
        reason=f"issued via {source}",
    )
    if kind == FulfilmentKind.DIRECT_RECHARGE:
        # Transactional outbox: the request to the partner commits with the grant or not at all.
        repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.FULFIL,
            at=now,
            payload={"took_stock": benefit.stock_total is not None},
        )
    else:
        if kind == FulfilmentKind.SERVICE:
            grant.partner_order_id = f"WO-{grant.id:08d}"
        done = {
            FulfilmentKind.CARD_CODE: "card code allocated",
            FulfilmentKind.COUPON: "coupon code issued",
            FulfilmentKind.SERVICE: f"in-house work order {grant.partner_order_id} opened",
        }[kind]
        _event(
            session, grant_id=grant.id, from_status="pending", to_status="fulfilled", reason=done
        )
    org.record_audit(
        session,
        actor=actor,
        action="grant.issue",
        target_type="grant",
        target_id=str(grant.id),
        details={
            "subscriber_id": subscriber_id,
            "benefit_id": benefit.id,
            "source": source,
            "status": grant.status,
        },
    )
    # The benefit's stock row is the one every grant of it contends for: taken last, so its lock
    # is held only from here to the commit.
    reservation = catalog.reserve_for_grant(session, benefit=benefit, zone=zone)
    if reservation.card_code_id is not None:
        grant.card_code_id = reservation.card_code_id
    session.flush()  # the card code lands on the grant inside the savepoint
    return grant


# --- issuing many at once -------------------------------------------------------------------------


class GrantRequest(NamedTuple):
    """One benefit for one subscriber under its idempotency key (a member of a group)."""

    subscriber_id: int
    benefit_id: int
    idempotency_key: str


class GroupIssued(NamedTuple):
    """What became of one request of a group: its grant (new or replayed), or why it was refused."""

    grant_id: int | None
    replayed: bool
    refusal: str | None = None


def _needs_one_by_one(benefit: Any) -> bool:
    """Stock, limits and card codes are taken by the conditional per-grant path, atomically."""
    return bool(
        benefit.stock_total is not None
        or benefit.limit_per_month is not None
        or benefit.limit_total is not None
        or benefit.fulfilment_kind == FulfilmentKind.CARD_CODE.value
    )


def issue_grants(
    session: Session,
    *,
    actor: Actor,
    requests: Sequence[GrantRequest],
    source: str,
    zone: str,
) -> list[GroupIssued]:
    """Give a group of benefits, exactly once per key: one statement per table (set-based).

    The same grants, counters, events and outbox messages as `issue_grant` one by one; a
    benefit with stock, limits or card codes goes through `issue_grant` itself, request by request.
    """
    _require_issue(actor)
    source = source.strip()
    if not source or len(source) > 64:
        raise ValidationFailed("source must be 1 to 64 characters", field="source")
    keys = [r.idempotency_key.strip() for r in requests]
    if any(not k or len(k) > 128 for k in keys):
        raise ValidationFailed(
            "idempotency key must be 1 to 128 characters", field="idempotency_key"
        )
    if len(set(keys)) != len(keys):
        raise ValidationFailed("a group repeats an idempotency key", field="idempotency_key")
    out: dict[str, GroupIssued] = {}
    mismatch = "this idempotency key was used for another subscriber or benefit"

    def replay(key: str, found: tuple[int, int, int], r: GrantRequest) -> None:
        gid, sid, bid = found
        same = (sid, bid) == (r.subscriber_id, r.benefit_id)
        out[key] = GroupIssued(gid, True) if same else GroupIssued(None, False, mismatch)

    if not requests:
        return []
    now = clock.now()
    benefits: dict[int, Any] = {}
    refused_benefit: dict[int, str] = {}
    unknown: set[int] = set()
    valid: dict[int, datetime] = {}
    for bid in sorted({r.benefit_id for r in requests}):
        try:
            b = catalog.get_benefit(session, benefit_id=bid)
        except NotFound:
            unknown.add(bid)
            continue
        if not _partner_may_see(session, actor=actor, partner_id=b.partner_id):
            unknown.add(bid)
            continue
        benefits[bid] = b
        valid[bid] = catalog_rules.valid_until(
            kind=ValidityKind(b.validity_kind),
            granted_at=now,
            zone=zone,
            valid_days=b.valid_days,
            fixed_until=b.valid_until,
        )
        if b.status != BenefitStatus.LISTED.value:
            refused_benefit[bid] = f"benefit is {b.status}, not listed"
        elif valid[bid] <= now:
            refused_benefit[bid] = "this benefit's validity has ended"
    repo.begin_write(session)
    # Share locks on the subscribers in id order: a churn or suspension waits, then binds these.
    held = subscribers.hold_subscribers(session, subscriber_ids=[r.subscriber_id for r in requests])
    province = org.visible_province(actor)
    one_by_one = {bid: _needs_one_by_one(b) for bid, b in benefits.items()}
    # A request the group's insert can decide needs no read first: its unique key answers a
    # replay (ON CONFLICT, then one read of the keys that lost). Only the others, which would be
    # refused or go one by one, are looked up now, so that a key used before is still a replay.
    group: list[tuple[str, GrantRequest]] = []
    others: list[tuple[str, GrantRequest]] = []
    for key, r in zip(keys, requests, strict=True):
        found = held.get(r.subscriber_id)
        if (
            r.benefit_id in benefits
            and r.benefit_id not in refused_benefit
            and not one_by_one[r.benefit_id]
            and found is not None
            and (province is None or found[0] == province)
            and found[1] == Status.ACTIVE
        ):
            group.append((key, r))
        else:
            others.append((key, r))
    existing = repo.grants_by_keys(session, [k for k, _ in others]) if others else {}
    pending: list[tuple[str, GrantRequest]] = []
    for key, r in others:
        if key in existing:
            replay(key, existing[key], r)
        else:
            pending.append((key, r))
    for _, r in pending:
        if r.benefit_id in unknown:
            raise NotFound(f"no benefit {r.benefit_id}", field="benefit_id")
    for key, r in pending:
        if r.benefit_id in refused_benefit:
            out[key] = GroupIssued(None, False, refused_benefit[r.benefit_id])
            continue
        found = held.get(r.subscriber_id)
        if found is None:
            raise NotFound(f"no subscriber {r.subscriber_id}", field="subscriber_id")
        if province is not None and found[0] != province:
            raise Forbidden("this subscriber is outside your region")
        if found[1] != Status.ACTIVE:
            out[key] = GroupIssued(None, False, f"subscriber is {found[1]}")
            continue
        try:
            one = issue_grant(
                session,
                actor=actor,
                subscriber_id=r.subscriber_id,
                benefit_id=r.benefit_id,
                source=source,
                idempotency_key=key,
                zone=zone,
            )
        except Conflict as exc:
            out[key] = GroupIssued(None, False, exc.message)
        else:
            out[key] = GroupIssued(one.grant.id, one.replayed)
    made = _create_group(
        session,
        actor=actor,
        group=group,
        benefits=benefits,
        valid=valid,
        source=source,
        zone=zone,
        now=now,
    )
    lost = [(k, r) for k, r in group if k not in made]
    metrics.GRANTS_ISSUED.labels(path="group").inc(len(made))
    winners = repo.grants_by_keys(session, [k for k, _ in lost]) if lost else {}
    for key, r in group:
        if key in made:
            out[key] = GroupIssued(made[key], False)
        else:
            replay(key, winners[key], r)
    return [out[k] for k in keys]


def _create_group(
    session: Session,
    *,
    actor: Actor,
    group: Sequence[tuple[str, GrantRequest]],
    benefits: dict[int, Any],
    valid: dict[int, datetime],
    source: str,
    zone: str,
    now: datetime,
) -> dict[str, int]:
    """Write a group's grants and what goes with them; {key: id} of the grants this call wrote."""
    if not group:
        return {}
    period = month_period(now, zone)
    kinds = {bid: FulfilmentKind(b.fulfilment_kind) for bid, b in benefits.items()}
    # What every grant of a benefit shares, worked out once per benefit rather than per grant.
    shared = {
        bid: (
            b.partner_id,
            source,
            (
                GrantStatus.PENDING
                if kinds[bid] == FulfilmentKind.DIRECT_RECHARGE
                else GrantStatus.FULFILLED
            ).value,
            period,
            b.sale_price_fen,
            b.cost_price_fen,
        )
        for bid, b in benefits.items()
    }
    tails = {
        bid: (valid[bid], now, now, None if k == FulfilmentKind.DIRECT_RECHARGE else now)
        for bid, k in kinds.items()
    }
    coupon = FulfilmentKind.COUPON
    rows = [
        (
            key,
            r.subscriber_id,
            r.benefit_id,
            *shared[r.benefit_id],
            "CP-" + token(9) if kinds[r.benefit_id] == coupon else None,
            *tails[r.benefit_id],
        )
        for key, r in group
    ]
    # The unique idempotency key decides between concurrent groups: a key another group wrote
    # first is not returned, and is answered with that group's grant.
    made = repo.insert_grants(session, rows)
    issued = f"issued via {source}"[:255]
    events: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    orders: list[tuple[int, str]] = []
    counts: Counter[tuple[int, int, str]] = Counter()
    per_benefit: Counter[int] = Counter()
    for key, r in group:
        gid = made.get(key)
        if gid is None:
            continue
        kind = kinds[r.benefit_id]
        counts[(r.subscriber_id, r.benefit_id, period)] += 1
        counts[(r.subscriber_id, r.benefit_id, TOTAL_PERIOD)] += 1
        per_benefit[r.benefit_id] += 1
        events.append((gid, None, "pending", issued, now))
        if kind == FulfilmentKind.DIRECT_RECHARGE:
            # Transactional outbox: the partner requests commit with their grants, in one batch.
            messages.append(
                (
                    gid,
                    OutboxKind.FULFIL.value,
                    OutboxStatus.PENDING.value,
                    0,
                    now,
                    {"took_stock": False},
                    now,
                    now,
                )
            )
        elif kind == FulfilmentKind.SERVICE:
            order = f"WO-{gid:08d}"
            orders.append((gid, order))
            events.append((gid, "pending", "fulfilled", f"in-house work order {order} opened", now))
        else:
            events.append((gid, "pending", "fulfilled", "coupon code issued", now))
    repo.add_to_counters(session, [(s, b, p, n) for (s, b, p), n in counts.items()])
    repo.set_order_ids(session, orders)
    repo.insert_events(session, events)
    repo.insert_messages(session, messages)
    if per_benefit:
        org.record_audit(
            session,
            actor=actor,
            action="grant.issue_group",
            target_type="grants",
            target_id=f"{min(made.values())}-{max(made.values())}",
            details={
                "source": source,
                "grants": sum(per_benefit.values()),
                "by_benefit": {str(b): n for b, n in sorted(per_benefit.items())},
            },
        )
    return made


# --- reading --------------------------------------------------------------------------------------


def get_grant(session: Session, *, actor: Actor, grant_id: int) -> Grant:
    """One grant the actor may see, or 404."""
    _require_read(actor)
    grant = repo.get(session, grant_id)
    if grant is None:
        raise NotFound(f"no grant {grant_id}", field="grant_id")
    _require_visible(session, actor=actor, grant=grant)
    return grant


def grant_history(session: Session, *, actor: Actor, grant_id: int) -> Sequence[GrantEvent]:
    """Every step of one grant, oldest first."""
    get_grant(session, actor=actor, grant_id=grant_id)
    return repo.events(session, [grant_id])


def list_grants(
    session: Session, *, actor: Actor, subscriber_id: int, offset: int = 0, limit: int = 50
) -> tuple[Sequence[Grant], int]:
    """A subscriber's grants, newest first, as far as the actor may see them."""
    _require_read(actor)
    if actor.kind == "staff":
        subscribers.require_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    elif actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber sees only their own grants")
    partner_id = None
    if _is_partner_key(actor):
        partner_id = _own_partner_id(session, actor=actor, subscriber_id=subscriber_id)
        if partner_id is None:
            return [], 0
    return repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=partner_id, offset=offset, limit=limit
    )


def _own_partner_id(session: Session, *, actor: Actor, subscriber_id: int) -> int | None:
    rows, _ = repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=None, offset=0, limit=10_000
    )
    for partner_id in sorted({g.partner_id for g in rows}):
        if catalog.get_partner(session, partner_id=partner_id).code == actor.owner_ref:
            return partner_id
    return None


@dataclass(frozen=True)
class GrantRow:
    """A grant with what a person needs beside it: benefit names, kind, history."""

    grant: Grant
    benefit_code: str
    name_zh: str
    name_en: str
    kind: str
    events: list[GrantEvent] = field(default_factory=list)

    @property
    def can_reveal(self) -> bool:
        return self.grant.card_code_id is not None and self.grant.status in ("fulfilled", "used")


def _rows(session: Session, grants: Sequence[Grant], *, with_events: bool) -> list[GrantRow]:
    history: dict[int, list[GrantEvent]] = {}
    if with_events:
        for e in repo.events(session, [g.id for g in grants]):
            history.setdefault(e.grant_id, []).append(e)
    out = []
    for g in grants:
        b = catalog.get_benefit(session, benefit_id=g.benefit_id)
        out.append(
            GrantRow(
                grant=g,
                benefit_code=b.code,
                name_zh=b.name_zh,
                name_en=b.name_en,
                kind=b.fulfilment_kind,
                events=history.get(g.id, []),
            )
        )
    return out


def my_grants(session: Session, *, subscriber_id: int, limit: int = 100) -> list[GrantRow]:
    """What a signed-in subscriber sees in "my benefits"."""
    rows, _ = repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=None, offset=0, limit=limit
    )
    return _rows(session, rows, with_events=False)


def search_by_phone(
    session: Session, *, actor: Actor, vault: Vault, phone: str, limit: int = 200
) -> tuple[subscribers.SubscriberView, list[GrantRow]]:
    """A subscriber found by phone number (shown masked) with their grants and histories."""
    org.require(actor, Perm.GRANTS_READ)
    sub = subscribers.find_by_phone(session, vault=vault, phone=phone)
    if sub is None:
        if normalize_phone(phone) is None:
            raise ValidationFailed("phone must be an 11-digit mobile number", field="phone")
        raise NotFound("no subscriber with this phone number", field="phone")
    view = subscribers.get_subscriber(session, actor=actor, vault=vault, subscriber_id=sub.id)
    rows, _ = repo.of_subscriber(
        session, subscriber_id=sub.id, partner_id=None, offset=0, limit=limit
    )
    return view, _rows(session, rows, with_events=True)


def reveal_card_code(
    session: Session, *, actor: Actor, vault: Vault, grant_id: int
) -> tuple[str, str | None]:
    """The clear card code and PIN of a grant, for its own subscriber only; audited."""
    grant = repo.get(session, grant_id)
    if actor.kind != "subscriber" or grant is None or actor.id != str(grant.subscriber_id):
        raise NotFound(f"no grant {grant_id}", field="grant_id")
    if grant.card_code_id is None:
        raise Conflict("this benefit has no card code", field="grant_id")
    if grant.status not in (GrantStatus.FULFILLED.value, GrantStatus.USED.value):
        raise Conflict(f"this benefit is {grant.status}", field="grant_id")
    code, pin = catalog.reveal_code(session, vault=vault, code_id=grant.card_code_id)
    org.record_audit(
        session,
        actor=actor,
        action="grant.reveal_code",
        target_type="grant",
        target_id=str(grant.id),
        details={"card_code_id": grant.card_code_id},
    )
    return code, pin


def grants_per_day(
    session: Session, *, actor: Actor, benefit_id: int, days: int, zone: str
) -> dict[str, Any]:
    """Grants of one benefit per operator-local day, as a bar chart spec."""
    _require_read(actor)
    catalog.get_benefit(session, benefit_id=benefit_id)
    if not 1 <= days <= 366:
        raise ValidationFailed("days must be between 1 and 366", field="days")
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    per_day = Counter(
        clock.as_utc(t).astimezone(tz).date()
        for t in repo.created_times(session, benefit_id=benefit_id, since=since)
    )
    dates = [first + timedelta(days=i) for i in range(days)]
    return {
        "kind": "bar",
        "categories": [d.isoformat() for d in dates],
        "series": [{"name": "grants", "data": [per_day.get(d, 0) for d in dates]}],
    }


# --- failing, revoking, pausing -------------------------------------------------------------------


def _fail(session: Session, *, grant: Grant, reason: str) -> bool:
    """pending → failed: give back the limit counters, then the stock (lock order as issuing)."""
    if not repo.move(
        session,
        grant_id=grant.id,
        expected=GrantStatus.PENDING.value,
        target=GrantStatus.FAILED.value,
        at=clock.now(),
        failure_reason=reason[:255],
    ):
        return False
    _uncount(session, grant)
    _release(session, [grant])
    _event(session, grant_id=grant.id, from_status="pending", to_status="failed", reason=reason)
    org.record_audit(
        session,
        actor=SYSTEM,
        action="grant.fail",
        target_type="grant",
        target_id=str(grant.id),
        details={"reason": reason[:255]},
    )
    return True


def _ensure_revoke_message(session: Session, *, grant: Grant) -> bool:
    """Queue one revoke request to a partner that supports it; at most one per grant."""
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    if not (partner.supports_revoke and _has_connector(partner)):
        return False
    if any(
        m.status == OutboxStatus.PENDING.value
        for m in repo.messages_of(session, grant.id, OutboxKind.REVOKE)
    ):
        return False
    repo.add_message(
        session,
        grant_id=grant.id,
        kind=OutboxKind.REVOKE,
        at=clock.now(),
        payload={"order_id": grant.partner_order_id},
    )
    return True


def _cancel_fulfil_messages(session: Session, *, grant: Grant, why: str) -> bool:
    """Stop pending fulfil requests; True if one may already have reached the partner."""
    reached = False
    for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
        if message.attempts > 0:
            reached = True
        if message.status == OutboxStatus.PENDING.value:
            repo.settle_message(
                session,
                message_id=message.id,
                at=clock.now(),
                status=OutboxStatus.DONE,
                error=f"cancelled: {why}",
            )
    return reached


def _revoke(session: Session, *, grant: Grant, reason: str) -> bool:
    """A live grant → revoked; what a pending one reserved comes back; the partner is told."""
    before = grant.status
    if not repo.move(
        session,
        grant_id=grant.id,
        expected=before,
        target=GrantStatus.REVOKED.value,
        at=clock.now(),
        paused_from=None,
    ):
        return False
    was_pending = before == "pending" or (before == "paused" and grant.paused_from == "pending")
    if was_pending:
        reached = _cancel_fulfil_messages(session, grant=grant, why="grant revoked")
        _release(session, [grant])
        if reached:
            _ensure_revoke_message(session, grant=grant)
    else:
        _ensure_revoke_message(session, grant=grant)
    _event(session, grant_id=grant.id, from_status=before, to_status="revoked", reason=reason)
    return True


@dataclass
class Binding:
    """What binding did to one subscriber's grants."""

    revoked: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.revoked) + len(self.paused) + len(self.resumed)


def apply_binding(
    session: Session, *, actor: Actor, subscriber_id: int, status: Status, reason: str
) -> Binding:
    """Make a subscriber's revocable grants follow their network status (绑)."""
    # Every live grant is locked first, in id order, before any stock row: no lock cycle with
    # a worker that holds one grant and then returns its stock.
    grants = repo.lock_live_of_subscriber(session, subscriber_id)
    result = Binding()
    now = clock.now()
    for grant in grants:
        if not catalog.get_benefit(session, benefit_id=grant.benefit_id).revocable:
            continue  # a benefit sold as not revocable stays with the subscriber
        current = GrantStatus(grant.status)
        if status == Status.CHURNED:
            if _revoke(session, grant=grant, reason=reason):
                result.revoked.append(grant.id)
        elif status == Status.SUSPENDED and can_pause(current):
            if repo.move(
                session,
                grant_id=grant.id,
                expected=current.value,
                target=GrantStatus.PAUSED.value,
                at=now,
                paused_from=current.value,
            ):
                _event(
                    session,
                    grant_id=grant.id,
                    from_status=current.value,
                    to_status="paused",
                    reason=reason,
                )
                result.paused.append(grant.id)
        elif status == Status.ACTIVE and current == GrantStatus.PAUSED:
            target = resume_to(grant.paused_from)
            if repo.move(
                session,
                grant_id=grant.id,
                expected=current.value,
                target=target.value,
                at=now,
                paused_from=None,
            ):
                _event(
                    session,
                    grant_id=grant.id,
                    from_status="paused",
                    to_status=target.value,
                    reason=reason,
                )
                result.resumed.append(grant.id)
                if target == GrantStatus.PENDING:
                    _wake_fulfil(session, grant_id=grant.id, at=now)
    if result.changed:
        org.record_audit(
            session,
            actor=actor,
            action="grant.binding",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={
                "status": status.value,
                "revoked": result.revoked,
                "paused": result.paused,
                "resumed": result.resumed,
            },
        )
    return result


def _wake_fulfil(session: Session, *, grant_id: int, at: datetime) -> None:
    """A resumed pending grant's request goes out at once instead of after its deferral."""
    for message in repo.messages_of(session, grant_id, OutboxKind.FULFIL):
        if message.status == OutboxStatus.PENDING.value and message.next_attempt_at > at:
            message.next_attempt_at = at


@dataclass(frozen=True)
class StatusChanged:
    """A subscriber's status change and the binding it caused."""

    event: Any
    binding: Binding
    coupon_binding: coupons.CouponBinding | None = None


def change_subscriber_status(
    session: Session, *, actor: Actor, subscriber_id: int, status: Status, reason: str, source: str
) -> StatusChanged:
    """Change a subscriber's status and bind their grants and coupons to it in one transaction."""
    # Entry points call membership.service.change_status, which calls this and then ends or
    # re-derives the tier: membership sits above grants, so the whole path is assembled there.
    event = subscribers.change_status(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        status=status,
        reason=reason,
        source=source,
    )
    why = f"subscriber {status.value}: {reason.strip()}"[:255]
    binding = apply_binding(
        session, actor=actor, subscriber_id=subscriber_id, status=status, reason=why
    )
    # Coupons follow too: a churned subscriber's unredeemed coupon is void at every counter.
    bound = coupons.bind_coupons(
        session, actor=actor, subscriber_id=subscriber_id, status=status, reason=why
    )
    return StatusChanged(event=event, binding=binding, coupon_binding=bound)


@dataclass(frozen=True)
class VerifyRow:
    """One subscriber binding verification changed or could not change."""

    subscriber_id: int
    ledger_status: str
    mart_status: str
    action: str
    revoked: int = 0
    paused: int = 0
    resumed: int = 0
    note: str = ""


def _chunks(pairs: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _needs_binding(status: Status, live: set[str]) -> bool:
    if status == Status.CHURNED:
        return bool(live)
    if status == Status.SUSPENDED:
        return bool(live & {"pending", "fulfilled"})
    return "paused" in live


class ChangesStatus(Protocol):
    """The status change path the caller owns (membership's: grants, coupons and the tier)."""

    def __call__(
        self,
        session: Session,
        *,
        actor: Actor,
        subscriber_id: int,
        status: Status,
        reason: str,
        source: str,
    ) -> Any: ...


def verify_binding(
    session: Session,
    *,
    actor: Actor,
    snapshot: Iterable[tuple[int, str]],
    change_status: ChangesStatus,
) -> list[VerifyRow]:
    """Bring ledger statuses in line with a mart snapshot, then bind every live grant to them.

    A status that differs goes through `change_status` — the one path every entry point uses
    (membership.service.change_status), so a churn found here also ends the membership tier.
    """
    report: list[VerifyRow] = []
    for chunk in _chunks(snapshot, 1000):
        ledger = subscribers.subscriber_statuses(session, subscriber_ids=[sid for sid, _ in chunk])
        for sid, raw in chunk:
            current = ledger.get(sid)
            if current is None or current.value == raw:
                continue
            try:
                target = Status(raw)
            except ValueError:
                report.append(VerifyRow(sid, current.value, raw, "skipped", note="unknown status"))
                continue
            repo.begin_write(session)
            try:
                with session.begin_nested():
                    changed = change_status(
                        session,
                        actor=actor,
                        subscriber_id=sid,
                        status=target,
                        reason="reconciled with the mart snapshot",
                        source="binding",
                    )
            except Conflict as exc:
                report.append(VerifyRow(sid, current.value, raw, "skipped", note=exc.message))
                continue
            b = changed.binding
            report.append(
                VerifyRow(
                    sid,
                    current.value,
                    raw,
                    "status changed",
                    len(b.revoked),
                    len(b.paused),
                    len(b.resumed),
                )
            )
    # Grants that escaped binding (statuses loaded in bulk, an interrupted change) are bound now.
    after = 0
    for _ in range(100_000):  # bounded: each round moves `after` forward
        ids = repo.live_subscriber_ids(session, after=after, limit=1000)
        if not ids:
            break
        after = ids[-1]
        live = repo.live_statuses(session, ids)
        for sid, status in sorted(
            subscribers.subscriber_statuses(session, subscriber_ids=ids).items()
        ):
            if not _needs_binding(status, live.get(sid, set())):
                continue
            b = apply_binding(
                session,
                actor=actor,
                subscriber_id=sid,
                status=status,
                reason=f"binding verified: subscriber is {status.value}",
            )
            if b.changed:
                report.append(
                    VerifyRow(
                        sid,
                        status.value,
                        status.value,
                        "grants bound",
                        len(b.revoked),
                        len(b.paused),
                        len(b.resumed),
                    )
                )
    org.record_audit(
        session,
        actor=actor,
        action="binding.verify",
        target_type="subscriber",
        target_id="*",
        details={"changed": len([r for r in report if r.action != "skipped"]), "rows": len(report)},
    )
    return report


# --- expiry ---------------------------------------------------------------------------------------


def expire_grants(session: Session, *, now: datetime, batch: int = 500) -> int:
    """Fulfilled and paused grants past their validity become expired; returns how many."""
    expired = 0
    for status in (GrantStatus.FULFILLED, GrantStatus.PAUSED):
        for _ in range(1_000_000 // batch):  # bounded; each round moves its rows out of `status`
            ids = repo.expirable_ids(session, now=now, status=status.value, limit=batch)
            if not ids:
                break
            for grant_id in ids:
                grant = repo.lock(session, grant_id)
                if grant is None or grant.status != status.value:
                    continue
                was_pending = grant.paused_from == "pending"
                if not repo.move(
                    session,
                    grant_id=grant_id,
                    expected=status.value,
                    target=GrantStatus.EXPIRED.value,
                    at=now,
                    paused_from=None,
                ):
                    continue
                if was_pending:
                    _cancel_fulfil_messages(session, grant=grant, why="grant expired")
                    _release(session, [grant])
                _event(
                    session,
                    grant_id=grant_id,
                    from_status=status.value,
                    to_status="expired",
                    reason="validity ended",
                )
                expired += 1
    if expired:
        org.record_audit(
            session,
            actor=SYSTEM,
            action="grant.expire",
            target_type="grant",
            target_id="*",
            details={"count": expired, "at": now.isoformat()},
        )
    return expired


# --- the outbox: claiming, delivering, recording --------------------------------------------------


def claim_messages(
    session: Session, *, worker: str, now: datetime, lease_s: float, limit: int
) -> list[int]:
    """Lease up to `limit` due messages for one worker; two workers never hold the same one."""
    until = now + timedelta(seconds=lease_s)
    # Leased in id order, so two workers claiming overlapping sets cannot deadlock.
    candidates = sorted(repo.due_message_ids(session, now=now, limit=limit))
    return [
        i
        for i in candidates
        if repo.lease(session, message_id=i, worker=worker, now=now, until=until)
    ]


def subscriber_ref(vault: Vault, *, partner_code: str, subscriber_id: int) -> str:
    """The opaque id a partner knows a subscriber by: never the phone, different per partner."""
    return vault.lookup.digest(f"partner-subscriber:{partner_code}:{subscriber_id}")[:32]


def prepare_delivery(
    session: Session,
    *,
    vault: Vault,
    message_id: int,
    worker: str,
    callback_base: str,
    defer_s: float,
) -> Delivery | None:
    """The signed request for a leased message, or None when there is nothing to send now."""
    message = repo.get_message(session, message_id)
    if message is None or message.status != "pending" or message.leased_by != worker:
        return None
    grant = repo.get_fresh(session, message.grant_id)
    assert grant is not None  # a foreign key keeps the grant
    now = clock.now()
    if message.kind == OutboxKind.FULFIL.value:
        if grant.status == GrantStatus.PAUSED.value:
            # Not an attempt: the grant waits for its subscriber's reactivation.
            repo.settle_message(
                session,
                message_id=message.id,
                at=now,
                status=OutboxStatus.PENDING,
                worker=worker,
                next_attempt_at=now + timedelta(seconds=defer_s),
                error="waiting: grant is paused",
                attempts_delta=-1,
            )
            return None
        if grant.status != GrantStatus.PENDING.value:
            repo.settle_message(
                session,
                message_id=message.id,
                at=now,
                status=OutboxStatus.DONE,
                worker=worker,
                error=f"nothing to send: grant is {grant.status}",
            )
            return None
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    secret = _partner_secret(vault, partner)
    if not _has_connector(partner) or secret is None:
        record_outcome(
            session,
            message_id=message.id,
            worker=worker,
            outcome=Outcome(OutcomeKind.REJECTED, error="partner has no HTTP connector or secret"),
            backoff_base_s=0,
            callback_wait_s=0,
        )
        return None
    benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
    body: dict[str, Any] = {
        "action": message.kind,
        "grant_id": grant.id,
        "idempotency_key": grant.idempotency_key,
        "benefit_code": benefit.code,
        "subscriber_ref": subscriber_ref(
            vault, partner_code=partner.code, subscriber_id=grant.subscriber_id
        ),
        "callback_url": f"{callback_base.rstrip('/')}/v1/partners/{partner.code}/callbacks",
    }
    if message.kind == OutboxKind.REVOKE.value:
        body["order_id"] = grant.partner_order_id or message.payload.get("order_id")
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    # A revoke has its own key: the partner must not answer it with the original order.
    key = grant.idempotency_key if message.kind == "fulfil" else f"{grant.idempotency_key}:revoke"
    return Delivery(
        message_id=message.id,
        grant_id=grant.id,
        partner_id=partner.id,
        kind=message.kind,
        url=partner.connector_url,
        body=raw,
        headers={
            "content-type": "application/json",
            IDEMPOTENCY_HEADER: key,
            SIGNATURE_HEADER: sign(secret, raw, timestamp=int(now.timestamp())),
        },
        timeout_s=partner.connector_timeout_ms / 1000,
    )


def _confirm(session: Session, *, grant: Grant, order_id: str | None, reason: str) -> str:
    """The partner fulfilled a grant: record it once, whatever state the grant reached meanwhile."""
    now = clock.now()
    if order_id:
        repo.set_order_id(session, grant_id=grant.id, order_id=order_id)
    if repo.move(
        session,
        grant_id=grant.id,
        expected=GrantStatus.PENDING.value,
        target=GrantStatus.FULFILLED.value,
        at=now,
        fulfilled_at=now,
    ):
        _event(
            session, grant_id=grant.id, from_status="pending", to_status="fulfilled", reason=reason
        )
        return "fulfilled"
    fresh = repo.get_fresh(session, grant.id)
    assert fresh is not None
    if fresh.status == GrantStatus.PAUSED.value and repo.set_paused_from(
        session, grant_id=grant.id, expected="pending", target="fulfilled"
    ):
        _event(
            session,
            grant_id=grant.id,
            from_status="paused",
            to_status="paused",
            reason=f"{reason} while paused",
        )
        return "fulfilled while paused"
    if fresh.status == GrantStatus.REVOKED.value:
        # Revoked while the request was in flight: the partner's order must be undone too.
        _ensure_revoke_message(session, grant=fresh)
        return "revoked meanwhile"
    if fresh.status == GrantStatus.FAILED.value:
        _event(
            session,
            grant_id=grant.id,
            from_status="failed",
            to_status="failed",
            reason=f"partner fulfilled after the grant failed (order {order_id}); re-drive it",
        )
        return "late"
    return "already"


def record_outcome(
    session: Session,
    *,
    message_id: int,
    worker: str,
    outcome: Outcome,
    backoff_base_s: float,
    callback_wait_s: float,
    defer_s: float = 0.0,
) -> str:
    """Apply what a delivery achieved to its message and grant; returns what happened."""
    message = repo.get_message(session, message_id)
    if message is None:
        return "gone"
    # The grant row first, then the message: the same order as binding and callbacks.
    grant = repo.lock(session, message.grant_id)
    assert grant is not None
    message = repo.get_message(session, message_id)
    assert message is not None
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    now = clock.now()
    fulfil = message.kind == OutboxKind.FULFIL.value
    if outcome.kind == OutcomeKind.DEFERRED:
        ok = repo.settle_message(
            session,
            message_id=message.id,
            at=now,
            status=OutboxStatus.PENDING,
            worker=worker,
            next_attempt_at=now + timedelta(seconds=defer_s),
            error=outcome.error,
            attempts_delta=-1,
        )
        return "deferred" if ok else "settled meanwhile"
    if outcome.kind == OutcomeKind.FULFILLED:
        what = (
            _confirm(session, grant=grant, order_id=outcome.order_id, reason="partner confirmed")
            if fulfil
            else "revoked at partner"
        )
        repo.settle_message(session, message_id=message.id, at=now, status=OutboxStatus.DONE)
        return what
    if fulfil and outcome.order_id:
        repo.set_order_id(session, grant_id=grant.id, order_id=outcome.order_id)
    exhausted = message.attempts >= partner.connector_max_attempts
    if outcome.kind == OutcomeKind.REJECTED or exhausted:
        error = outcome.error or "no confirmation"
        if outcome.kind == OutcomeKind.ACCEPTED:
            error = "partner accepted but never confirmed"
        if not repo.settle_message(
            session,
            message_id=message.id,
            at=now,
            status=OutboxStatus.DEAD,
            worker=worker,
            error=f"after {message.attempts} attempt(s): {error}",
        ):
            return "settled meanwhile"
        metrics.PARTNER_ERRORS.labels(partner=partner.code, outcome="dead").inc()
        if fulfil and _fail(session, grant=grant, reason=error):
            # A timed-out attempt may have created an order after all: have it cancelled.
            _ensure_revoke_message(session, grant=grant)
        return "dead"
    if outcome.kind == OutcomeKind.ACCEPTED:
        wait = max(callback_wait_s, backoff_s(message.attempts, base_s=backoff_base_s))
        error = "accepted; waiting for the partner's callback"
    else:
        wait = backoff_s(message.attempts, base_s=backoff_base_s)
        error = outcome.error or "retry"
    ok = repo.settle_message(
        session,
        message_id=message.id,
        at=now,
        status=OutboxStatus.PENDING,
        worker=worker,
        next_attempt_at=now + timedelta(seconds=wait),
        error=error,
    )
    if not ok:
        return "settled meanwhile"
    if outcome.kind != OutcomeKind.ACCEPTED:
        metrics.PARTNER_ERRORS.labels(partner=partner.code, outcome="retry").inc()
    return "accepted" if outcome.kind == OutcomeKind.ACCEPTED else "retry"


def outbox_counts(session: Session) -> dict[str, int]:
    """Messages per outbox status (for the worker's summary)."""
    return repo.outbox_counts(session)


# --- partner callbacks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackResult:
    """How a partner's callback was taken: applied, or acknowledged as a duplicate."""

    grant_id: int
    outcome: str
    duplicate: bool


def _callback_fields(body: bytes) -> tuple[str, int, str, str | None]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValidationFailed("body must be JSON", field="body") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object", field="body")
    callback_id = data.get("callback_id")
    if not isinstance(callback_id, str) or not 1 <= len(callback_id) <= 128:
        raise ValidationFailed("callback_id must be 1 to 128 characters", field="callback_id")
    grant_id = data.get("grant_id")
    if not isinstance(grant_id, int) or isinstance(grant_id, bool) or grant_id < 1:
        raise ValidationFailed("grant_id must be a positive integer", field="grant_id")
    status = data.get("status")
    if status not in ("fulfilled", "failed"):
        raise ValidationFailed("status must be fulfilled or failed", field="status")
    order = data.get("order_id")
    return callback_id, grant_id, str(status), str(order)[:128] if order is not None else None


def receive_callback(
    session: Session, *, vault: Vault, partner_code: str, body: bytes, signature: str | None
) -> CallbackResult:
    """Take a partner's signed callback once; a duplicate is acknowledged and changes nothing."""
    callback_id, grant_id, status, order_id = _callback_fields(body)
    grant = repo.get(session, grant_id)
    partner = catalog.get_partner(session, partner_id=grant.partner_id) if grant else None
    if grant is None or partner is None or partner.code != partner_code:
        raise NotFound(f"no grant {grant_id} of partner {partner_code}", field="grant_id")
    secret = _partner_secret(vault, partner)
    problem = (
        "partner has no shared secret"
        if secret is None
        else signature_problem(secret, body, signature, now_ts=int(clock.now().timestamp()))
    )
    if problem:
        raise Unauthenticated(problem, field="signature")
    # Locked only once the partner is known to be who it says: the grant row, then messages.
    grant = repo.lock(session, grant_id)
    assert grant is not None
    now = clock.now()
    repo.begin_write(session)
    try:
        # The unique (partner, callback id) decides: the second copy cannot insert.
        with session.begin_nested():
            row = repo.add_callback(
                session,
                partner_id=partner.id,
                callback_id=callback_id,
                grant_id=grant.id,
                outcome="received",
                at=now,
            )
            session.flush()
    except IntegrityError:
        return CallbackResult(grant_id=grant.id, outcome="duplicate", duplicate=True)
    if status == "fulfilled":
        outcome = _confirm(session, grant=grant, order_id=order_id, reason="partner callback")
        for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
            if message.status == OutboxStatus.PENDING.value:
                repo.settle_message(
                    session,
                    message_id=message.id,
                    at=now,
                    status=OutboxStatus.DONE,
                    error="confirmed by callback",
                )
    else:
        outcome = "ignored"
        if _fail(session, grant=grant, reason="partner reported failure"):
            outcome = "failed"
            # Into the dead-letter list, where staff can re-drive it.
            for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
                if message.status == OutboxStatus.PENDING.value:
                    repo.settle_message(
                        session,
                        message_id=message.id,
                        at=now,
                        status=OutboxStatus.DEAD,
                        error="partner reported failure",
                    )
    row.outcome = outcome[:32]
    org.record_audit(
        session,
        actor=_partner_actor(partner),
        action="grant.callback",
        target_type="grant",
        target_id=str(grant.id),
        details={"callback_id": callback_id, "status": status, "outcome": outcome},
    )
    return CallbackResult(grant_id=grant.id, outcome=outcome, duplicate=False)


# --- the dead-letter list -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A message that ran out of attempts, with its grant."""

    message: OutboxMessage
    grant: Grant
    benefit_code: str
    partner_code: str


def dead_letters(
    session: Session, *, actor: Actor, offset: int = 0, limit: int = 50
) -> tuple[list[DeadLetter], int]:
    """Messages that gave up, newest first (hq_admin)."""
    org.require(actor, Perm.GRANTS_REDRIVE)
    rows, total = repo.dead_page(session, offset=offset, limit=limit)
    out = []
    for message, grant in rows:
        benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
        partner = catalog.get_partner(session, partner_id=grant.partner_id)
        out.append(DeadLetter(message, grant, benefit.code, partner.code))
    return out, total


def redrive(session: Session, *, actor: Actor, message_id: int, zone: str) -> OutboxMessage:
    """Send a dead message again: a failed grant goes back to pending and re-reserves its stock."""
    org.require(actor, Perm.GRANTS_REDRIVE)
    message = repo.get_message(session, message_id)
    if message is None:
        raise NotFound(f"no outbox message {message_id}", field="message_id")
    grant = repo.lock(session, message.grant_id)
    assert grant is not None
    now = clock.now()
    # Compare-and-set on the dead message: a double click re-drives once.
    if not repo.settle_message(
        session,
        message_id=message.id,
        at=now,
        status=OutboxStatus.DONE,
        expected=OutboxStatus.DEAD,
        error=f"re-driven by {actor.name}",
    ):
        raise Conflict("this message is not in the dead-letter list any more", field="message_id")
    if message.kind == OutboxKind.FULFIL.value:
        if not repo.move(
            session,
            grant_id=grant.id,
            expected=GrantStatus.FAILED.value,
            target=GrantStatus.PENDING.value,
            at=now,
            failure_reason=None,
        ):
            raise Conflict(f"grant {grant.id} is {grant.status}, not failed", field="message_id")
        # A revoke queued when the grant failed must not cancel the order we are about to make.
        for pending in repo.messages_of(session, grant.id, OutboxKind.REVOKE):
            if pending.status == OutboxStatus.PENDING.value:
                repo.settle_message(
                    session,
                    message_id=pending.id,
                    at=now,
                    status=OutboxStatus.DONE,
                    error="cancelled: grant re-driven",
                )
        benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
        _count(session, grant=grant, limits=(benefit.limit_per_month, benefit.limit_total))
        reservation = catalog.reserve_for_grant(session, benefit=benefit, zone=zone)
        new = repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.FULFIL,
            at=now,
            payload={"took_stock": reservation.took_stock, "redrive_of": message.id},
        )
        _event(
            session,
            grant_id=grant.id,
            from_status="failed",
            to_status="pending",
            reason=f"re-driven by {actor.name}",
        )
    else:
        new = repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.REVOKE,
            at=now,
            payload=dict(message.payload),
        )
    session.flush()  # the new message's id goes into the audit entry
    org.record_audit(
        session,
        actor=actor,
        action="grant.redrive",
        target_type="grant",
        target_id=str(grant.id),
        details={"dead_message": message.id, "new_message": new.id, "kind": message.kind},
    )
    return new


# ---- reads for campaign responses ----------------------------------------------------------------


@dataclass(frozen=True)
class GrantUse:
    """A grant the subscriber used: a response a campaign of that benefit may count."""

    id: int  # the grant event's id (the cursor)
    subscriber_id: int
    at: datetime
    value_fen: int
    ref: str  # "benefit:<id>"


def uses_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[GrantUse]:
    """Grant uses after a grant-event id, oldest first."""
    return [
        GrantUse(i, s, at, 0, f"benefit:{b}")
        for i, s, b, at in repo.uses_after(session, after_id=after_id, limit=limit)
    ]


# --- the console home -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantActivity:
    """Grants issued today and this month (with each day of the month), and failed deliveries."""

    today: int
    month: int
    days: list[str]
    per_day: list[int]
    failed_month: int
    dead_letters: int


def grant_activity(session: Session, *, actor: Actor, zone: str) -> GrantActivity:
    """Grants per operator-local day this month and delivery failures, in the actor's region."""
    import itertools

    from sqlalchemy import and_, case, func, select

    org.require(actor, Perm.DASHBOARD)
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    first = today.replace(day=1)
    dates = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    edges = [datetime.combine(d, datetime.min.time(), tzinfo=tz) for d in dates]
    edges.append(edges[-1] + timedelta(days=1))
    # One scan of the month's grants with a sum per day: the same SQL on SQLite and PostgreSQL.
    days = [
        func.coalesce(
            func.sum(case((and_(Grant.created_at >= lo, Grant.created_at < hi), 1), else_=0)),
            0,
        )
        for lo, hi in itertools.pairwise(edges)
    ]
    failed = func.coalesce(
        func.sum(case((Grant.status == GrantStatus.FAILED.value, 1), else_=0)), 0
    )
    stmt = select(*days, failed).where(Grant.created_at >= edges[0], Grant.created_at < edges[-1])
    dead = (
        select(func.count())
        .select_from(OutboxMessage)
        .join(Grant, Grant.id == OutboxMessage.grant_id)
        .where(OutboxMessage.status == OutboxStatus.DEAD.value)
    )
    province = org.visible_province(actor)
    if province is not None:
        members = subscribers.ids_in_province(province=province)
        stmt = stmt.where(Grant.subscriber_id.in_(members))
        dead = dead.where(Grant.subscriber_id.in_(members))
    row = session.execute(stmt).one()
    per_day = [int(n) for n in row[:-1]]
    return GrantActivity(
        today=per_day[-1],
        month=sum(per_day),
        days=[d.isoformat() for d in dates],
        per_day=per_day,
        failed_month=int(row[-1]),
        dead_letters=int(session.scalar(dead) or 0),
    )
