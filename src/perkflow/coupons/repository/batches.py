"""Queries over coupon batches and their stock shards."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    CouponBatch,
    StockShard,
)

from ._sql import _rowcount


def get_batch(session: Session, batch_id: int) -> CouponBatch | None:
    return session.get(CouponBatch, batch_id, populate_existing=True)


def get_batch_by_code(session: Session, code: str) -> CouponBatch | None:
    return session.scalar(select(CouponBatch).where(CouponBatch.code == code))


def list_batches(
    session: Session, *, owner_regions: Sequence[str] | None, statuses: Sequence[str] | None
) -> Sequence[CouponBatch]:
    stmt = select(CouponBatch)
    if owner_regions is not None:
        stmt = stmt.where(CouponBatch.owner_region.in_(owner_regions))
    if statuses is not None:
        stmt = stmt.where(CouponBatch.status.in_(statuses))
    return session.scalars(stmt.order_by(CouponBatch.id.desc())).all()


def replace_shards(session: Session, batch_id: int, shards: Sequence[tuple[int, int]]) -> None:
    session.execute(delete(StockShard).where(StockShard.batch_id == batch_id))
    session.execute(
        insert(StockShard),
        [
            {"batch_id": batch_id, "shard": i, "slot_base": b, "size": n, "remaining": n}
            for i, (b, n) in enumerate(shards)
        ],
    )


def shards(session: Session, batch_id: int) -> Sequence[StockShard]:
    return session.scalars(
        select(StockShard).where(StockShard.batch_id == batch_id).order_by(StockShard.shard)
    ).all()


def stock_levels(session: Session, batch_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(remaining, total) per batch."""
    if not batch_ids:
        return {}
    rows = session.execute(
        select(StockShard.batch_id, func.sum(StockShard.remaining), func.sum(StockShard.size))
        .where(StockShard.batch_id.in_(batch_ids))
        .group_by(StockShard.batch_id)
    )
    return {int(b): (int(r or 0), int(t or 0)) for b, r, t in rows}


def grow_stock(
    session: Session,
    *,
    batch_id: int,
    quantity: int,
    shards: int,
    max_total: int,
    pooled: bool,
    at: datetime,
) -> tuple[int, int] | None:
    """Grow an active or paused batch within its limits: (new total, new shard count) or None."""
    conditions = [
        CouponBatch.id == batch_id,
        CouponBatch.status.in_(["active", "paused"]),
        CouponBatch.stock_total + quantity <= max_total,
    ]
    if pooled:
        # Slot n takes pool code n: every new slot needs a code already in the pool.
        conditions.append(CouponBatch.stock_total + quantity <= CouponBatch.pool_size)
    # One conditional UPDATE: the batch row's lock serialises additions, so the slot range
    # and the shard numbers after the returned values are this call's alone.
    row = session.execute(
        update(CouponBatch)
        .where(*conditions)
        .values(
            stock_total=CouponBatch.stock_total + quantity,
            shard_count=CouponBatch.shard_count + shards,
            updated_at=at,
        )
        .returning(CouponBatch.stock_total, CouponBatch.shard_count)
        .execution_options(synchronize_session=False)
    ).first()
    return (int(row[0]), int(row[1])) if row else None


def add_shards(session: Session, batch_id: int, shards: Sequence[tuple[int, int, int]]) -> None:
    """Insert new full shards given as (shard number, slot base, size)."""
    session.execute(
        insert(StockShard),
        [
            {"batch_id": batch_id, "shard": n, "slot_base": b, "size": k, "remaining": k}
            for n, b, k in shards
        ],
    )


def set_batch_status(
    session: Session, *, batch_id: int, expected: str, target: str, at: datetime
) -> bool:
    """Compare-and-set the batch status; True when this call moved it."""
    result = session.execute(
        update(CouponBatch)
        .where(CouponBatch.id == batch_id, CouponBatch.status == expected)
        .values(status=target, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1
