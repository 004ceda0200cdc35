"""Queries over coupons and red envelopes; every limit statement is atomic on its own."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from perkflow.coupons.models import (
    ClaimCounter,
    CodeJob,
    Coupon,
    CouponBatch,
    PoolCode,
    RateBucket,
    Redemption,
    StockShard,
)
from perkflow.db import UTCDateTime, postgres_driver


def _upsert(session: Session, model: Any) -> Any:
    """The dialect's INSERT … ON CONFLICT construct (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# ---- batches ------------------------------------------------------------------------------


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


# ---- claims -------------------------------------------------------------------------------


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


# ---- claims in bulk (the claim gate: many requests, one transaction) ----------------------


def _counter_upsert_many(rows: int) -> Any:
    """The counters' conditional upsert for many subscribers of one batch at once."""
    values = ", ".join(f"(:batch_id, :sub{i}, :period{i}, 1)" for i in range(rows))
    # Built from a row count only, never from input; one cached text per size.
    sql = (
        "INSERT INTO coupon_claim_counters (batch_id, subscriber_id, period, count) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (batch_id, subscriber_id, period) "
        "DO UPDATE SET count = coupon_claim_counters.count + 1 "
        "WHERE coupon_claim_counters.count < CASE coupon_claim_counters.period "
        "WHEN 'total' THEN :limit_total ELSE :limit_day END "
        "RETURNING subscriber_id, period"
    )
    return text(sql)


_MANY: dict[tuple[str, int], Any] = {}


def _many(kind: str, rows: int) -> Any:
    stmt = _MANY.get((kind, rows))
    if stmt is None:
        if kind == "rate":
            stmt = _conditional_upsert("coupon_rate_buckets", ("key", "window_start"), "key", rows)
        else:
            stmt = _counter_upsert_many(rows)
        _MANY[(kind, rows)] = stmt
    return stmt


# PostgreSQL gets the bulk statements with arrays: one short text whatever the group size,
# which the driver parses and prepares once (a VALUES list per size was parsed on every call).
_RATE_UNNEST = text(
    "INSERT INTO coupon_rate_buckets (key, window_start, count)"
    " SELECT k, :window_start, 1 FROM unnest(CAST(:keys AS varchar[])) AS u(k)"
    " ON CONFLICT (key, window_start) DO UPDATE SET count = coupon_rate_buckets.count + 1"
    " WHERE coupon_rate_buckets.count < (SELECT l FROM unnest(CAST(:keys AS varchar[]),"
    " CAST(:limits AS int[])) AS v(k, l) WHERE v.k = coupon_rate_buckets.key)"
    " RETURNING key"
)
_COUNTERS_UNNEST = text(
    "INSERT INTO coupon_claim_counters (batch_id, subscriber_id, period, count)"
    " SELECT :batch_id, s, p, 1"
    " FROM unnest(CAST(:subs AS bigint[]), CAST(:periods AS varchar[])) AS u(s, p)"
    " ON CONFLICT (batch_id, subscriber_id, period)"
    " DO UPDATE SET count = coupon_claim_counters.count + 1"
    " WHERE coupon_claim_counters.count < CASE coupon_claim_counters.period"
    " WHEN 'total' THEN :limit_total ELSE :limit_day END"
    " RETURNING subscriber_id, period"
)


def _psycopg(clause: Any) -> str:
    """A text() statement's SQL with psycopg's placeholders (these statements use no `::`)."""
    return re.sub(r"(?<![:\w]):([a-z_][a-z_0-9]*)", r"%(\1)s", str(clause.text))


# The same statements for the driver itself (psycopg's %(name)s placeholders).
_RATE_UNNEST_PG = _psycopg(_RATE_UNNEST)
_COUNTERS_UNNEST_PG = _psycopg(_COUNTERS_UNNEST)
_TAKEN_KEYS_PG = "SELECT idempotency_key FROM coupons WHERE idempotency_key = ANY(%(keys)s)"


def take_rate_tokens_many(
    session: Session, *, window_start: int, limits: Sequence[tuple[str, int]]
) -> set[str]:
    """`take_rate_tokens` for many distinct keys in one statement (sorted: lock order)."""
    ordered = sorted(limits)
    driver = postgres_driver(session)
    if driver is not None:
        got = driver.execute(
            _RATE_UNNEST_PG,
            {
                "window_start": window_start,
                "keys": [k for k, _ in ordered],
                "limits": [n for _, n in ordered],
            },
        )
        return {str(k) for (k,) in got}
    params: dict[str, Any] = {"window_start": window_start}
    for i, (key, limit) in enumerate(ordered):
        params[f"key{i}"] = key
        params[f"limit{i}"] = limit
    return {str(k) for k in session.execute(_many("rate", len(ordered)), params).scalars()}


