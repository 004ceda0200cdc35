"""Queries over pool codes and code jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    CodeJob,
    Coupon,
    CouponBatch,
    PoolCode,
)

from ._sql import _rowcount


def get_job(session: Session, job_id: int) -> CodeJob | None:
    return session.get(CodeJob, job_id, populate_existing=True)


def jobs_of(session: Session, batch_id: int) -> Sequence[CodeJob]:
    return session.scalars(
        select(CodeJob).where(CodeJob.batch_id == batch_id).order_by(CodeJob.id.desc())
    ).all()


def existing_hashes(session: Session, hashes: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(hashes), 1000):
        part = hashes[start : start + 1000]
        found.update(
            str(h)
            for h in session.scalars(select(PoolCode.code_hash).where(PoolCode.code_hash.in_(part)))
        )
        found.update(
            str(h)
            for h in session.scalars(select(Coupon.code_hash).where(Coupon.code_hash.in_(part)))
        )
    return found


def insert_pool_codes(session: Session, rows: list[dict[str, Any]]) -> None:
    # A plain Core executemany: no ORM bookkeeping for a million rows.
    session.execute(insert(PoolCode), rows)


def advance_pool(session: Session, *, batch_id: int, expected: int, added: int) -> bool:
    """Grow the pool size only from the size the caller read: two writers cannot interleave."""
    result = session.execute(
        update(CouponBatch)
        .where(CouponBatch.id == batch_id, CouponBatch.pool_size == expected)
        .values(pool_size=CouponBatch.pool_size + added)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def pool_codes_page(
    session: Session, *, batch_id: int, after_ordinal: int, limit: int
) -> Sequence[PoolCode]:
    return session.scalars(
        select(PoolCode)
        .where(PoolCode.batch_id == batch_id, PoolCode.ordinal > after_ordinal)
        .order_by(PoolCode.ordinal)
        .limit(limit)
    ).all()
