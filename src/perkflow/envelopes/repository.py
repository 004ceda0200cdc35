"""Queries over red envelopes; every limit statement is atomic on its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.envelopes.models import (
    EnvelopeCounter,
    EnvelopeCredit,
    EnvelopeDraw,
    EnvelopeProgram,
    EnvelopeTier,
    ShareEnvelope,
    ShareHelp,
)


def _upsert(session: Session, model: Any) -> Any:
    """The dialect's INSERT … ON CONFLICT construct (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def get_program(session: Session, program_id: int) -> EnvelopeProgram | None:
    return session.get(EnvelopeProgram, program_id, populate_existing=True)


def list_programs(
    session: Session, *, owner_regions: Sequence[str] | None, statuses: Sequence[str] | None
) -> Sequence[EnvelopeProgram]:
    stmt = select(EnvelopeProgram)
    if owner_regions is not None:
        stmt = stmt.where(EnvelopeProgram.owner_region.in_(owner_regions))
    if statuses is not None:
        stmt = stmt.where(EnvelopeProgram.status.in_(statuses))
    return session.scalars(stmt.order_by(EnvelopeProgram.id.desc())).all()


def tiers(session: Session, program_id: int, *, lock: bool = False) -> Sequence[EnvelopeTier]:
    stmt = (
        select(EnvelopeTier)
        .where(EnvelopeTier.program_id == program_id)
        .order_by(EnvelopeTier.tier)
        .execution_options(populate_existing=True)
    )
    if lock:
        # Tier rows locked in primary-key order, after the programme row: no deadlock cycle.
        stmt = stmt.with_for_update()
    return session.scalars(stmt).all()


def reserve_draws(session: Session, *, program_id: int, n: int) -> tuple[int, int, int, str] | None:
    """Take the next n draw numbers, locking the programme row: (last no, spent, budget, seed)."""
    # This UPDATE takes the row lock every later step relies on: until commit no other draw
    # can read or move `spent_fen`, so settling against the budget is race-free.
    row = session.execute(
        update(EnvelopeProgram)
        .where(EnvelopeProgram.id == program_id)
        .values(draws=EnvelopeProgram.draws + n)
        .returning(
            EnvelopeProgram.draws,
            EnvelopeProgram.spent_fen,
            EnvelopeProgram.budget_fen,
            EnvelopeProgram.seed,
        )
        .execution_options(synchronize_session=False)
    ).first()
    return (int(row[0]), int(row[1]), int(row[2]), str(row[3])) if row else None


def set_spent(session: Session, *, program_id: int, spent_fen: int) -> None:
    session.execute(
        update(EnvelopeProgram)
        .where(EnvelopeProgram.id == program_id)
        .values(spent_fen=spent_fen)
        .execution_options(synchronize_session=False)
    )


def set_won_count(session: Session, *, program_id: int, tier: int, won: int) -> None:
    session.execute(
        update(EnvelopeTier)
        .where(EnvelopeTier.program_id == program_id, EnvelopeTier.tier == tier)
        .values(won_count=won)
        .execution_options(synchronize_session=False)
    )


def insert_draws(session: Session, rows: list[dict[str, Any]]) -> None:
    session.execute(insert(EnvelopeDraw), rows)


def bump_envelope_counter(
    session: Session, *, program_id: int, subscriber_id: int, n: int, limit: int
) -> bool:
    """Count n uses of a programme by a subscriber unless that passes the limit."""
    if n > limit:
        return False
    stmt = (
        _upsert(session, EnvelopeCounter)
        .values(program_id=program_id, subscriber_id=subscriber_id, count=n)
        .on_conflict_do_update(
            index_elements=["program_id", "subscriber_id"],
            set_={"count": EnvelopeCounter.count + n},
            where=EnvelopeCounter.count + n <= limit,
        )
        .returning(EnvelopeCounter.count)
    )
    return session.execute(stmt).first() is not None