def give_back_rate_tokens(session: Session, *, window_start: int, keys: Sequence[str]) -> None:
    """Undo this transaction's own attempt counts (rows it has locked, so this is exact)."""
    if keys:
        session.execute(
            text(
                "UPDATE coupon_rate_buckets SET count = count - 1"
                " WHERE key = :key AND window_start = :window_start"
            ),
            [{"key": k, "window_start": window_start} for k in sorted(keys)],
        )


def bump_claim_counters_many(
    session: Session,
    *,
    batch_id: int,
    rows: Sequence[tuple[int, str]],
    limit_total: int,
    limit_day: int,
) -> set[tuple[int, str]]:
    """Count one claim per (subscriber, period) below its limit; the pairs that were counted."""
    ordered = sorted(rows)
    params: dict[str, Any] = {
        "batch_id": batch_id,
        "limit_total": limit_total,
        "limit_day": limit_day,
    }
    driver = postgres_driver(session)
    if driver is not None:
        params["subs"] = [sub for sub, _ in ordered]
        params["periods"] = [period for _, period in ordered]
        got = driver.execute(_COUNTERS_UNNEST_PG, params).fetchall()
        return {(int(s), str(p)) for s, p in got}
    for i, (sub, period) in enumerate(ordered):
        params[f"sub{i}"] = sub
        params[f"period{i}"] = period
    got = session.execute(_many("counters", len(ordered)), params).all()
    return {(int(s), str(p)) for s, p in got}


_UNBUMP = (
    update(_table(ClaimCounter))
    .where(
        _table(ClaimCounter).c.batch_id == bindparam("b_batch"),
        _table(ClaimCounter).c.subscriber_id == bindparam("b_sub"),
        _table(ClaimCounter).c.period == bindparam("b_period"),
    )
    .values(count=_table(ClaimCounter).c.count - 1)
)


def unbump_claim_counters_many(
    session: Session, *, batch_id: int, rows: Sequence[tuple[int, str]]
) -> None:
    """Undo this transaction's own counts (their rows are locked by it, so this is exact)."""
    if rows:
        session.execute(
            _UNBUMP, [{"b_batch": batch_id, "b_sub": s, "b_period": p} for s, p in sorted(rows)]
        )


_TAKE_MANY = (
    update(_SHARDS)
    .where(
        _SHARDS.c.batch_id == bindparam("b_batch"),
        _SHARDS.c.shard == bindparam("b_shard"),
        _SHARDS.c.remaining >= bindparam("b_k"),
        _IS_ACTIVE,
    )
    .values(remaining=_SHARDS.c.remaining - bindparam("b_k"))
    .returning(_SHARDS.c.slot_base, _SHARDS.c.size, _SHARDS.c.remaining)
)


def take_many_from_active_shard(
    session: Session, *, batch_id: int, shard: int, k: int
) -> tuple[int, int, int] | None:
    """Take k units of one shard at once, all or none: (base, size, remaining after)."""
    params = {"b_batch": batch_id, "b_shard": shard, "b_k": k}
    driver = postgres_driver(session)
    if driver is not None:
        row = driver.execute(_TAKE_MANY_PG, params).fetchone()
    else:
        row = session.execute(_TAKE_MANY, params).first()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


_TAKEN_KEYS = {
    "postgresql": select(_COUPONS.c.idempotency_key).where(
        _COUPONS.c.idempotency_key == any_(bindparam("keys", type_=ARRAY(String)))
    ),
    "sqlite": select(_COUPONS.c.idempotency_key).where(
        _COUPONS.c.idempotency_key.in_(bindparam("keys", expanding=True))
    ),
}


def coupons_by_keys(session: Session, keys: Sequence[str]) -> dict[str, Coupon]:
    """Coupons already claimed under any of these idempotency keys."""
    driver = postgres_driver(session)
    if driver is not None:
        taken = [k for (k,) in driver.execute(_TAKEN_KEYS_PG, {"keys": list(keys)})]
    else:
        taken = list(session.execute(_TAKEN_KEYS["sqlite"], {"keys": list(keys)}).scalars())
    if not taken:  # the usual case: no ORM load at all
        return {}
    found = session.scalars(
        select(Coupon)
        .where(Coupon.idempotency_key.in_(taken))
        .execution_options(populate_existing=True)
    )
    return {c.idempotency_key: c for c in found}


def pool_codes_many(
    session: Session, *, batch_id: int, ordinals: Sequence[int]
) -> dict[int, tuple[str, bytes]]:
    """Pre-made codes of a batch by ordinal: (hash, encrypted code)."""
    rows = session.execute(
        select(PoolCode.ordinal, PoolCode.code_hash, PoolCode.code_enc).where(
            PoolCode.batch_id == batch_id, PoolCode.ordinal.in_(ordinals)
        )
    )
    return {int(o): (str(h), bytes(e)) for o, h, e in rows}


