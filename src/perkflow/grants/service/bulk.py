"""Grants use cases: issuing many at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from perkflow.catalog import rules as catalog_rules
from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus, FulfilmentKind, ValidityKind
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import repository as repo
from perkflow.grants.rules import (
    TOTAL_PERIOD,
    GrantStatus,
    OutboxKind,
    OutboxStatus,
    month_period,
)
from perkflow.kit import clock, metrics
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

from .access import _partner_may_see, _require_issue
from .issuing import issue_grant

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