def reserve_budget(session: Session, *, program_id: int, amount_fen: int) -> bool:
    """Take an amount from the budget only if it stays within the cap."""
    # Conditional UPDATE: the cap is checked and spent in one statement.
    result = session.execute(
        update(EnvelopeProgram)
        .where(
            EnvelopeProgram.id == program_id,
            EnvelopeProgram.spent_fen + amount_fen <= EnvelopeProgram.budget_fen,
        )
        .values(spent_fen=EnvelopeProgram.spent_fen + amount_fen)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def release_budget(session: Session, *, program_id: int, amount_fen: int) -> None:
    session.execute(
        update(EnvelopeProgram)
        .where(EnvelopeProgram.id == program_id)
        .values(spent_fen=EnvelopeProgram.spent_fen - amount_fen)
        .execution_options(synchronize_session=False)
    )


def get_tier(session: Session, *, program_id: int, tier: int) -> EnvelopeTier | None:
    return session.get(EnvelopeTier, (program_id, tier))


def insert_credit(session: Session, values: dict[str, Any]) -> bool:
    """Credit a prize unless its draw or envelope was credited already; True when inserted."""
    stmt = (
        _upsert(session, EnvelopeCredit)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(EnvelopeCredit.id)
    )
    return session.execute(stmt).first() is not None


def insert_credits(session: Session, rows: list[dict[str, Any]]) -> None:
    """Credit freshly drawn prizes (their draw numbers are new, so none can exist yet)."""
    if rows:
        session.execute(insert(EnvelopeCredit), rows)


def credit_of_draw(session: Session, *, program_id: int, draw_no: int) -> EnvelopeCredit | None:
    return session.scalar(
        select(EnvelopeCredit)
        .where(EnvelopeCredit.program_id == program_id, EnvelopeCredit.draw_no == draw_no)
        .execution_options(populate_existing=True)
    )


def credit_of_envelope(session: Session, envelope_id: int) -> EnvelopeCredit | None:
    return session.scalar(
        select(EnvelopeCredit)
        .where(EnvelopeCredit.envelope_id == envelope_id)
        .execution_options(populate_existing=True)
    )


def credits_of(session: Session, *, subscriber_id: int, limit: int = 100) -> list[EnvelopeCredit]:
    """A subscriber's credited prizes, newest first."""
    return list(
        session.scalars(
            select(EnvelopeCredit)
            .where(EnvelopeCredit.subscriber_id == subscriber_id)
            .order_by(EnvelopeCredit.id.desc())
            .limit(limit)
        )
    )


def credits_of_draws(
    session: Session, *, program_id: int, draw_nos: Sequence[int]
) -> list[EnvelopeCredit]:
    if not draw_nos:
        return []
    return list(
        session.scalars(
            select(EnvelopeCredit).where(
                EnvelopeCredit.program_id == program_id, EnvelopeCredit.draw_no.in_(draw_nos)
            )
        )
    )


def cash_balance(session: Session, subscriber_id: int) -> int:
    """The sum of a subscriber's cash credits, in fen."""
    total = session.scalar(
        select(func.sum(EnvelopeCredit.amount_fen)).where(
            EnvelopeCredit.subscriber_id == subscriber_id, EnvelopeCredit.kind == "cash"
        )
    )
    return int(total or 0)


def share_programs_past_deadline(session: Session, *, now: datetime) -> list[int]:
    """Share programmes that ended (by status or end time) and still hold locked envelopes."""
    locked = (
        select(ShareEnvelope.id)
        .where(ShareEnvelope.program_id == EnvelopeProgram.id, ShareEnvelope.status == "locked")
        .exists()
    )
    return [
        int(i)
        for i in session.scalars(
            select(EnvelopeProgram.id)
            .where(
                EnvelopeProgram.kind == "share",
                (EnvelopeProgram.status == "ended") | (EnvelopeProgram.ends_at <= now),
                locked,
            )
            .order_by(EnvelopeProgram.id)
        )
    ]


def lock_program(session: Session, program_id: int) -> None:
    """Row-lock a programme until commit (its budget row)."""
    session.execute(
        select(EnvelopeProgram.id).where(EnvelopeProgram.id == program_id).with_for_update()
    )


def expire_locked_envelopes(session: Session, *, program_id: int) -> list[tuple[int, int, int]]:
    """Move a programme's locked envelopes to expired: (id, owner, amount) of each one moved."""
    # Conditional UPDATE: an envelope a help opens meanwhile is not locked any more and stays
    # opened; one expired by a concurrent run is skipped, so its amount comes back once.
    rows = session.execute(
        update(ShareEnvelope)
        .where(ShareEnvelope.program_id == program_id, ShareEnvelope.status == "locked")
        .values(status="expired")
        .returning(ShareEnvelope.id, ShareEnvelope.owner_id, ShareEnvelope.amount_fen)
        .execution_options(synchronize_session=False)
    ).all()
    return [(int(i), int(o), int(a)) for i, o, a in rows]


def draws_of(session: Session, *, subscriber_id: int, limit: int = 50) -> Sequence[EnvelopeDraw]:
    return session.scalars(
        select(EnvelopeDraw)
        .where(EnvelopeDraw.subscriber_id == subscriber_id)
        .order_by(EnvelopeDraw.id.desc())
        .limit(limit)
    ).all()


def draw_summary(session: Session, program_id: int) -> list[tuple[int | None, str, int, int]]:
    """(tier, outcome, count, paid fen) of a programme's draws."""
    rows = session.execute(
        select(
            EnvelopeDraw.tier, EnvelopeDraw.outcome, func.count(), func.sum(EnvelopeDraw.prize_fen)
        )
        .where(EnvelopeDraw.program_id == program_id)
        .group_by(EnvelopeDraw.tier, EnvelopeDraw.outcome)
    )
    return [(t, str(o), int(n), int(s or 0)) for t, o, n, s in rows]


def get_draw(session: Session, *, program_id: int, draw_no: int) -> EnvelopeDraw | None:
    return session.scalar(
        select(EnvelopeDraw).where(
            EnvelopeDraw.program_id == program_id, EnvelopeDraw.draw_no == draw_no
        )
    )


def insert_envelope(session: Session, values: dict[str, Any]) -> int | None:
    stmt = (
        _upsert(session, ShareEnvelope)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["program_id", "owner_id"])
        .returning(ShareEnvelope.id)
    )
    row = session.execute(stmt).first()
    return int(row[0]) if row else None


