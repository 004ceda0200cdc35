"""Claim queries, set-based: a group of claims (a lone claim is one) in a few statements.

Each statement has one spelling per dialect, the two side by side. PostgreSQL: psycopg SQL
(`%(name)s`), run on the driver connection of the session's own transaction
(`db.postgres_driver`, which skips SQLAlchemy's per-statement work), per-row values as arrays
(`unnest`): one short text whatever the group size, which the server prepares once. SQLite:
SQLAlchemy statements, a `VALUES` row per claim (one cached text per row count).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    TextClause,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    ClaimCounter,
    Coupon,
    CouponBatch,
    PoolCode,
    RateBucket,
)
from perkflow.db import postgres_driver

from ._sql import _rowcount
from .claims import _COUPONS, _IS_ACTIVE, _SHARDS, _table

# ---- attempts per rate window: count each key below its limit ------------------------------

_RATE_PG = (
    "INSERT INTO coupon_rate_buckets (key, window_start, count)"
    " SELECT k, %(window_start)s, 1 FROM unnest(CAST(%(keys)s AS varchar[])) AS u(k)"
    " ON CONFLICT (key, window_start) DO UPDATE SET count = coupon_rate_buckets.count + 1"
    " WHERE coupon_rate_buckets.count < (SELECT l FROM unnest(CAST(%(keys)s AS varchar[]),"
    " CAST(%(limits)s AS int[])) AS v(k, l) WHERE v.k = coupon_rate_buckets.key)"
    " RETURNING key"
)


@functools.cache
def _rate_sqlite(rows: int) -> TextClause:
    values = ", ".join(f"(:key{i}, :window_start, 1)" for i in range(rows))
    whens = " ".join(f"WHEN :key{i} THEN :limit{i}" for i in range(rows))
    # Built from a row count only, never from input.
    return text(
        f"INSERT INTO coupon_rate_buckets (key, window_start, count) VALUES {values} "  # noqa: S608
        "ON CONFLICT (key, window_start) DO UPDATE SET count = coupon_rate_buckets.count + 1 "
        f"WHERE coupon_rate_buckets.count < CASE coupon_rate_buckets.key {whens} ELSE 0 END "
        "RETURNING key"
    )


def take_rate_tokens(
    session: Session, *, window_start: int, limits: Sequence[tuple[str, int]]
) -> set[str]:
    """Count one attempt per (key, limit) in this window (sorted: lock order); keys under it."""
    ordered = sorted(limits)
    driver = postgres_driver(session)
    if driver is not None:
        params = {
            "window_start": window_start,
            "keys": [k for k, _ in ordered],
            "limits": [n for _, n in ordered],
        }
        return {str(k) for (k,) in driver.execute(_RATE_PG, params)}
    sqlite_params: dict[str, Any] = {"window_start": window_start}
    for i, (key, limit) in enumerate(ordered):
        sqlite_params[f"key{i}"] = key
        sqlite_params[f"limit{i}"] = limit
    got = session.execute(_rate_sqlite(len(ordered)), sqlite_params).scalars()
    return {str(k) for k in got}


_GIVE_BACK_RATE = text(  # the same on both
    "UPDATE coupon_rate_buckets SET count = count - 1"
    " WHERE key = :key AND window_start = :window_start"
)


def give_back_rate_tokens(session: Session, *, window_start: int, keys: Sequence[str]) -> None:
    """Undo this transaction's own attempt counts (rows it has locked, so this is exact)."""
    if keys:
        session.execute(
            _GIVE_BACK_RATE, [{"key": k, "window_start": window_start} for k in sorted(keys)]
        )


# ---- claims per subscriber and period: count each below the batch's limit -----------------

_COUNTERS_PG = (
    "INSERT INTO coupon_claim_counters (batch_id, subscriber_id, period, count)"
    " SELECT %(batch_id)s, s, p, 1"
    " FROM unnest(CAST(%(subs)s AS bigint[]), CAST(%(periods)s AS varchar[])) AS u(s, p)"
    " ON CONFLICT (batch_id, subscriber_id, period)"
    " DO UPDATE SET count = coupon_claim_counters.count + 1"
    " WHERE coupon_claim_counters.count < CASE coupon_claim_counters.period"
    " WHEN 'total' THEN %(limit_total)s ELSE %(limit_day)s END"
    " RETURNING subscriber_id, period"
)


@functools.cache
def _counters_sqlite(rows: int) -> TextClause:
    values = ", ".join(f"(:batch_id, :sub{i}, :period{i}, 1)" for i in range(rows))
    # Built from a row count only, never from input.
    return text(
        "INSERT INTO coupon_claim_counters (batch_id, subscriber_id, period, count) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (batch_id, subscriber_id, period) "
        "DO UPDATE SET count = coupon_claim_counters.count + 1 "
        "WHERE coupon_claim_counters.count < CASE coupon_claim_counters.period "
        "WHEN 'total' THEN :limit_total ELSE :limit_day END "
        "RETURNING subscriber_id, period"
    )


def bump_claim_counters(
    session: Session,
    *,
    batch_id: int,
    rows: Sequence[tuple[int, str]],
    limit_total: int,
    limit_day: int,
) -> set[tuple[int, str]]:
    """Count one claim per (subscriber, period) below its limit; the pairs that were counted.

    The conflict branch increments only below the limit, and the row lock it takes makes
    concurrent claims of one subscriber queue here, so the limit is exact.
    """
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
        got = driver.execute(_COUNTERS_PG, params).fetchall()
    else:
        for i, (sub, period) in enumerate(ordered):
            params[f"sub{i}"] = sub
            params[f"period{i}"] = period
        got = session.execute(_counters_sqlite(len(ordered)), params).all()
    return {(int(s), str(p)) for s, p in got}


