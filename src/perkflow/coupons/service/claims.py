"""Claiming coupons: rate limits, claim terms, codes, the claimed coupon, claim center, wallet.

The claim itself, lone or in a group, is `claim_group.py`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
)
from perkflow.coupons.rules import (
    RATE_PER_DEVICE,
    RATE_PER_SUBSCRIBER,
    RATE_WINDOW_S,
    SOLD_OUT_MEMO_S,
    BatchStatus,
    CodePattern,
    CouponValidity,
    Permutation,
    rate_window,
    slot_of,
)
from perkflow.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM, Actor
from perkflow.subscribers import service as subscribers

from .access import _require_api_scope


class SoldOut(Conflict):
    code = "sold_out"


class LimitReached(Conflict):
    code = "limit_reached"


class NotClaimable(Conflict):
    code = "not_claimable"


# purpose: it only saves a round trip; the ledger stays the one truth on stock.
_sold_out_seen: dict[tuple[str, int], float] = {}


def _memo_key(session: Session, batch_id: int) -> tuple[str, int]:
    bind = session.get_bind()
    return (str(bind.engine.url), batch_id)


def note_sold_out(session: Session, *, batch_id: int) -> None:
    """Remember for a moment that this batch sold out (answers 409 without the database)."""
    _sold_out_seen[_memo_key(session, batch_id)] = time.monotonic()


def seen_sold_out(session: Session, *, batch_id: int) -> bool:
    """Whether this process saw the batch sold out in the last moments (no database needed)."""
    seen = _sold_out_seen.get(_memo_key(session, batch_id))
    return seen is not None and time.monotonic() - seen < SOLD_OUT_MEMO_S


def _code_key(vault: Vault, batch_id: int) -> bytes:
    # A per-batch key derived from the vault: codes cannot be predicted from the slot number.
    return bytes.fromhex(vault.lookup.digest(f"coupon-code-permutation:{batch_id}"))


def code_hash(vault: Vault, code: str) -> str:
    """The keyed lookup hash of a (normalized) coupon code."""
    return vault.lookup.digest(f"coupon-code:{code}")


def _encrypt_code(vault: Vault, code: str, hashed: str) -> bytes:
    # Bound to the hash: a ciphertext moved onto another row does not decrypt.
    return vault.pii.encrypt(code, f"coupon:{hashed}".encode())


def decrypt_code(vault: Vault, *, code_enc: bytes, hashed: str) -> str:
    """The clear code of a coupon, for its own subscriber's wallet."""
    return vault.pii.decrypt(code_enc, f"coupon:{hashed}".encode())


def _pattern_of(batch: CouponBatch) -> CodePattern:
    return CodePattern(
        charset=batch.code_charset, prefix=batch.code_prefix, length=batch.code_length
    )


def admit_claim_attempt(
    session: Session, *, subscriber_id: int, device_id: str | None, batch_id: int
) -> None:
    """Count a claim attempt per subscriber and device; 429 past the limit (the caller commits)."""
    limits = [(f"s:{subscriber_id}", RATE_PER_SUBSCRIBER)]
    if device_id:
        limits.append((f"d:{device_id[:64]}", RATE_PER_DEVICE))
    window = rate_window(clock.now().timestamp())
    admitted = repo.take_rate_tokens(session, window_start=window, limits=limits)
    if len(admitted) < len(limits):
        raise TooManyRequests(
            f"too many attempts; try again in {RATE_WINDOW_S} seconds",
            field="device_id" if f"s:{subscriber_id}" in admitted else "subscriber_id",
            batch_id=batch_id,
        )


def prune_rate_buckets(session: Session) -> int:
    """Drop finished rate windows."""
    return repo.prune_rate_buckets(
        session, before=rate_window(clock.now().timestamp()) - RATE_WINDOW_S
    )


@dataclass(frozen=True, slots=True)
class ClaimedCoupon:
    """The claimed coupon's row as the claim wrote it (plain values: cheap to make by the 1000)."""

    id: int
    batch_id: int
    subscriber_id: int
    slot: int
    code_hash: str
    status: str
    claimed_at: datetime
    valid_from: datetime
    valid_until: datetime

    @classmethod
    def of(cls, coupon: Coupon) -> ClaimedCoupon:
        return cls(
            id=coupon.id,
            batch_id=coupon.batch_id,
            subscriber_id=coupon.subscriber_id,
            slot=coupon.slot,
            code_hash=coupon.code_hash,
            status=coupon.status,
            claimed_at=coupon.claimed_at,
            valid_from=coupon.valid_from,
            valid_until=coupon.valid_until,
        )

    @classmethod
    def inserted(cls, coupon_id: int, values: dict[str, Any]) -> ClaimedCoupon:
        """From the values of the INSERT just made: no second round trip to read it back."""
        return cls(
            id=coupon_id,
            batch_id=values["batch_id"],
            subscriber_id=values["subscriber_id"],
            slot=values["slot"],
            code_hash=values["code_hash"],
            status=values["status"],
            claimed_at=values["claimed_at"],
            valid_from=values["valid_from"],
            valid_until=values["valid_until"],
        )


