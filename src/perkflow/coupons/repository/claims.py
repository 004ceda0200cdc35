"""Queries of one claim: prebuilt statements for the stock take, counters, rate windows, coupons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Table,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    ClaimCounter,
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
# The batch's status is checked in the same statement that takes the unit, so a claim never
# takes stock from a paused or ended batch even though its other terms come from a cache.
_TAKE_ACTIVE = (
    update(_SHARDS)
    .where(
        _SHARDS.c.batch_id == bindparam("b_batch"),
        _SHARDS.c.shard == bindparam("b_shard"),
        _SHARDS.c.remaining > 0,
        _IS_ACTIVE,
    )
    .values(remaining=_SHARDS.c.remaining - 1)
    .returning(_SHARDS.c.slot_base, _SHARDS.c.size, _SHARDS.c.remaining)
)
_SHARDS_LEFT = select(_SHARDS.c.shard).where(
    _SHARDS.c.batch_id == bindparam("batch_id"), _SHARDS.c.remaining > 0
)
_INSERT_CLAIM = {
    # The columns come from the parameters at execution (the same keys on every claim).
    name: dialect.insert(_COUPONS)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(_COUPONS.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _conditional_upsert(table: str, key_cols: tuple[str, ...], keyed: str, rows: int) -> Any:
    """`INSERT … ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < limit RETURNING`.

    Text, because SQLAlchemy does not cache multi-row VALUES (it recompiled these two statements
    on every claim); the SQL is the same on PostgreSQL and SQLite.
    """
    cols = (*key_cols, "count")
    values = ", ".join(
        "(" + ", ".join(f":{c}{i}" if c == keyed else f":{c}" for c in key_cols) + ", 1)"
        for i in range(rows)
    )
    whens = " ".join(f"WHEN :{keyed}{i} THEN :limit{i}" for i in range(rows))
    # Built once at import from the constants below, never from input.
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({', '.join(key_cols)}) DO UPDATE SET count = {table}.count + 1 "
        f"WHERE {table}.count < CASE {table}.{keyed} {whens} ELSE 0 END "
        f"RETURNING {keyed}"
    )
    return text(sql)


_RATE_UPSERT = {
    n: _conditional_upsert("coupon_rate_buckets", ("key", "window_start"), "key", n) for n in (1, 2)
}
_COUNTER_UPSERT = {
    n: _conditional_upsert(
        "coupon_claim_counters", ("batch_id", "subscriber_id", "period"), "period", n
    )
    for n in (1, 2)
}


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


def take_from_active_shard(
    session: Session, *, batch_id: int, shard: int
) -> tuple[int, int, int] | None:
    """Decrement one shard of an active batch if it has stock: (base, size, remaining after)."""
    # Conditional UPDATE: the row lock serialises takers of this shard, `remaining > 0` is
    # re-checked after the wait, so two claims never get the same unit.
    row = session.execute(_TAKE_ACTIVE, {"b_batch": batch_id, "b_shard": shard}).first()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def shards_left(session: Session, batch_id: int) -> list[int]:
    """Shards whose committed remaining stock is above zero."""
    return [int(s) for s in session.execute(_SHARDS_LEFT, {"batch_id": batch_id}).scalars()]


def insert_claim(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a claimed coupon unless its idempotency key exists: the new id, or None."""
    stmt = _INSERT_CLAIM[session.get_bind().dialect.name]
    row = session.execute(stmt, values).first()
    return int(row[0]) if row else None


def coupon_by_key(session: Session, key: str) -> Coupon | None:
    return session.scalar(
        select(Coupon)
        .where(Coupon.idempotency_key == key)
        .execution_options(populate_existing=True)
    )


def bump_claim_counters(
    session: Session, *, batch_id: int, subscriber_id: int, limits: Sequence[tuple[str, int]]
) -> bool:
    """Count one claim against each (period, limit) unless a limit is reached; all or nothing."""
    params: dict[str, Any] = {"batch_id": batch_id, "subscriber_id": subscriber_id}
    for i, (period, limit) in enumerate(limits):
        params[f"period{i}"] = period
        params[f"limit{i}"] = limit
    # The conflict branch increments only below the limit; the row lock it takes makes
    # concurrent claims of one subscriber queue here, so the limit is exact.
    got = session.execute(_COUNTER_UPSERT[len(limits)], params).all()
    return len(got) == len(limits)


def unbump_claim_counters(
    session: Session, *, batch_id: int, subscriber_id: int, periods: Sequence[str]
) -> None:
    session.execute(
        update(ClaimCounter)
        .where(
            ClaimCounter.batch_id == batch_id,
            ClaimCounter.subscriber_id == subscriber_id,
            ClaimCounter.period.in_(periods),
        )
        .values(count=ClaimCounter.count - 1)
        .execution_options(synchronize_session=False)
    )


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


def take_rate_tokens(
    session: Session, *, window_start: int, limits: Sequence[tuple[str, int]]
) -> set[str]:
    """Count one attempt per key in this window; the keys still under their limit."""
    params: dict[str, Any] = {"window_start": window_start}
    for i, (key, limit) in enumerate(limits):
        params[f"key{i}"] = key
        params[f"limit{i}"] = limit
    return {str(k) for k in session.execute(_RATE_UPSERT[len(limits)], params).scalars()}