def envelope_of(session: Session, *, program_id: int, owner_id: int) -> ShareEnvelope | None:
    return session.scalar(
        select(ShareEnvelope).where(
            ShareEnvelope.program_id == program_id, ShareEnvelope.owner_id == owner_id
        )
    )


def get_envelope(session: Session, envelope_id: int) -> ShareEnvelope | None:
    return session.get(ShareEnvelope, envelope_id, populate_existing=True)


def envelopes_of(session: Session, owner_id: int) -> Sequence[ShareEnvelope]:
    return session.scalars(
        select(ShareEnvelope).where(ShareEnvelope.owner_id == owner_id).order_by(ShareEnvelope.id)
    ).all()


def insert_help(session: Session, values: dict[str, Any]) -> bool:
    stmt = (
        _upsert(session, ShareHelp)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["envelope_id", "helper_id"])
        .returning(ShareHelp.id)
    )
    return session.execute(stmt).first() is not None


def count_help(session: Session, *, envelope_id: int, at: datetime) -> tuple[int, str] | None:
    """Add one helper while the envelope is locked, opening it at the last one needed."""
    opens = ShareEnvelope.helpers_count + 1 >= ShareEnvelope.helpers_needed
    # Conditional UPDATE: helpers beyond the number needed find it opened and are refused.
    row = session.execute(
        update(ShareEnvelope)
        .where(
            ShareEnvelope.id == envelope_id,
            ShareEnvelope.status == "locked",
            ShareEnvelope.helpers_count < ShareEnvelope.helpers_needed,
        )
        .values(
            helpers_count=ShareEnvelope.helpers_count + 1,
            status=case((opens, "opened"), else_=ShareEnvelope.status),
            opened_at=case((opens, at), else_=ShareEnvelope.opened_at),
        )
        .returning(ShareEnvelope.helpers_count, ShareEnvelope.status)
        .execution_options(synchronize_session=False)
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def helps_of(session: Session, envelope_id: int) -> Sequence[ShareHelp]:
    return session.scalars(
        select(ShareHelp).where(ShareHelp.envelope_id == envelope_id).order_by(ShareHelp.id)
    ).all()


def is_helper(session: Session, *, envelope_id: int, subscriber_id: int) -> bool:
    return (
        session.scalar(
            select(ShareHelp.id).where(
                ShareHelp.envelope_id == envelope_id, ShareHelp.helper_id == subscriber_id
            )
        )
        is not None
    )


def recent_helps(
    session: Session, *, program_id: int, limit: int
) -> Sequence[tuple[ShareHelp, ShareEnvelope]]:
    rows = session.execute(
        select(ShareHelp, ShareEnvelope)
        .join(ShareEnvelope, ShareEnvelope.id == ShareHelp.envelope_id)
        .where(ShareEnvelope.program_id == program_id)
        .order_by(ShareHelp.id.desc())
        .limit(limit)
    ).all()
    return [(h, e) for h, e in rows]


def device_help_counts(session: Session, devices: Sequence[str]) -> dict[str, int]:
    if not devices:
        return {}
    rows = session.execute(
        select(ShareHelp.device_id, func.count())
        .where(ShareHelp.device_id.in_(devices))
        .group_by(ShareHelp.device_id)
    )
    return {str(d): int(n) for d, n in rows}
