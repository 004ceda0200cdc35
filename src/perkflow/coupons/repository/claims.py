"""Claim queries that are not set-based: a batch's terms and status, its shards left, a key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Table,
    bindparam,
    select,
    update,
)
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
    PoolCode,
    StockShard,
)

# The claim hot path runs prebuilt statements on the Tables (plain Core, compiled once per
# process and cached; no ORM persistence layer) — bench/README.md has the profile behind this.


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_BATCHES = _table(CouponBatch)
_SHARDS = _table(StockShard)
_COUPONS = _table(Coupon)

_CLAIM_BY_KEY = select(_COUPONS.c.id).where(_COUPONS.c.idempotency_key == bindparam("key"))
_BATCH_TERMS = select(
    _BATCHES.c.status,
    _BATCHES.c.owner_region,
    _BATCHES.c.shard_count,
    _BATCHES.c.claim_starts_at,
    _BATCHES.c.claim_ends_at,
    _BATCHES.c.limit_total,
    _BATCHES.c.limit_per_day,
    _BATCHES.c.validity_kind,
    _BATCHES.c.valid_from,
    _BATCHES.c.valid_until,
    _BATCHES.c.valid_days,
    _BATCHES.c.code_source,
    _BATCHES.c.code_charset,
    _BATCHES.c.code_prefix,
    _BATCHES.c.code_length,
).where(_BATCHES.c.id == bindparam("batch_id"))
_BATCH_STATUS = select(_BATCHES.c.status).where(_BATCHES.c.id == bindparam("batch_id"))
_IS_ACTIVE = (
    select(_BATCHES.c.id)
    .where(_BATCHES.c.id == bindparam("b_batch"), _BATCHES.c.status == "active")
    .exists()
)
_SHARDS_LEFT = select(_SHARDS.c.shard).where(
    _SHARDS.c.batch_id == bindparam("batch_id"), _SHARDS.c.remaining > 0
)


def claim_id_by_key(session: Session, key: str) -> int | None:
    """The coupon id claimed under an idempotency key, if any (one indexed lookup)."""
    found = session.execute(_CLAIM_BY_KEY, {"key": key}).scalar()
    return int(found) if found is not None else None


def batch_terms(session: Session, batch_id: int) -> Any:
    """What a claim needs of a batch: its status and the terms fixed once it leaves draft."""
    return session.execute(_BATCH_TERMS, {"batch_id": batch_id}).first()


def batch_status(session: Session, batch_id: int) -> str | None:
    found = session.execute(_BATCH_STATUS, {"batch_id": batch_id}).scalar()
    return str(found) if found is not None else None


def shards_left(session: Session, batch_id: int) -> list[int]:
    """Shards whose committed remaining stock is above zero."""
    return [int(s) for s in session.execute(_SHARDS_LEFT, {"batch_id": batch_id}).scalars()]


def give_back_to_shard(session: Session, *, batch_id: int, shard: int) -> None:
    """Undo this transaction's own decrement (its row lock is still held, so the slot is ours)."""
    session.execute(
        update(StockShard)
        .where(StockShard.batch_id == batch_id, StockShard.shard == shard)
        .values(remaining=StockShard.remaining + 1)
        .execution_options(synchronize_session=False)
    )


def pool_code(session: Session, *, batch_id: int, ordinal: int) -> PoolCode | None:
    return session.scalar(
        select(PoolCode).where(PoolCode.batch_id == batch_id, PoolCode.ordinal == ordinal)
    )
