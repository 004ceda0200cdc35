"""Membership use cases: what people see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.membership import repository as repo
from perkflow.membership import rules
from perkflow.membership.models import (
    BundleGrant,
    MemberTier,
    PointsEntry,
    TierChange,
)
from perkflow.membership.rules import (
    Cadence,
    ChangeKind,
    Mode,
)
from perkflow.org.rules import Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _in_scope, _require_national, _require_read
from .bundles import check_month
from .program import ItemView, _facts, _items_by_tier, _spec_of, _values, _views, load

# --- what people see -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PickGroup:
    """A pick group of this cycle: its options and what the member has chosen."""

    name: str
    choose: int
    cycle: str
    options: list[ItemView]
    picked: list[BundleGrant]

    @property
    def open(self) -> bool:
        return len(self.picked) < self.choose


@dataclass(frozen=True)
class MemberCard:
    """What a subscriber sees in the member center."""

    subscriber_id: int
    status: Status
    tier: MemberTier | None
    next_tier: MemberTier | None
    progress: rules.Progress | None
    pending_tier: MemberTier | None
    downgrade_due_at: datetime | None
    values: dict[str, Any]
    auto_items: list[ItemView]
    picks: list[PickGroup]
    annual_value_fen: int
    used_value_fen: int
    points: int
    points_value_fen: int
    multiplier_pct: int
    entries: list[PointsEntry]
    expiring: list[tuple[date, int]]
    history: list[TierChange]


def member_card(session: Session, *, subscriber_id: int, zone: str) -> MemberCard:
    """The member center of one subscriber: tier, progress, bundle, picks, points."""
    loaded = load(session)
    facts = _facts(session, subscriber_id)
    values = _values(session, facts, zone=zone, mart=None, extra=set())
    member = repo.member(session, subscriber_id)
    tier = loaded.all_tiers.get(member.tier_id) if member and member.tier_id else None
    level = tier.level if tier is not None else 0
    higher = [t for t in loaded.tiers if t.level > level]
    next_tier = higher[0] if higher else None
    progress = None
    if next_tier is not None:
        spec = next(s for s in loaded.specs if s.code == next_tier.code)
        progress = rules.progress_to(spec, values)
    items = _items_by_tier(session, [tier.id]).get(tier.id, []) if tier is not None else []
    views = _views(session, items)
    now = clock.now()
    year = now.astimezone(ZoneInfo(zone)).year
    month_cycles = [f"{year}-{m:02d}" for m in range(1, 13)] + [str(year)]
    current = repo.bundle_grants_of(
        session,
        subscriber_id=subscriber_id,
        cycles=[rules.cycle_of(now, zone, c) for c in Cadence],
    )
    groups: dict[str, PickGroup] = {}
    for v in views:
        if v.item.mode != Mode.PICK.value:
            continue
        name = v.item.pick_group or ""
        cycle = rules.cycle_of(now, zone, Cadence(v.item.cadence))
        if name not in groups:
            groups[name] = PickGroup(
                name=name,
                choose=v.item.choose,
                cycle=cycle,
                options=[],
                picked=[
                    g for g in current if g.slot.startswith(f"pick:{name}:") and g.cycle == cycle
                ],
            )
        groups[name].options.append(v)
    balance = repo.points_balance(session, subscriber_id)
    tz = ZoneInfo(zone)
    return MemberCard(
        subscriber_id=subscriber_id,
        status=facts.status,
        tier=tier,
        next_tier=next_tier,
        progress=progress,
        pending_tier=(
            loaded.all_tiers.get(member.pending_tier_id)
            if member and member.downgrade_due_at and member.pending_tier_id
            else None
        ),
        downgrade_due_at=member.downgrade_due_at if member else None,
        values=values,
        auto_items=[v for v in views if v.item.mode == Mode.AUTO.value],
        picks=list(groups.values()),
        annual_value_fen=rules.annual_value_fen(_spec_of(i) for i in items),
        used_value_fen=repo.bundle_value_since(
            session, subscriber_id=subscriber_id, cycles=month_cycles
        ),
        points=balance,
        points_value_fen=rules.points_value_fen(
            balance, value_fen_per_100=loaded.points.value_fen_per_100
        ),
        multiplier_pct=tier.points_multiplier_pct if tier is not None else 100,
        entries=list(repo.entries_of(session, subscriber_id, limit=20)),
        expiring=[
            ((clock.as_utc(when) - timedelta(seconds=1)).astimezone(tz).date(), n)
            for when, n in repo.expiring_of(session, subscriber_id)
        ],
        history=list(repo.changes_of(session, subscriber_id, limit=20)),
    )


def member_for_staff(
    session: Session, *, actor: Actor, subscriber_id: int, zone: str
) -> MemberCard:
    """A member's card as staff or an operator system may see it (region scope applies)."""
    _require_read(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    return member_card(session, subscriber_id=subscriber_id, zone=zone)


def members_page(session: Session, *, after: int, limit: int) -> list[tuple[int, int]]:
    """(subscriber, tier) of members holding a tier after `after`, in id order (keyset paging)."""
    return repo.members_with_tier(session, after=after, limit=limit)


def count_members(session: Session) -> int:
    """Members holding a tier."""
    return sum(n for t, n in repo.tier_counts(session).items() if t is not None)


def tier_distribution(session: Session, *, actor: Actor) -> list[tuple[str, str, str, int]]:
    """(code, name_zh, name_en, members) per active tier, lowest level first."""
    _require_national(actor)
    counts = repo.tier_counts(session)
    return [(t.code, t.name_zh, t.name_en, counts.get(t.id, 0)) for t in load(session).tiers]


@dataclass(frozen=True)
class Migration:
    """Who moved up or down between tiers in a month."""

    month: str
    rows: list[tuple[str, str, str, int]]  # kind, from code, to code, members
    up: int
    down: int
    scheduled: int


def tier_migration(
    session: Session, *, actor: Actor, zone: str, month: str | None = None
) -> Migration:
    """Tier moves of a month (default: last month), operator-local."""
    _require_national(actor)
    tz = ZoneInfo(zone)
    if month is None:
        first_this = clock.now().astimezone(tz).date().replace(day=1)
        month = (first_this - timedelta(days=1)).strftime("%Y-%m")
    parsed = rules.parse_month(check_month(month))
    assert parsed is not None
    y, m = parsed
    since = datetime(y, m, 1, tzinfo=tz)
    until = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    tiers = {t.id: t.code for t in load(session).all_tiers.values()}
    rows = []
    up = down = scheduled = 0
    counts = repo.change_counts(session, since=since, until=until)
    for kind, f, t, n in sorted(counts, key=lambda r: (r[0], r[1] or 0, r[2] or 0)):
        rows.append((kind, tiers.get(f, "—") if f else "—", tiers.get(t, "—") if t else "—", n))
        if kind in (ChangeKind.JOIN, ChangeKind.UPGRADE):
            up += n
        elif kind in (ChangeKind.DOWNGRADE, ChangeKind.LEAVE):
            down += n
        elif kind == ChangeKind.DOWNGRADE_SCHEDULED:
            scheduled += n
    return Migration(month=month, rows=rows, up=up, down=down, scheduled=scheduled)


@dataclass(frozen=True)
class Liability:
    """Points outstanding and what they are worth; when they expire; the ledger's account totals."""

    members: int
    points: int
    value_fen: int
    value_fen_per_100: int
    by_expiry: list[tuple[date, int, int]]
    accounts: dict[str, int]


def points_liability(session: Session, *, actor: Actor, zone: str) -> Liability:
    """The points liability report."""
    _require_national(actor)
    loaded = load(session)
    per = loaded.points.value_fen_per_100
    members, outstanding = repo.outstanding(session)
    tz = ZoneInfo(zone)
    merged: dict[date, int] = {}
    for when, n in repo.expiring_by_year(session):
        day = (clock.as_utc(when) - timedelta(seconds=1)).astimezone(tz).date()
        merged[day] = merged.get(day, 0) + n
    return Liability(
        members=members,
        points=outstanding,
        value_fen=rules.points_value_fen(outstanding, value_fen_per_100=per),
        value_fen_per_100=per,
        by_expiry=[
            (d, n, rules.points_value_fen(n, value_fen_per_100=per))
            for d, n in sorted(merged.items())
        ],
        accounts=repo.account_totals(session),
    )
