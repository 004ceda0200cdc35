"""Queries over the catalog; the stock and code statements are atomic on their own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    Date,
    LargeBinary,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from perkflow.catalog.models import Benefit, CardCode, CardCodeLot, Partner
from perkflow.catalog.rules import BenefitStatus, CodeStatus


def get_benefit(session: Session, benefit_id: int) -> Benefit | None:
    return session.get(Benefit, benefit_id)


def get_partner(session: Session, partner_id: int) -> Partner | None:
    return session.get(Partner, partner_id)


def take_stock(session: Session, benefit_id: int) -> bool:
    """Decrement limited stock if any is left; True when this call got a unit."""
    result = session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.stock_remaining > 0)
        .values(stock_remaining=Benefit.stock_remaining - 1)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def give_back_stock(session: Session, benefit_id: int) -> None:
    """Return one unit of limited stock (a failed or revoked-before-fulfilment grant)."""
    session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.stock_remaining.is_not(None))
        .values(stock_remaining=Benefit.stock_remaining + 1)
        .execution_options(synchronize_session=False)
    )


def allocate_code(session: Session, benefit_id: int, *, today: date, at: datetime) -> int | None:
    """Mark one available, unexpired code allocated and return its id, or None if none is left."""
    # SKIP LOCKED lets concurrent allocations on PostgreSQL take different codes instead of
    # queueing on the same row; SQLite serialises writers and ignores the clause.
    candidate = (
        select(CardCode.id)
        .where(
            CardCode.benefit_id == benefit_id,
            CardCode.status == CodeStatus.AVAILABLE.value,
            or_(CardCode.expires_on.is_(None), CardCode.expires_on >= today),
        )
        .order_by(CardCode.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.execute(
        update(CardCode)
        .where(CardCode.id == candidate, CardCode.status == CodeStatus.AVAILABLE.value)
        .values(status=CodeStatus.ALLOCATED.value, allocated_at=at)
        .returning(CardCode.id)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return int(row[0]) if row else None


def free_code(session: Session, code_id: int) -> None:
    """Put an allocated code back in the pool."""
    session.execute(
        update(CardCode)
        .where(CardCode.id == code_id, CardCode.status == CodeStatus.ALLOCATED.value)
        .values(status=CodeStatus.AVAILABLE.value, allocated_at=None)
        .execution_options(synchronize_session=False)
    )


def get_code(session: Session, code_id: int) -> CardCode | None:
    return session.get(CardCode, code_id)


def get_benefit_by_code(session: Session, code: str) -> Benefit | None:
    return session.scalar(select(Benefit).where(Benefit.code == code))


def get_partner_by_code(session: Session, code: str) -> Partner | None:
    return session.scalar(select(Partner).where(Partner.code == code))


def list_partners(session: Session) -> Sequence[Partner]:
    return session.scalars(select(Partner).order_by(Partner.code)).all()


def partners_by_ids(session: Session, ids: set[int]) -> dict[int, Partner]:
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Partner).where(Partner.id.in_(ids)))}


def _is_low() -> ColumnElement[bool]:
    return Benefit.stock_remaining.is_not(None) & (
        Benefit.stock_remaining <= Benefit.low_stock_threshold
    )


def benefit_page(
    session: Session,
    *,
    category: str | None,
    status: str | None,
    partner_id: int | None,
    low_stock_only: bool,
    offset: int,
    limit: int,
) -> tuple[Sequence[Benefit], int]:
    stmt = select(Benefit)
    if category:
        stmt = stmt.where(Benefit.category == category)
    if status:
        stmt = stmt.where(Benefit.status == status)
    if partner_id is not None:
        stmt = stmt.where(Benefit.partner_id == partner_id)
    if low_stock_only:
        stmt = stmt.where(_is_low())
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Benefit.code).offset(offset).limit(limit)).all()
    return rows, total


def benefit_counts(session: Session) -> dict[int, int]:
    rows = session.execute(select(Benefit.partner_id, func.count()).group_by(Benefit.partner_id))
    return {int(pid): int(n) for pid, n in rows}


def low_stock(session: Session) -> Sequence[Benefit]:
    """Listed benefits at or below their low-stock threshold, emptiest first."""
    return session.scalars(
        select(Benefit)
        .where(Benefit.status == BenefitStatus.LISTED.value, _is_low())
        .order_by(Benefit.stock_remaining, Benefit.code)
    ).all()


def compare_and_set_status(
    session: Session, *, benefit_id: int, expected: str, target: str, at: datetime
) -> bool:
    """Move a benefit's status only if nobody changed it meanwhile."""
    result = session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.status == expected)
        .values(status=target, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def resize_stock(session: Session, *, benefit_id: int, new_total: int, at: datetime) -> bool:
    """Set limited stock to `new_total`, moving what remains by the same delta; False if that
    would leave less than the units already taken (or the stock became unlimited meanwhile)."""
    # The delta is computed from the row as it is now, inside the one statement: a grant taking a
    # unit concurrently is counted, never overwritten.
    remaining_after = Benefit.stock_remaining + (new_total - Benefit.stock_total)
    result = session.execute(
        update(Benefit)
        .where(
            Benefit.id == benefit_id,
            Benefit.stock_total.is_not(None),
            remaining_after >= 0,
        )
        .values(stock_total=new_total, stock_remaining=remaining_after, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def limit_stock(session: Session, *, benefit_id: int, total: int, at: datetime) -> bool:
    """Give an unlimited benefit a stock of `total` units from now on."""
    result = session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.stock_total.is_(None))
        .values(stock_total=total, stock_remaining=total, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def unlimit_stock(session: Session, *, benefit_id: int, at: datetime) -> None:
    """Make a benefit's stock unlimited."""
    session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id)
        .values(stock_total=None, stock_remaining=None, updated_at=at)
        .execution_options(synchronize_session=False)
    )


def add_stock(session: Session, *, benefit_id: int, units: int, at: datetime) -> None:
    """Raise stock by `units` (imported card codes) in one statement."""
    session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id)
        .values(
            stock_total=func.coalesce(Benefit.stock_total, 0) + units,
            stock_remaining=func.coalesce(Benefit.stock_remaining, 0) + units,
            updated_at=at,
        )
        .execution_options(synchronize_session=False)
    )


