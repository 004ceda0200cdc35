"""Prize coupons: a unit and a coupon of a batch paid by a red-envelope lottery tier."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    CouponBatch,
)
from perkflow.coupons.rules import (
    BatchStatus,
    CodeSource,
    CouponStatus,
    CouponValidity,
    coupon_validity,
)
from perkflow.errors import (
    Conflict,
    Forbidden,
    ValidationFailed,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import Actor

from .access import _can_edit
from .claims import NotClaimable, _encrypt_code, _pattern_of, _permutation, _take_slot, code_hash


def check_prize_batch(session: Session, *, actor: Actor, owner: str, batch_id: int) -> None:
    """A tier's prize batch: one the actor manages, usable by every player of the programme."""
    batch = repo.get_batch(session, batch_id)
    if batch is None:
        raise ValidationFailed(f"no coupon batch {batch_id}", field="tiers.prize_batch_id")
    if not _can_edit(actor, batch.owner_region):
        raise Forbidden("the prize batch belongs to another region")
    if batch.owner_region not in ("CN", owner):
        # A winner may live anywhere the programme reaches; a province's coupon would not be.
        raise ValidationFailed(
            "the prize batch must be national or the programme's own province",
            field="tiers.prize_batch_id",
        )
    if batch.status == BatchStatus.ENDED:
        raise ValidationFailed("the prize batch has ended", field="tiers.prize_batch_id")


def _code_for_slot(
    session: Session, *, vault: Vault, batch: CouponBatch, slot: int
) -> tuple[str, bytes]:
    """(hash, encrypted code) of a batch's slot, derived (`auto`) or taken from its pool."""
    if batch.code_source == CodeSource.AUTO:
        pattern = _pattern_of(batch)
        code = pattern.spell(_permutation(session, vault, batch.id, pattern.capacity)(slot))
        hashed = code_hash(vault, code)
        return hashed, _encrypt_code(vault, code, hashed)
    pooled = repo.pool_code(session, batch_id=batch.id, ordinal=slot)
    if pooled is None:
        raise Conflict("this batch's codes are missing; tell the operator", field="batch_id")
    return pooled.code_hash, pooled.code_enc


def take_prize_unit(session: Session, *, batch: CouponBatch) -> tuple[int, int] | None:
    """(shard, slot) of one unit of a prize batch, or None if it is sold out or not active."""
    try:
        return _take_slot(session, batch_id=batch.id, shard_count=batch.shard_count)
    except NotClaimable:
        return None


def issue_prize_coupon(
    session: Session,
    *,
    vault: Vault,
    batch: CouponBatch,
    subscriber_id: int,
    key: str,
    taken: tuple[int, int],
) -> int:
    """Put a prize coupon on a taken unit into the wallet once per key: its id."""
    shard, slot = taken
    now = clock.now()
    valid_from, valid_until = coupon_validity(
        kind=CouponValidity(batch.validity_kind),
        claimed_at=now,
        valid_from=batch.valid_from,
        valid_until=batch.valid_until,
        valid_days=batch.valid_days,
    )
    hashed, code_enc = _code_for_slot(session, vault=vault, batch=batch, slot=slot)
    coupon_id = repo.insert_claim(
        session,
        {
            "batch_id": batch.id,
            "subscriber_id": subscriber_id,
            "slot": slot,
            "code_hash": hashed,
            "code_enc": code_enc,
            "idempotency_key": key,
            "status": CouponStatus.CLAIMED.value,
            "channel": "lottery",
            "device_id": None,
            "claimed_at": now,
            "valid_from": valid_from,
            "valid_until": valid_until,
        },
    )
    if coupon_id is None:
        # Credited by a concurrent retry: give our unit back (its shard row is still locked by
        # this transaction, so the slot is ours to return) and keep theirs.
        repo.give_back_to_shard(session, batch_id=batch.id, shard=shard)
        coupon_id = repo.claim_id_by_key(session, key)
        assert coupon_id is not None
    return coupon_id


def prize_batch(session: Session, *, batch_id: int) -> CouponBatch:
    """A lottery tier's prize batch (the tier's foreign key guarantees it exists)."""
    batch = repo.get_batch(session, batch_id)
    assert batch is not None  # a foreign key
    return batch


def prize_coupon_id(session: Session, *, key: str) -> int | None:
    """The coupon a prize key already put into a wallet, if any."""
    return repo.claim_id_by_key(session, key)


def batches_of_coupons(session: Session, *, coupon_ids: Sequence[int]) -> dict[int, CouponBatch]:
    """The batch of each of these coupons, by coupon id."""
    return repo.batches_of_coupons(session, coupon_ids)
