"""Programme-level uplift: everything marketing did, against the universal control group.

The universal control group (UCG) is held out of every campaign for a rotation period. Over a
period, the subscribers marketing could reach (everyone else) are compared with the group on what
they did in the ledger: claimed a coupon, redeemed one (with the order's amount as revenue) or
used a granted benefit. The figures are per subscriber, so the comparison is of two random
samples of the same base: the difference is what all campaigns together changed.

What it does not claim: which campaign did it, or anything about a period in which the group's
members changed (a rotation) — the period is one rotation period by default and is cut to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from perkflow.audience import holdout, marts
from perkflow.audience import service as audience
from perkflow.coupons import service as coupons
from perkflow.errors import ValidationFailed
from perkflow.grants import service as grants
from perkflow.insights import rules
from perkflow.insights.rules import Arm, Comparison
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

OUTCOMES = ("claim", "redemption", "grant_use")
_PAGE = 5_000


@dataclass(frozen=True)
class Programme:
    """Marketed subscribers against the universal control group over one period."""

    first_day: date
    last_day: date
    period: int  # the rotation period the days fall in
    share_bp: int  # the group's share of everyone
    province_code: str | None  # a province's view, or None for the whole operator
    marketed: Arm  # subscribers, those who did anything, revenue in fen
    held_out: Arm
    comparison: Comparison  # responders and revenue per subscriber, marketed against the UCG
    outcomes: tuple[str, ...] = OUTCOMES


def _facts(
    fetch: Callable[..., Sequence[Any]], session: Session, start: datetime, end: datetime
) -> Iterable[Any]:
    after = 0
    while True:
        rows = fetch(session, after_id=after, limit=_PAGE)
        if not rows:
            return
        for r in rows:
            if start <= r.at < end:
                yield r
        after = max(r.id for r in rows)
        if len(rows) < _PAGE:
            return


def programme_uplift(
    session: Session,
    *,
    actor: Actor,
    mart: Mart,
    vault: Vault,
    since: date | None = None,
    until: date | None = None,
) -> Programme:
    """Responses and revenue per subscriber: marketed population against the UCG.

    ``since``/``until`` (inclusive days, UTC) default to the current rotation period up to today;
    both must fall in one rotation period, where the group's members stay the same.
    """
    org.require_perm_or_scope(actor, perm=Perm.CAMPAIGNS_READ, scope="campaigns:read")
    setting = audience.get_universal_control(session)
    today = clock.today("UTC")
    period = setting.period(since or today)
    first, last = setting.period_bounds(period)
    since = since or first
    until = until or min(today, last)
    if until < since:
        raise ValidationFailed("until is on or after since", field="until")
    if setting.period(until) != period or since < first:
        raise ValidationFailed(
            f"since and until fall in one rotation period ({first} to {last})", field="until"
        )
    province = org.visible_province(actor)
    ids: dict[int, str | None] = {}
    if mart.has(marts.PROFILE):
        p = mart.table(marts.PROFILE)
        if province is not None:
            p = p.filter(p.province_code == province)
        table = p.select("subscriber_id", "province_code").to_pyarrow()
        ids = dict(
            zip(
                table["subscriber_id"].to_pylist(),
                table["province_code"].to_pylist(),
                strict=True,
            )
        )
    held = holdout.members(setting, key=vault.assignment_key, subscriber_ids=ids, on=since)
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC)
    responded: set[int] = set()
    revenue: dict[int, int] = {}
    for fetch in (coupons.claims_since, coupons.redemptions_since, grants.uses_since):
        for fact in _facts(fetch, session, start, end):
            if fact.subscriber_id in ids:
                responded.add(fact.subscriber_id)
                revenue[fact.subscriber_id] = revenue.get(fact.subscriber_id, 0) + fact.value_fen

    def arm(members: Iterable[int]) -> Arm:
        group = list(members)
        return Arm(
            contacts=len(group),
            responders=sum(s in responded for s in group),
            revenue_fen=sum(revenue.get(s, 0) for s in group),
        )

    marketed = arm(s for s in ids if s not in held)
    held_out = arm(held)
    return Programme(
        first_day=since,
        last_day=until,
        period=period,
        share_bp=setting.share_bp,
        province_code=province,
        marketed=marketed,
        held_out=held_out,
        comparison=rules.compare(marketed, held_out),
    )


def programme_dict(p: Programme) -> dict[str, Any]:
    """The programme report as plain JSON."""
    c = p.comparison

    def cell(a: Arm) -> dict[str, Any]:
        return {
            "subscribers": a.contacts,
            "responders": a.responders,
            "rate": a.rate,
            "revenue_fen": a.revenue_fen,
            "revenue_per_subscriber_fen": a.revenue_fen / a.contacts if a.contacts else None,
        }

    per_sub = None
    if p.marketed.contacts and p.held_out.contacts:
        per_sub = (
            p.marketed.revenue_fen / p.marketed.contacts
            - p.held_out.revenue_fen / p.held_out.contacts
        )
    return {
        "first_day": p.first_day.isoformat(),
        "last_day": p.last_day.isoformat(),
        "period": p.period,
        "universal_control_share_bp": p.share_bp,
        "province_code": p.province_code,
        "outcomes": list(p.outcomes),
        "marketed": cell(p.marketed),
        "universal_control": cell(p.held_out),
        "uplift": {
            "absolute": c.absolute,
            "ci95": list(c.ci95) if c.ci95 else None,
            "relative": c.relative,
            "p_value": c.p_value,
            "significant": c.significant,
        },
        "incremental": {
            "responders": c.incremental_responses,
            "revenue_fen": c.incremental_revenue_fen,
            "revenue_per_subscriber_fen": per_sub,
        },
    }