@dataclass(frozen=True)
class ClaimOutcome:
    """A claim: the coupon in the wallet, and whether this call was a replay of an earlier one."""

    coupon: ClaimedCoupon
    replayed: bool


@dataclass(frozen=True)
class ClaimTerms:
    """What a claim needs of a batch that left draft: none of it changes after that."""

    owner_region: str
    shard_count: int
    claim_starts_at: datetime
    claim_ends_at: datetime | None
    limit_total: int
    limit_per_day: int | None
    validity_kind: CouponValidity
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    code_source: str
    pattern: CodePattern
    loaded_at: float


# (database, batch id) -> the batch's claim terms, per process. Safe to cache because
# `update_batch` edits drafts only and claims need an active batch; the status itself is never
# taken from here: the statement that takes a unit of stock checks it (repo._TAKE_ACTIVE).
# Refreshed after CLAIM_TERMS_TTL_S so shards added to a running sale are picked first soon.
_claim_terms: dict[tuple[str, int], ClaimTerms] = {}
CLAIM_TERMS_TTL_S = 5.0
# (database, batch id, vault key) -> the code permutation (four derived keys) of an `auto` batch.
_permutations: dict[tuple[str, int, bytes], Permutation] = {}


def _terms_for_claim(session: Session, batch_id: int) -> ClaimTerms:
    memo = _memo_key(session, batch_id)
    now = time.monotonic()
    terms = _claim_terms.get(memo)
    if terms is not None and now - terms.loaded_at < CLAIM_TERMS_TTL_S:
        return terms
    row = repo.batch_terms(session, batch_id)
    if row is None:
        raise NotFound(f"no coupon batch {batch_id}", field="batch_id")
    if row.status != BatchStatus.ACTIVE:
        raise NotClaimable(f"this offer is {row.status}", field="batch_id")
    terms = ClaimTerms(
        owner_region=row.owner_region,
        shard_count=row.shard_count,
        claim_starts_at=clock.as_utc(row.claim_starts_at),
        claim_ends_at=clock.as_utc(row.claim_ends_at) if row.claim_ends_at else None,
        limit_total=row.limit_total,
        limit_per_day=row.limit_per_day,
        validity_kind=CouponValidity(row.validity_kind),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        valid_days=row.valid_days,
        code_source=row.code_source,
        pattern=CodePattern(
            charset=row.code_charset, prefix=row.code_prefix, length=row.code_length
        ),
        loaded_at=now,
    )
    if len(_claim_terms) > 10_000:  # bounded: batches are few, but a process lives long
        _claim_terms.clear()
    _claim_terms[memo] = terms
    return terms


def _permutation(session: Session, vault: Vault, batch_id: int, capacity: int) -> Permutation:
    key = _code_key(vault, batch_id)
    memo = (*_memo_key(session, batch_id), key)
    perm = _permutations.get(memo)
    if perm is None:
        if len(_permutations) > 10_000:
            _permutations.clear()
        perm = _permutations[memo] = Permutation(key, capacity)
    return perm


def auto_code(
    session: Session, vault: Vault, *, batch_id: int, pattern: CodePattern, slot: int
) -> tuple[str, bytes]:
    """(hash, encrypted code) of an `auto` batch's slot: the keyed permutation spelled out."""
    code = pattern.spell(_permutation(session, vault, batch_id, pattern.capacity)(slot))
    hashed = code_hash(vault, code)
    return hashed, _encrypt_code(vault, code, hashed)


def _take_slot(session: Session, *, batch_id: int, shard_count: int) -> tuple[int, int] | None:
    """(shard, slot) of one unit of stock, or None when the batch is sold out (409 if inactive)."""
    first = random.randrange(shard_count)
    # A random shard first: concurrent claimers mostly land on different rows.
    got = repo.take_from_active_shard(session, batch_id=batch_id, shard=first)
    if got:
        return first, slot_of(slot_base=got[0], size=got[1], remaining_after=got[2])
    # That shard is empty (or the batch stopped): fall back across the shards that still have
    # stock, in rotated order so late claimers do not all pile onto the lowest shard. Each try
    # is the same conditional UPDATE, so a shard emptied meanwhile is simply skipped.
    while True:
        status = repo.batch_status(session, batch_id)
        if status != BatchStatus.ACTIVE:
            raise NotClaimable(f"this offer is {status}", field="batch_id")
        left = repo.shards_left(session, batch_id)
        if not left:
            return None
        for shard in sorted(left, key=lambda s: (s - first) % max(shard_count, max(left) + 1)):
            got = repo.take_from_active_shard(session, batch_id=batch_id, shard=shard)
            if got:
                return shard, slot_of(slot_base=got[0], size=got[1], remaining_after=got[2])