def insert_codes(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert card codes, skipping any already in the pool; the hashes actually inserted."""
    if not rows:
        return set()
    table = cast(Table, CardCode.__table__)
    if session.get_bind().dialect.name == "postgresql":
        return _insert_codes_pg(session, table, rows)
    # The unique (benefit_id, code_hash) index decides duplicates, also against a concurrent import.
    stmt = (
        sqlite_insert(table)
        .on_conflict_do_nothing(index_elements=["benefit_id", "code_hash"])
        .returning(table.c.code_hash)
    )
    return {row[0] for row in session.execute(stmt, rows)}


def _insert_codes_pg(session: Session, table: Table, rows: list[dict[str, Any]]) -> set[str]:
    # One statement per batch with one array per column: the statement text stays small and the
    # same, instead of thousands of VALUES tuples the driver would parse again for every batch.
    first = rows[0]
    source = (
        func.unnest(
            cast_(bindparam("code_enc", [r["code_enc"] for r in rows]), ARRAY(LargeBinary)),
            cast_(bindparam("pin_enc", [r["pin_enc"] for r in rows]), ARRAY(LargeBinary)),
            cast_(bindparam("code_hash", [r["code_hash"] for r in rows]), ARRAY(String)),
            cast_(bindparam("expires_on", [r["expires_on"] for r in rows]), ARRAY(Date)),
        )
        .table_valued("code_enc", "pin_enc", "code_hash", "expires_on")
        .render_derived(name="src")
    )
    chosen = select(
        literal(first["lot_id"]),
        literal(first["benefit_id"]),
        source.c.code_enc,
        source.c.pin_enc,
        source.c.code_hash,
        source.c.expires_on,
        literal(CodeStatus.AVAILABLE.value),
    )
    stmt = (
        pg_insert(table)
        .from_select(
            ["lot_id", "benefit_id", "code_enc", "pin_enc", "code_hash", "expires_on", "status"],
            chosen,
        )
        .on_conflict_do_nothing(index_elements=["benefit_id", "code_hash"])
        .returning(table.c.code_hash)
    )
    return {row[0] for row in session.execute(stmt)}


def delete_lot(session: Session, lot_id: int) -> None:
    """Remove a lot and its codes (a refused file)."""
    session.execute(delete(CardCode).where(CardCode.lot_id == lot_id))
    session.execute(delete(CardCodeLot).where(CardCodeLot.id == lot_id))


def lots_of(session: Session, benefit_id: int) -> Sequence[CardCodeLot]:
    return session.scalars(
        select(CardCodeLot)
        .where(CardCodeLot.benefit_id == benefit_id)
        .order_by(CardCodeLot.id.desc())
    ).all()


def code_counts(session: Session, benefit_id: int, *, today: date) -> dict[str, int]:
    """Codes of a benefit per status, plus available codes already expired."""
    expired = case((CardCode.expires_on.is_not(None) & (CardCode.expires_on < today), 1), else_=0)
    rows = session.execute(
        select(CardCode.status, func.count(), func.sum(expired))
        .where(CardCode.benefit_id == benefit_id)
        .group_by(CardCode.status)
    ).all()
    counts = {s.value: 0 for s in CodeStatus} | {"expired": 0}
    for status, n, n_expired in rows:
        counts[str(status)] = int(n)
        if status == CodeStatus.AVAILABLE.value:
            counts["expired"] = int(n_expired or 0)
    return counts