_UNBUMP = (  # the same on both
    update(_table(ClaimCounter))
    .where(
        _table(ClaimCounter).c.batch_id == bindparam("b_batch"),
        _table(ClaimCounter).c.subscriber_id == bindparam("b_sub"),
        _table(ClaimCounter).c.period == bindparam("b_period"),
    )
    .values(count=_table(ClaimCounter).c.count - 1)
)


def unbump_claim_counters(
    session: Session, *, batch_id: int, rows: Sequence[tuple[int, str]]
) -> None:
    """Undo this transaction's own counts (their rows are locked by it, so this is exact)."""
    if rows:
        session.execute(
            _UNBUMP, [{"b_batch": batch_id, "b_sub": s, "b_period": p} for s, p in sorted(rows)]
        )


# ---- stock: k units of one shard of an active batch ---------------------------------------
# The batch's status is checked in the same statement that takes the units, so a claim never
# takes stock from a paused or ended batch even though its other terms come from a cache.

_TAKE_PG = (
    "UPDATE coupon_stock_shards SET remaining = remaining - %(b_k)s"
    " WHERE batch_id = %(b_batch)s AND shard = %(b_shard)s AND remaining >= %(b_k)s"
    " AND EXISTS (SELECT 1 FROM coupon_batches WHERE id = %(b_batch)s AND status = 'active')"
    " RETURNING slot_base, size, remaining"
)
_TAKE_SQLITE = (
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


def take_from_active_shard(
    session: Session, *, batch_id: int, shard: int, k: int = 1
) -> tuple[int, int, int] | None:
    """Take k units of one shard of an active batch, all or none: (base, size, remaining after).

    A conditional UPDATE: the row lock serialises the takers of a shard and `remaining >= k` is
    checked again after the wait, so two claims never get the same unit.
    """
    params = {"b_batch": batch_id, "b_shard": shard, "b_k": k}
    driver = postgres_driver(session)
    if driver is not None:
        row = driver.execute(_TAKE_PG, params).fetchone()
    else:
        row = session.execute(_TAKE_SQLITE, params).first()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


# ---- idempotency keys already used --------------------------------------------------------

_TAKEN_KEYS_PG = "SELECT idempotency_key FROM coupons WHERE idempotency_key = ANY(%(keys)s)"
_TAKEN_KEYS_SQLITE = select(_COUPONS.c.idempotency_key).where(
    _COUPONS.c.idempotency_key.in_(bindparam("keys", expanding=True))
)


def coupons_by_keys(session: Session, keys: Sequence[str]) -> dict[str, Coupon]:
    """Coupons already claimed under any of these idempotency keys."""
    driver = postgres_driver(session)
    if driver is not None:
        taken = [k for (k,) in driver.execute(_TAKEN_KEYS_PG, {"keys": list(keys)})]
    else:
        taken = list(session.execute(_TAKEN_KEYS_SQLITE, {"keys": list(keys)}).scalars())
    if not taken:  # the usual case: no ORM load at all
        return {}
    found = session.scalars(
        select(Coupon)
        .where(Coupon.idempotency_key.in_(taken))
        .execution_options(populate_existing=True)
    )
    return {c.idempotency_key: c for c in found}


def pool_codes(
    session: Session, *, batch_id: int, ordinals: Sequence[int]
) -> dict[int, tuple[str, bytes]]:
    """Pre-made codes of a batch by ordinal: (hash, encrypted code)."""
    rows = session.execute(
        select(PoolCode.ordinal, PoolCode.code_hash, PoolCode.code_enc).where(
            PoolCode.batch_id == batch_id, PoolCode.ordinal.in_(ordinals)
        )
    )
    return {int(o): (str(h), bytes(e)) for o, h, e in rows}


# ---- the claimed coupons: one INSERT, skipping keys already taken -------------------------

_INSERT_PG = (
    "INSERT INTO coupons (batch_id, subscriber_id, slot, code_hash, code_enc, idempotency_key,"
    " status, channel, device_id, claimed_at, valid_from, valid_until)"
    " SELECT %(batch_id)s, s, sl, h, e, k, %(status)s, c, d, %(claimed_at)s, %(valid_from)s,"
    " %(valid_until)s"
    " FROM unnest(CAST(%(subs)s AS bigint[]), CAST(%(slots)s AS int[]),"
    " CAST(%(hashes)s AS varchar[]), CAST(%(encs)s AS bytea[]), CAST(%(keys)s AS varchar[]),"
    " CAST(%(channels)s AS varchar[]), CAST(%(devices)s AS varchar[]))"
    " AS u(s, sl, h, e, k, c, d)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key"
)
_INSERT_SQLITE = (
    # The columns come from the parameters at execution (the same keys on every claim).
    sqlite.insert(_COUPONS)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(_COUPONS.c.id, _COUPONS.c.idempotency_key)
)


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
        got = driver.execute(_INSERT_PG, params).fetchall()
    else:
        got = session.execute(_INSERT_SQLITE, rows).all()
    return {str(k): int(i) for i, k in got}


def insert_claim(session: Session, values: dict[str, Any]) -> int | None:
    """Insert one claimed coupon unless its idempotency key exists: the new id, or None."""
    return insert_claims(session, [values]).get(values["idempotency_key"])


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