def open_claim_terms(session: Session, *, batch_id: int) -> ClaimTerms:
    """The claim terms of a batch taking claims now: 404, or 409 sold out / not started / ended."""
    if seen_sold_out(session, batch_id=batch_id):
        raise SoldOut("sold out", field="batch_id", batch_id=batch_id)
    terms = _terms_for_claim(session, batch_id)
    now = clock.now()
    if now < terms.claim_starts_at:
        raise NotClaimable(
            "this offer has not started yet",
            field="batch_id",
            starts_at=terms.claim_starts_at.isoformat(),
        )
    if terms.claim_ends_at is not None and now >= terms.claim_ends_at:
        raise NotClaimable("this offer has ended", field="batch_id")
    return terms


def require_claimant(actor: Actor, *, subscriber_id: int) -> None:
    """403 unless the actor may claim for this subscriber (themself, or a key with the scope)."""
    if actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber claims only for themself")
    _require_api_scope(actor, "coupons:claim")
    if actor.kind == "staff":
        raise Forbidden("staff do not claim coupons for subscribers")


@dataclass(frozen=True)
class OfferView:
    """A batch as the claim center shows it to one subscriber."""

    batch: CouponBatch
    remaining: int
    total: int
    claimed: int
    starts_in_s: int


def claim_center(session: Session, *, subscriber_id: int, horizon_h: int = 24) -> list[OfferView]:
    """Active offers the subscriber may claim now or that start within the horizon."""
    me = subscribers.hold_active_subscriber(session, actor=SYSTEM, subscriber_id=subscriber_id)
    now = clock.now()
    batches = [
        b
        for b in repo.list_batches(
            session, owner_regions=["CN", me.province_code], statuses=[BatchStatus.ACTIVE.value]
        )
        if (b.claim_ends_at is None or b.claim_ends_at > now)
        and b.claim_starts_at <= now + timedelta(hours=horizon_h)
    ]
    ids = [b.id for b in batches]
    stock = repo.stock_levels(session, ids)
    mine = repo.claimed_counts(session, subscriber_id=subscriber_id, batch_ids=ids)
    return [
        OfferView(
            batch=b,
            remaining=stock.get(b.id, (0, 0))[0],
            total=stock.get(b.id, (0, 0))[1],
            claimed=mine.get(b.id, 0),
            starts_in_s=max(0, int((b.claim_starts_at - now).total_seconds())),
        )
        for b in sorted(batches, key=lambda b: (b.claim_starts_at, b.id))
    ]


@dataclass(frozen=True)
class WalletItem:
    """A coupon in its subscriber's wallet, with its clear code."""

    coupon: Coupon
    batch: CouponBatch
    code: str
    expired: bool


def wallet(session: Session, *, actor: Actor, vault: Vault, subscriber_id: int) -> list[WalletItem]:
    """A subscriber's coupons, newest first, codes in clear for that subscriber only."""
    if actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a wallet is shown only to its subscriber")
    if actor.kind == "staff":
        raise Forbidden("staff do not see coupon codes")
    _require_api_scope(actor, "coupons:claim")
    now = clock.now()
    return [
        WalletItem(
            coupon=c,
            batch=b,
            code=decrypt_code(vault, code_enc=c.code_enc, hashed=c.code_hash),
            expired=c.valid_until <= now,
        )
        for c, b in repo.wallet(session, subscriber_id)
    ]


def wallet_item(session: Session, *, actor: Actor, vault: Vault, coupon_id: int) -> WalletItem:
    """One coupon of the signed-in subscriber."""
    coupon = repo.get_coupon(session, coupon_id)
    if coupon is None or actor.kind != "subscriber" or str(coupon.subscriber_id) != actor.id:
        raise NotFound("no such coupon in your wallet", field="coupon_id")
    batch = repo.get_batch(session, coupon.batch_id)
    assert batch is not None
    return WalletItem(
        coupon=coupon,
        batch=batch,
        code=decrypt_code(vault, code_enc=coupon.code_enc, hashed=coupon.code_hash),
        expired=coupon.valid_until <= clock.now(),
    )