_INSERT_CLAIMS = {
    name: dialect.insert(_COUPONS)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(_COUPONS.c.id, _COUPONS.c.idempotency_key)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


_TAKE_MANY_PG = (
    "UPDATE coupon_stock_shards SET remaining = remaining - %(b_k)s"
    " WHERE batch_id = %(b_batch)s AND shard = %(b_shard)s AND remaining >= %(b_k)s"
    " AND EXISTS (SELECT 1 FROM coupon_batches WHERE id = %(b_batch)s AND status = 'active')"
    " RETURNING slot_base, size, remaining"
)
_INSERT_CLAIMS_UNNEST = text(
    "INSERT INTO coupons (batch_id, subscriber_id, slot, code_hash, code_enc, idempotency_key,"
    " status, channel, device_id, claimed_at, valid_from, valid_until)"
    " SELECT :batch_id, s, sl, h, e, k, :status, c, d, :claimed_at, :valid_from, :valid_until"
    " FROM unnest(CAST(:subs AS bigint[]), CAST(:slots AS int[]), CAST(:hashes AS varchar[]),"
    " CAST(:encs AS bytea[]), CAST(:keys AS varchar[]), CAST(:channels AS varchar[]),"
    " CAST(:devices AS varchar[])) AS u(s, sl, h, e, k, c, d)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key"
).bindparams(
    bindparam("claimed_at", type_=UTCDateTime()),
    bindparam("valid_from", type_=UTCDateTime()),
    bindparam("valid_until", type_=UTCDateTime()),
)


_INSERT_CLAIMS_PG = _psycopg(_INSERT_CLAIMS_UNNEST)


def _utc(value: datetime) -> datetime:
    # What db.UTCDateTime does for bound values, for statements sent to the driver directly.
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use kit.clock.now()")
    return value.astimezone(UTC)


def insert_claims(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert claimed coupons of one batch (one statement) except taken keys: key -> new id."""
    driver = postgres_driver(session)
    if driver is not None:
        # Batch, status and the times are the same on every row of a group.
        first = rows[0]
        params: dict[str, Any] = {"batch_id": first["batch_id"], "status": first["status"]}
        for k in ("claimed_at", "valid_from", "valid_until"):
            params[k] = _utc(first[k])
        for name, col in (
            ("subs", "subscriber_id"),
            ("slots", "slot"),
            ("hashes", "code_hash"),
            ("encs", "code_enc"),
            ("keys", "idempotency_key"),
            ("channels", "channel"),
            ("devices", "device_id"),
        ):
            params[name] = [r[col] for r in rows]
        got = driver.execute(_INSERT_CLAIMS_PG, params).fetchall()
    else:
        got = session.execute(_INSERT_CLAIMS[session.get_bind().dialect.name], rows).all()
    return {str(k): int(i) for i, k in got}


def prune_rate_buckets(session: Session, *, before: int) -> int:
    return _rowcount(session.execute(delete(RateBucket).where(RateBucket.window_start < before)))


def wallet(session: Session, subscriber_id: int) -> Sequence[tuple[Coupon, CouponBatch]]:
    rows = session.execute(
        select(Coupon, CouponBatch)
        .join(CouponBatch, CouponBatch.id == Coupon.batch_id)
        .where(Coupon.subscriber_id == subscriber_id)
        .order_by(Coupon.id.desc())
        .limit(200)
    ).all()
    return [(c, b) for c, b in rows]


def claimed_counts(
    session: Session, *, subscriber_id: int, batch_ids: Sequence[int]
) -> dict[int, int]:
    if not batch_ids:
        return {}
    rows = session.execute(
        select(ClaimCounter.batch_id, ClaimCounter.count).where(
            ClaimCounter.subscriber_id == subscriber_id,
            ClaimCounter.period == "total",
            ClaimCounter.batch_id.in_(batch_ids),
        )
    )
    return {int(b): int(c) for b, c in rows}


def count_coupons(session: Session, batch_id: int) -> int:
    return session.scalar(select(func.count()).where(Coupon.batch_id == batch_id)) or 0


# ---- codes --------------------------------------------------------------------------------


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


# ---- redemption ---------------------------------------------------------------------------


def coupon_by_hash(session: Session, code_hash: str) -> Coupon | None:
    # populate_existing: statuses move by Core CAS statements, so never trust a cached row.
    return session.scalar(
        select(Coupon)
        .where(Coupon.code_hash == code_hash)
        .execution_options(populate_existing=True)
    )


def get_coupon(session: Session, coupon_id: int) -> Coupon | None:
    return session.get(Coupon, coupon_id, populate_existing=True)


def cas_coupon(
    session: Session, *, coupon_id: int, expected: str, target: str, at: datetime | None
) -> bool:
    """Move a coupon's status only from `expected`: of two clerks, exactly one moves it."""
    result = session.execute(
        update(Coupon)
        .where(Coupon.id == coupon_id, Coupon.status == expected)
        .values(status=target, redeemed_at=at)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def move_subscriber_coupons(
    session: Session, *, subscriber_id: int, expected: Sequence[str], target: str
) -> list[int]:
    """Move one subscriber's coupons in an `expected` status to `target` (binding): the ids."""
    # One set-based UPDATE: a clerk's compare-and-set on one of these rows either ran first
    # (the coupon is redeemed and stays so) or finds the coupon moved and redeems nothing.
    result = session.execute(
        update(Coupon)
        .where(Coupon.subscriber_id == subscriber_id, Coupon.status.in_(list(expected)))
        .values(status=target)
        .returning(Coupon.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(int(i) for i in result.scalars())


def get_redemption(session: Session, redemption_id: int) -> Redemption | None:
    return session.get(Redemption, redemption_id, populate_existing=True)


def redemption_by_ref(session: Session, *, store_code: str, client_ref: str) -> Redemption | None:
    return session.scalar(
        select(Redemption).where(
            Redemption.store_code == store_code, Redemption.client_ref == client_ref
        )
    )


def cas_reverse(
    session: Session, *, redemption_id: int, at: datetime, by: str, reason: str
) -> bool:
    result = session.execute(
        update(Redemption)
        .where(Redemption.id == redemption_id, Redemption.status == "done")
        .values(status="reversed", reversed_at=at, reversed_by=by, reverse_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def store_redemptions(
    session: Session, *, store_code: str, since: datetime
) -> Sequence[tuple[Redemption, Coupon, CouponBatch]]:
    rows = session.execute(
        select(Redemption, Coupon, CouponBatch)
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .join(CouponBatch, CouponBatch.id == Redemption.batch_id)
        .where(Redemption.store_code == store_code, Redemption.at >= since)
        .order_by(Redemption.id.desc())
        .limit(500)
    ).all()
    return [(r, c, b) for r, c, b in rows]


def _minute(session: Session, col: Any) -> ColumnElement[Any]:
    """Whole minutes since the epoch of a timestamp column, in the dialect's words."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", col) / 60), Integer)
    return cast(func.strftime("%s", col), Integer) / 60


def per_minute(
    session: Session, *, batch_id: int, since: datetime, what: str
) -> list[tuple[int, int]]:
    """(epoch minute, count) of claims or redemptions of a batch since a moment."""
    col = Coupon.claimed_at if what == "claims" else Redemption.at
    table_batch = Coupon.batch_id if what == "claims" else Redemption.batch_id
    minute = _minute(session, col).label("m")
    stmt = (
        select(minute, func.count())
        .where(and_(table_batch == batch_id, col >= since))
        .group_by(minute)
        .order_by(minute)
    )
    return [(int(m), int(n)) for m, n in session.execute(stmt)]


def redemption_count(session: Session, batch_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(Redemption.batch_id == batch_id, Redemption.status == "done")
        )
        or 0
    )


def claims_after(session: Session, *, after_id: int, limit: int) -> list[tuple[int, int, int, Any]]:
    """(coupon id, subscriber, batch, claimed_at) of coupons claimed after an id, in id order."""
    rows = session.execute(
        select(Coupon.id, Coupon.subscriber_id, Coupon.batch_id, Coupon.claimed_at)
        .where(Coupon.id > after_id)
        .order_by(Coupon.id)
        .limit(limit)
    )
    return [(int(i), int(s), int(b), at) for i, s, b, at in rows]


def redemptions_after(
    session: Session, *, after_id: int, limit: int
) -> list[tuple[int, int, int, Any, int]]:
    """(redemption id, subscriber, batch, at, order fen) of standing redemptions after an id."""
    # The time the clerk took it: an offline upload reaches the ledger later than it happened.
    rows = session.execute(
        select(
            Redemption.id,
            Coupon.subscriber_id,
            Redemption.batch_id,
            Redemption.recorded_at,
            Redemption.order_fen,
        )
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .where(Redemption.id > after_id, Redemption.status == "done")
        .order_by(Redemption.id)
        .limit(limit)
    )
    return [(int(i), int(s), int(b), at, int(v)) for i, s, b, at, v in rows]


def batches_of_coupons(session: Session, coupon_ids: Sequence[int]) -> dict[int, CouponBatch]:
    """The batch of each of these coupons, by coupon id."""
    if not coupon_ids:
        return {}
    rows = session.execute(
        select(Coupon.id, CouponBatch)
        .join(CouponBatch, CouponBatch.id == Coupon.batch_id)
        .where(Coupon.id.in_(coupon_ids))
    ).all()
    return {int(i): b for i, b in rows}
