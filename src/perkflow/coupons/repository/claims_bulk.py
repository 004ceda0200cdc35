"""Queries of a claim group (the claim gate: many requests, one transaction), set-based."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    String,
    any_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    ClaimCounter,
    Coupon,
    CouponBatch,
    PoolCode,
    RateBucket,
)
from perkflow.db import UTCDateTime, postgres_driver

from ._sql import _rowcount
from .claims import _COUPONS, _IS_ACTIVE, _SHARDS, _conditional_upsert, _table


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
