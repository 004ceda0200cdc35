"""Queries over membership: balances move by conditional UPDATEs, duplicates meet unique keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow import bulk
from perkflow.membership.models import (
    BundleGrant,
    BundleItem,
    Member,
    MembershipProgram,
    MemberTier,
    PointsAccount,
    PointsEntry,
    PointsLot,
    PointsPosting,
    PrepaidAccount,
    PrepaidEvent,
    TierChange,
)

PROGRAM_ID = 1


def begin_write(session: Session) -> None:
    """Open the database transaction now, so a SAVEPOINT that follows nests inside it."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    # pysqlite starts a transaction only before its first write; a SAVEPOINT issued earlier
    # would start one of its own and its RELEASE would commit it. IMMEDIATE takes the write lock.
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _insert(session: Session, model: Any) -> Insert:
    dialect = session.connection().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# ---- program and tiers ------------------------------------------------------------------------


def program(session: Session) -> MembershipProgram | None:
    return session.get(MembershipProgram, PROGRAM_ID)


def tiers(session: Session, *, active_only: bool = True) -> Sequence[MemberTier]:
    stmt = select(MemberTier).order_by(MemberTier.level, MemberTier.id)
    if active_only:
        stmt = stmt.where(MemberTier.status == "active")
    return session.scalars(stmt).all()


def tier_by_code(session: Session, code: str) -> MemberTier | None:
    return session.scalar(select(MemberTier).where(MemberTier.code == code))


def items(session: Session, *, tier_ids: Sequence[int] | None = None) -> Sequence[BundleItem]:
    """Active bundle items (of some tiers), in their stated order."""
    stmt = select(BundleItem).where(BundleItem.active.is_(True))
    if tier_ids is not None:
        stmt = stmt.where(BundleItem.tier_id.in_(list(tier_ids)))
    return session.scalars(stmt.order_by(BundleItem.tier_id, BundleItem.position)).all()


def item(session: Session, item_id: int) -> BundleItem | None:
    return session.get(BundleItem, item_id)


def retire_items(session: Session, tier_id: int) -> None:
    session.execute(
        update(BundleItem)
        .where(BundleItem.tier_id == tier_id, BundleItem.active.is_(True))
        .values(active=False)
        .execution_options(synchronize_session=False)
    )


# ---- members ----------------------------------------------------------------------------------


def member(session: Session, subscriber_id: int) -> Member | None:
    return session.scalar(
        select(Member)
        .where(Member.subscriber_id == subscriber_id)
        .execution_options(populate_existing=True)
    )


def ensure_members(session: Session, *, subscriber_ids: Sequence[int], at: datetime) -> None:
    """A member row (no tier yet) for each id that has none; concurrent callers both succeed."""
    if not subscriber_ids:
        return
    rows = [
        {"subscriber_id": sid, "tier_id": None, "since": at, "evaluated_at": at}
        for sid in subscriber_ids
    ]
    stmt = _insert(session, Member).values(rows)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["subscriber_id"]))  # type: ignore[attr-defined]


def lock_members(session: Session, subscriber_ids: Sequence[int]) -> Sequence[Member]:
    """Member rows, row-locked in primary-key order (two batches never deadlock)."""
    return session.scalars(
        select(Member)
        .where(Member.subscriber_id.in_(list(subscriber_ids)))
        .order_by(Member.subscriber_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()


def set_member(
    session: Session,
    *,
    subscriber_id: int,
    tier_id: int | None,
    pending_tier_id: int | None,
    due: datetime | None,
    at: datetime,
    since: datetime | None,
) -> None:
    values: dict[str, Any] = {
        "tier_id": tier_id,
        "pending_tier_id": pending_tier_id,
        "downgrade_due_at": due,
        "evaluated_at": at,
    }
    if since is not None:
        values["since"] = since
    session.execute(
        update(Member)
        .where(Member.subscriber_id == subscriber_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def add_changes(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(TierChange), list(rows))


def changes_of(session: Session, subscriber_id: int, limit: int = 50) -> Sequence[TierChange]:
    return session.scalars(
        select(TierChange)
        .where(TierChange.subscriber_id == subscriber_id)
        .order_by(TierChange.id.desc())
        .limit(limit)
    ).all()


def member_states(session: Session) -> Iterator[tuple[int, int | None, int | None, Any]]:
    """(subscriber, tier, pending tier, due) of every member, streamed."""
    stmt = select(
        Member.subscriber_id, Member.tier_id, Member.pending_tier_id, Member.downgrade_due_at
    ).execution_options(yield_per=20_000)
    for sid, tier_id, pending, due in session.execute(stmt):
        yield int(sid), tier_id, pending, due


def due_downgrades(session: Session, *, now: datetime, limit: int) -> list[int]:
    return [
        int(s)
        for s in session.scalars(
            select(Member.subscriber_id)
            .where(Member.downgrade_due_at.is_not(None), Member.downgrade_due_at <= now)
            .order_by(Member.subscriber_id)
            .limit(limit)
        )
    ]


def members_with_tier(session: Session, *, after: int, limit: int) -> list[tuple[int, int]]:
    """(subscriber, tier) of members holding a tier, in id order after `after` (keyset paging)."""
    rows = session.execute(
        select(Member.subscriber_id, Member.tier_id)
        .where(Member.tier_id.is_not(None), Member.subscriber_id > after)
        .order_by(Member.subscriber_id)
        .limit(limit)
    )
    return [(int(s), int(t or 0)) for s, t in rows]


def tier_counts(session: Session) -> dict[int | None, int]:
    rows = session.execute(select(Member.tier_id, func.count()).group_by(Member.tier_id))
    return {t: int(n) for t, n in rows}


def change_counts(
    session: Session, *, since: datetime, until: datetime
) -> list[tuple[str, int | None, int | None, int]]:
    rows = session.execute(
        select(TierChange.kind, TierChange.from_tier_id, TierChange.to_tier_id, func.count())
        .where(TierChange.at >= since, TierChange.at < until)
        .group_by(TierChange.kind, TierChange.from_tier_id, TierChange.to_tier_id)
    )
    return [(str(k), f, t, int(n)) for k, f, t, n in rows]


# ---- prepaid ----------------------------------------------------------------------------------


def prepaid_event_by_key(session: Session, key: str) -> PrepaidEvent | None:
    return session.scalar(select(PrepaidEvent).where(PrepaidEvent.idempotency_key == key))


def ensure_prepaid_account(session: Session, *, subscriber_id: int, at: datetime) -> None:
    stmt = _insert(session, PrepaidAccount).values(
        subscriber_id=subscriber_id, balance_fen=0, updated_at=at
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["subscriber_id"]))  # type: ignore[attr-defined]


def move_prepaid(session: Session, *, subscriber_id: int, amount_fen: int, at: datetime) -> bool:
    """Add to (or take from) a prepaid balance; False when it would go below zero."""
    result = session.execute(
        update(PrepaidAccount)
        .where(
            PrepaidAccount.subscriber_id == subscriber_id,
            PrepaidAccount.balance_fen + amount_fen >= 0,
        )
        .values(balance_fen=PrepaidAccount.balance_fen + amount_fen, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def prepaid_balance(session: Session, subscriber_id: int) -> int:
    value = session.scalar(
        select(PrepaidAccount.balance_fen).where(PrepaidAccount.subscriber_id == subscriber_id)
    )
    return int(value or 0)


def prepaid_balances(session: Session) -> Iterator[tuple[int, int]]:
    stmt = select(PrepaidAccount.subscriber_id, PrepaidAccount.balance_fen).execution_options(
        yield_per=50_000
    )
    for sid, bal in session.execute(stmt):
        yield int(sid), int(bal)


# ---- bundle grants ----------------------------------------------------------------------------


def add_bundle_grant(session: Session, row: dict[str, Any]) -> bool:
    """Record a bundle benefit for a cycle slot; False when the slot was already taken."""
    stmt = _insert(session, BundleGrant).values(**row)
    stmt = stmt.on_conflict_do_nothing(index_elements=["subscriber_id", "cycle", "slot"])  # type: ignore[attr-defined]
    return bool(_rowcount(session.execute(stmt)))


BUNDLE_COLUMNS = (
    "subscriber_id",
    "tier_id",
    "bundle_item_id",
    "cycle",
    "slot",
    "grant_id",
    "value_fen",
    "status",
    "at",
)


def add_bundle_grants(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Record a group's bundle benefits (BUNDLE_COLUMNS) in one statement; taken slots stay."""
    bulk.insert(
        session,
        BundleGrant.__table__,
        BUNDLE_COLUMNS,
        rows,
        conflict=["subscriber_id", "cycle", "slot"],
    )


def taken_slots(
    session: Session, *, subscriber_ids: Sequence[int], cycles: Sequence[str]
) -> set[tuple[int, str, str]]:
    """(subscriber, cycle, slot) already recorded for some members in some cycles."""
    t = BundleGrant.__table__
    out: set[tuple[int, str, str]] = set()
    ids = sorted(set(subscriber_ids))
    for start in range(0, len(ids), 1000):  # bounded IN lists
        rows = session.execute(
            select(t.c.subscriber_id, t.c.cycle, t.c.slot).where(
                t.c.subscriber_id.in_(ids[start : start + 1000]), t.c.cycle.in_(list(cycles))
            )
        )
        out.update((int(s), str(c), str(sl)) for s, c, sl in rows)
    return out


def bundle_grants_of(
    session: Session, *, subscriber_id: int, cycles: Sequence[str]
) -> Sequence[BundleGrant]:
    return session.scalars(
        select(BundleGrant)
        .where(BundleGrant.subscriber_id == subscriber_id, BundleGrant.cycle.in_(list(cycles)))
        .order_by(BundleGrant.id)
    ).all()


def bundle_value_since(session: Session, *, subscriber_id: int, cycles: Sequence[str]) -> int:
    value = session.scalar(
        select(func.coalesce(func.sum(BundleGrant.value_fen), 0)).where(
            BundleGrant.subscriber_id == subscriber_id,
            BundleGrant.cycle.in_(list(cycles)),
            BundleGrant.status == "granted",
        )
    )
    return int(value or 0)


def forfeit_picks(session: Session, *, subscriber_id: int, cycles: Sequence[str]) -> int:
    result = session.execute(
        update(BundleGrant)
        .where(
            BundleGrant.subscriber_id == subscriber_id,
            BundleGrant.cycle.in_(list(cycles)),
            BundleGrant.slot.like("pick:%"),
            BundleGrant.status == "granted",
        )
        .values(status="forfeited")
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def count_bundle_grants(session: Session, *, cycle: str) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(BundleGrant).where(BundleGrant.cycle == cycle)
        )
        or 0
    )


# ---- points -----------------------------------------------------------------------------------


def entry_by_key(session: Session, key: str) -> PointsEntry | None:
    return session.scalar(
        select(PointsEntry)
        .where(PointsEntry.idempotency_key == key)
        .execution_options(populate_existing=True)
    )


def ensure_points_account(session: Session, *, subscriber_id: int, at: datetime) -> None:
    stmt = _insert(session, PointsAccount).values(
        subscriber_id=subscriber_id, balance=0, updated_at=at
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["subscriber_id"]))  # type: ignore[attr-defined]


def move_points(session: Session, *, subscriber_id: int, points: int, at: datetime) -> bool:
    """Add to (or take from) a balance in one conditional UPDATE; False if it would go below 0."""
    result = session.execute(
        update(PointsAccount)
        .where(
            PointsAccount.subscriber_id == subscriber_id,
            PointsAccount.balance + points >= 0,
        )
        .values(balance=PointsAccount.balance + points, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def lock_points_balance(session: Session, subscriber_id: int) -> int:
    """The balance, row-locked until commit (the one lock every points write takes first)."""
    value = session.scalar(
        select(PointsAccount.balance)
        .where(PointsAccount.subscriber_id == subscriber_id)
        .with_for_update()
    )
    return int(value or 0)


def points_balance(session: Session, subscriber_id: int) -> int:
    value = session.scalar(
        select(PointsAccount.balance).where(PointsAccount.subscriber_id == subscriber_id)
    )
    return int(value or 0)


def add_entry(session: Session, entry: PointsEntry, *, counter: str, member: str) -> PointsEntry:
    """An entry and its two postings (member and counter account) that sum to zero."""
    session.add(entry)
    session.flush()  # the unique idempotency key decides between concurrent writers, here
    session.add_all(
        [
            PointsPosting(
                entry_id=entry.id,
                subscriber_id=entry.subscriber_id,
                account=member,
                points=entry.points,
            ),
            PointsPosting(
                entry_id=entry.id,
                subscriber_id=entry.subscriber_id,
                account=counter,
                points=-entry.points,
            ),
        ]
    )
    return entry


def add_lot(session: Session, lot: PointsLot) -> None:
    session.add(lot)


def lot_of_entry(session: Session, entry_id: int) -> PointsLot | None:
    return session.scalar(
        select(PointsLot)
        .where(PointsLot.entry_id == entry_id)
        .execution_options(populate_existing=True)
    )


def open_lots(session: Session, subscriber_id: int, *, now: datetime) -> Sequence[PointsLot]:
    """Unexpired lots with points left, first to expire first (FIFO)."""
    return session.scalars(
        select(PointsLot)
        .where(
            PointsLot.subscriber_id == subscriber_id,
            PointsLot.remaining > 0,
            PointsLot.expires_at > now,
        )
        .order_by(PointsLot.expires_at, PointsLot.id)
        .execution_options(populate_existing=True)
    ).all()


def all_open_lots(session: Session, subscriber_id: int) -> Sequence[PointsLot]:
    return session.scalars(
        select(PointsLot)
        .where(PointsLot.subscriber_id == subscriber_id, PointsLot.remaining > 0)
        .order_by(PointsLot.expires_at, PointsLot.id)
        .execution_options(populate_existing=True)
    ).all()


def take_from_lot(session: Session, *, lot_id: int, expected: int, take: int) -> bool:
    result = session.execute(
        update(PointsLot)
        .where(PointsLot.id == lot_id, PointsLot.remaining == expected)
        .values(remaining=expected - take)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def expired_lot_owners(session: Session, *, now: datetime, after: int, limit: int) -> list[int]:
    rows = session.scalars(
        select(PointsLot.subscriber_id)
        .where(
            PointsLot.expires_at <= now,
            PointsLot.remaining > 0,
            PointsLot.subscriber_id > after,
        )
        .group_by(PointsLot.subscriber_id)
        .order_by(PointsLot.subscriber_id)
        .limit(limit)
    )
    return [int(s) for s in rows]


def expired_lots(session: Session, *, subscriber_id: int, now: datetime) -> Sequence[PointsLot]:
    return session.scalars(
        select(PointsLot)
        .where(
            PointsLot.subscriber_id == subscriber_id,
            PointsLot.expires_at <= now,
            PointsLot.remaining > 0,
        )
        .order_by(PointsLot.expires_at, PointsLot.id)
        .execution_options(populate_existing=True)
    ).all()


def entries_of(session: Session, subscriber_id: int, *, limit: int) -> Sequence[PointsEntry]:
    return session.scalars(
        select(PointsEntry)
        .where(PointsEntry.subscriber_id == subscriber_id)
        .order_by(PointsEntry.id.desc())
        .limit(limit)
    ).all()


def ledger_sum(session: Session, subscriber_id: int) -> int:
    value = session.scalar(
        select(func.coalesce(func.sum(PointsPosting.points), 0)).where(
            PointsPosting.subscriber_id == subscriber_id, PointsPosting.account == "member"
        )
    )
    return int(value or 0)


def outstanding(session: Session) -> tuple[int, int]:
    """(members with points, points outstanding)."""
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(PointsAccount.balance), 0)).where(
            PointsAccount.balance > 0
        )
    ).one()
    return int(row[0]), int(row[1])


def account_totals(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(PointsPosting.account, func.sum(PointsPosting.points)).group_by(
            PointsPosting.account
        )
    )
    return {str(a): int(n or 0) for a, n in rows}


def expiring_by_year(session: Session) -> list[tuple[datetime, int]]:
    rows = session.execute(
        select(PointsLot.expires_at, func.sum(PointsLot.remaining))
        .where(PointsLot.remaining > 0)
        .group_by(PointsLot.expires_at)
        .order_by(PointsLot.expires_at)
    )
    return [(e, int(n or 0)) for e, n in rows]


def expiring_of(session: Session, subscriber_id: int) -> list[tuple[datetime, int]]:
    rows = session.execute(
        select(PointsLot.expires_at, func.sum(PointsLot.remaining))
        .where(PointsLot.subscriber_id == subscriber_id, PointsLot.remaining > 0)
        .group_by(PointsLot.expires_at)
        .order_by(PointsLot.expires_at)
    )
    return [(e, int(n or 0)) for e, n in rows]
