"""Use cases of coupons: batches, claims, prize coupons, codes, redemption, binding."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    CodeJob,
    Coupon,
    Redemption,
)
from perkflow.coupons.models import (
    CouponBatch as CouponBatch,
)
from perkflow.coupons.rules import (
    BATCH_TRANSITIONS,
    CODE_SPARSITY,
    DEFAULT_REVERSAL_WINDOW_S,
    DEFAULT_SHARDS,
    MAX_STOCK,
    RATE_PER_DEVICE,
    RATE_PER_SUBSCRIBER,
    RATE_WINDOW_S,
    SOLD_OUT_MEMO_S,
    BatchStatus,
    CodePattern,
    CodeSource,
    CouponStatus,
    JobStatus,
    Permutation,
    Place,
    Refusal,
    Scope,
    ValidityKind,
    ValueKind,
    added_shards,
    addition_shards,
    claim_validity_problem,
    coupon_validity,
    discount_fen,
    imported_code_problem,
    normalize_code,
    pattern_problem,
    period_keys,
    rate_window,
    redemption_refusal,
    resolve_charset,
    reversal_problem,
    slot_of,
    split_stock,
    validity_problem,
    value_problem,
)
from perkflow.coupons.rules import slug_problem as slug_problem
from perkflow.coupons.schemas import BatchSpec, OfflineEntry
from perkflow.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm, province_of
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status as SubscriberStatus


class SoldOut(Conflict):
    code = "sold_out"


class LimitReached(Conflict):
    code = "limit_reached"


class NotClaimable(Conflict):
    code = "not_claimable"


class Refused(Conflict):
    """A redemption refused for a stated reason (see `rules.Refusal`)."""

    code = "redemption_refused"

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message, field="code", reason=reason.value)
        self.reason = reason


def _require_api_scope(actor: Actor, scope: str) -> None:
    if actor.kind == "api_key" and not actor.has_scope(scope):
        raise Forbidden(f"this key lacks the {scope} scope")


# ---- batches ------------------------------------------------------------------------------


def owner_for(session: Session, *, actor: Actor, requested: str | None) -> str:
    """The owner region of a batch or programme: CN or a province the actor's scope covers."""
    mine = province_of(actor.scope_path) if actor.kind != "system" else None
    owner = requested or mine or "CN"
    region = org.require_region(session, actor=actor, region_code=owner)
    if region.level not in ("group", "province"):
        raise ValidationFailed("the owner is the group (CN) or a province", field="owner_region")
    return region.code


def _can_edit(actor: Actor, owner_region: str) -> bool:
    limited = org.visible_province(actor)
    return actor.can(Perm.COUPONS_EDIT) and (limited is None or limited == owner_region)


def require_edit(actor: Actor, owner_region: str) -> None:
    """403 unless the actor manages coupons (and red envelopes) owned by this region."""
    org.require(actor, Perm.COUPONS_EDIT)
    if not _can_edit(actor, owner_region):
        raise Forbidden("this batch belongs to another region")


def _resolve_scope(session: Session, *, actor: Actor, owner: str, spec: BatchSpec) -> Scope:
    """Store codes and region codes checked against the owner's region; regions kept as paths."""
    owner_path = org.get_region(session, code=owner).path
    paths = []
    for code in spec.scope_regions:
        region = org.get_region(session, code=code.strip())
        if not (region.path == owner_path or region.path.startswith(owner_path + "/")):
            raise ValidationFailed(f"region {code} is outside the batch's owner", field="scope")
        paths.append(region.path)
    stores = []
    for code in spec.scope_stores:
        region = org.get_region(session, code=code.strip())
        if region.level != "store":
            raise ValidationFailed(f"{code} is not a store", field="scope_stores")
        if not region.path.startswith(owner_path + "/"):
            raise ValidationFailed(f"store {code} is outside the batch's owner", field="scope")
        stores.append(region.code)
    if owner != "CN" and not paths and not stores:
        paths = [owner_path]  # a province's batch is only good in that province
    return Scope(
        stores=tuple(stores),
        region_paths=tuple(paths),
        partners=tuple(p.strip() for p in spec.scope_partners if p.strip()),
        categories=tuple(c.strip() for c in spec.scope_categories if c.strip()),
    )


def _validate_spec(spec: BatchSpec) -> CodePattern:
    problem = slug_problem(spec.code)
    if problem:
        raise ValidationFailed(f"code: {problem}", field="code")
    problem = value_problem(
        value_kind=spec.value_kind,
        amount_fen=spec.amount_fen,
        percent_off=spec.percent_off,
        cap_fen=spec.cap_fen,
    )
    if problem:
        raise ValidationFailed(problem, field="value_kind")
    problem = validity_problem(
        kind=spec.validity_kind,
        valid_from=spec.valid_from,
        valid_until=spec.valid_until,
        valid_days=spec.valid_days,
    )
    if problem:
        raise ValidationFailed(problem, field="validity_kind")
    for name in ("valid_from", "valid_until", "claim_starts_at", "claim_ends_at"):
        value = getattr(spec, name)
        if value is not None and value.tzinfo is None:
            raise ValidationFailed("give times with their zone offset", field=name)
    if spec.claim_starts_at and spec.claim_ends_at and spec.claim_ends_at <= spec.claim_starts_at:
        raise ValidationFailed("the claim window must end after it starts", field="claim_ends_at")
    problem = claim_validity_problem(
        kind=spec.validity_kind,
        valid_until=spec.valid_until,
        claim_starts_at=spec.claim_starts_at or clock.now(),
    )
    if problem:
        raise ValidationFailed(problem, field="valid_until")
    if spec.limit_per_day is not None and spec.limit_per_day > spec.limit_total:
        raise ValidationFailed(
            "the daily limit cannot exceed the total limit", field="limit_per_day"
        )
    pattern = CodePattern(
        charset=resolve_charset(spec.code_charset.strip()),
        prefix=spec.code_prefix.strip().upper(),
        length=spec.code_length,
    )
    if spec.code_source != CodeSource.IMPORT:
        problem = pattern_problem(pattern, count=spec.stock_total)
        if problem:
            raise ValidationFailed(problem, field="code_charset")
    return pattern


def _apply_spec(
    batch: CouponBatch, spec: BatchSpec, *, owner: str, scope: Scope, pattern: CodePattern
) -> None:
    batch.code = spec.code
    batch.name_zh = spec.name_zh.strip()
    batch.name_en = spec.name_en.strip()
    batch.owner_region = owner
    batch.value_kind = spec.value_kind.value
    batch.amount_fen = spec.amount_fen if spec.value_kind == "amount" else 0
    batch.percent_off = spec.percent_off if spec.value_kind == "percent" else None
    batch.cap_fen = spec.cap_fen if spec.value_kind == "percent" else None
    batch.min_spend_fen = spec.min_spend_fen
    batch.scope_stores = list(scope.stores)
    batch.scope_regions = list(scope.region_paths)
    batch.scope_partners = list(scope.partners)
    batch.scope_categories = list(scope.categories)
    batch.validity_kind = spec.validity_kind.value
    fixed = spec.validity_kind == ValidityKind.FIXED
    batch.valid_from = spec.valid_from if fixed else None
    batch.valid_until = spec.valid_until if fixed else None
    batch.valid_days = None if fixed else spec.valid_days
    batch.claim_starts_at = spec.claim_starts_at or clock.now()
    batch.claim_ends_at = spec.claim_ends_at
    batch.flash_sale = spec.flash_sale
    batch.stock_total = spec.stock_total
    default_shards = DEFAULT_SHARDS if spec.flash_sale else 1
    batch.shard_count = len(split_stock(spec.stock_total, spec.shard_count or default_shards))
    batch.limit_total = spec.limit_total
    batch.limit_per_day = spec.limit_per_day
    batch.code_source = spec.code_source.value
    batch.code_charset = pattern.charset
    batch.code_prefix = pattern.prefix
    batch.code_length = pattern.length
    batch.reversal_window_s = (
        spec.reversal_window_s if spec.reversal_window_s is not None else DEFAULT_REVERSAL_WINDOW_S
    )


def create_batch(session: Session, *, actor: Actor, spec: BatchSpec) -> CouponBatch:
    """A draft batch with its stock split into shards."""
    org.require(actor, Perm.COUPONS_EDIT)
    owner = owner_for(session, actor=actor, requested=spec.owner_region)
    require_edit(actor, owner)
    pattern = _validate_spec(spec)
    scope = _resolve_scope(session, actor=actor, owner=owner, spec=spec)
    now = clock.now()
    batch = CouponBatch(
        status=BatchStatus.DRAFT.value, created_by=actor.name, created_at=now, updated_at=now
    )
    _apply_spec(batch, spec, owner=owner, scope=scope, pattern=pattern)
    session.add(batch)
    try:
        session.flush()  # the unique batch code decides duplicates; the id goes to the shards
    except IntegrityError as exc:
        raise Conflict(f"batch code {spec.code!r} is taken", field="code") from exc
    repo.replace_shards(session, batch.id, split_stock(batch.stock_total, batch.shard_count))
    org.record_audit(
        session,
        actor=actor,
        action="coupon_batch.create",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"code": batch.code, "stock": batch.stock_total, "owner": owner},
    )
    return batch


def update_batch(session: Session, *, actor: Actor, batch_id: int, spec: BatchSpec) -> CouponBatch:
    """Change a draft batch; once active, only its status changes."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    if batch.status != BatchStatus.DRAFT:
        raise Conflict("only a draft batch can be edited", field="status")
    owner = owner_for(session, actor=actor, requested=spec.owner_region or batch.owner_region)
    require_edit(actor, owner)
    pattern = _validate_spec(spec)
    scope = _resolve_scope(session, actor=actor, owner=owner, spec=spec)
    if batch.pool_size and (
        spec.code_source.value != batch.code_source
        or (pattern.charset, pattern.prefix, pattern.length)
        != (batch.code_charset, batch.code_prefix, batch.code_length)
    ):
        raise Conflict("codes were already made; the code settings are fixed", field="code_source")
    _apply_spec(batch, spec, owner=owner, scope=scope, pattern=pattern)
    batch.updated_at = clock.now()
    try:
        session.flush()  # the unique batch code decides duplicates
    except IntegrityError as exc:
        raise Conflict(f"batch code {spec.code!r} is taken", field="code") from exc
    repo.replace_shards(session, batch.id, split_stock(batch.stock_total, batch.shard_count))
    org.record_audit(
        session,
        actor=actor,
        action="coupon_batch.update",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"code": batch.code, "stock": batch.stock_total},
    )
    return batch


def get_batch(session: Session, *, actor: Actor, batch_id: int) -> CouponBatch:
    """A batch the actor's region may see (404/403)."""
    batch = repo.get_batch(session, batch_id)
    if batch is None:
        raise NotFound(f"no coupon batch {batch_id}", field="batch_id")
    limited = org.visible_province(actor)
    if actor.kind == "staff" and limited is not None and batch.owner_region not in ("CN", limited):
        raise Forbidden("this batch belongs to another region")
    return batch


def read_batch(session: Session, *, actor: Actor, batch_id: int) -> CouponBatch:
    """A batch for a reader: staff who manage batches in its region, or a key with coupons:read."""
    # Permission before existence: a caller who may not read batches learns nothing of ids.
    org.require_perm_or_scope(actor, perm=Perm.COUPONS_EDIT, scope="coupons:read")
    return get_batch(session, actor=actor, batch_id=batch_id)


def list_batches(session: Session, *, actor: Actor) -> Sequence[CouponBatch]:
    """Batches the actor may see: national staff and keys see all, a province its own."""
    org.require_perm_or_scope(actor, perm=Perm.COUPONS_EDIT, scope="coupons:read")
    limited = org.visible_province(actor)
    return repo.list_batches(session, owner_regions=[limited] if limited else None, statuses=None)


def set_batch_status(
    session: Session, *, actor: Actor, batch_id: int, status: BatchStatus
) -> CouponBatch:
    """Activate, pause, resume or end a batch; an active pool batch needs its codes first."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    current = BatchStatus(batch.status)
    if status not in BATCH_TRANSITIONS[current]:
        raise Conflict(f"cannot go from {current.value} to {status.value}", field="status")
    if (
        status == BatchStatus.ACTIVE
        and batch.code_source != CodeSource.AUTO
        and batch.pool_size < batch.stock_total
    ):
        raise Conflict(
            f"only {batch.pool_size:,} of {batch.stock_total:,} codes exist; make them first",
            field="status",
        )
    # Compare-and-set: two editors cannot both move the batch from the same status.
    if not repo.set_batch_status(
        session, batch_id=batch.id, expected=current.value, target=status.value, at=clock.now()
    ):
        raise Conflict("the batch changed meanwhile; reload", field="status")
    session.refresh(batch)
    org.record_audit(
        session,
        actor=actor,
        action="coupon_batch.status",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"from": current.value, "to": status.value},
    )
    return batch


@dataclass(frozen=True)
class StockView:
    """Stock of a batch: total, remaining, per shard, and what became of the claimed units."""

    total: int
    remaining: int
    shards: list[int]
    claimed: int
    redeemed: int


def _stock_view(session: Session, batch_id: int) -> StockView:
    rows = repo.shards(session, batch_id)
    return StockView(
        total=sum(s.size for s in rows),
        remaining=sum(s.remaining for s in rows),
        shards=[s.remaining for s in rows],
        claimed=repo.count_coupons(session, batch_id),
        redeemed=repo.redemption_count(session, batch_id),
    )


def stock_of(session: Session, *, actor: Actor, batch_id: int) -> StockView:
    """Stock levels of one batch."""
    batch = read_batch(session, actor=actor, batch_id=batch_id)
    return _stock_view(session, batch.id)


def stock_levels(session: Session, *, batch_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(remaining, total) per batch, for lists."""
    return repo.stock_levels(session, batch_ids)


def _stock_limit(batch: CouponBatch) -> int:
    """The most stock a batch can hold: its codes must exist and stay unguessable."""
    if batch.code_source == CodeSource.AUTO:
        # An `auto` code is the slot through a permutation of the pattern's space: every slot
        # must stay inside it, and sparse enough that guessing stays hopeless (as at creation).
        return min(MAX_STOCK, _pattern_of(batch).capacity // CODE_SPARSITY)
    return MAX_STOCK


def add_stock(session: Session, *, actor: Actor, batch_id: int, quantity: int) -> StockView:
    """Add units to an active or paused batch as new shards with slots after every existing one."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    if not 1 <= quantity <= MAX_STOCK:
        raise ValidationFailed(f"add 1-{MAX_STOCK:,} units", field="quantity")
    if batch.status not in (BatchStatus.ACTIVE, BatchStatus.PAUSED):
        raise Conflict(
            f"stock is added to an active or paused batch, not a {batch.status} one",
            field="status",
        )
    limit = _stock_limit(batch)
    shards = split_stock(quantity, addition_shards(quantity=quantity, flash_sale=batch.flash_sale))
    grown = repo.grow_stock(
        session,
        batch_id=batch.id,
        quantity=quantity,
        shards=len(shards),
        max_total=limit,
        pooled=batch.code_source != CodeSource.AUTO,
        at=clock.now(),
    )
    if grown is None:
        session.refresh(batch)  # why the conditional UPDATE refused, from the committed row
        if batch.status not in (BatchStatus.ACTIVE, BatchStatus.PAUSED):
            raise Conflict(f"the batch is {batch.status}; reload", field="status")
        room = max(0, limit - batch.stock_total)
        if batch.code_source != CodeSource.AUTO:
            room = min(room, max(0, batch.pool_size - batch.stock_total))
            raise Conflict(
                f"the pool has codes for {room:,} more units; add codes first",
                field="quantity",
                room=room,
            )
        raise Conflict(
            f"the code pattern has room for {room:,} more units", field="quantity", room=room
        )
    new_total, new_count = grown
    added = added_shards(
        stock_total=new_total - quantity,
        shard_count=new_count - len(shards),
        quantity=quantity,
        shards=len(shards),
    )
    repo.add_shards(session, batch.id, added)
    # Per-process memos: this process sees the new stock at once, others within their TTL
    # (a claim that finds its first shard empty already falls back to every shard with stock).
    _sold_out_seen.pop(_memo_key(session, batch.id), None)
    _claim_terms.pop(_memo_key(session, batch.id), None)
    org.append_audit(
        session,
        actor=actor,
        action="coupon_batch.add_stock",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={
            "quantity": quantity,
            "total": new_total,
            "slots": [new_total - quantity, new_total - 1],
            "shards": [n for n, _, _ in added],
        },
    )
    return _stock_view(session, batch.id)


def activity(
    session: Session, *, actor: Actor, batch_id: int, minutes: int = 60
) -> dict[str, list[int]]:
    """Claims and redemptions per minute over the last minutes, for the live charts."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    now = clock.now()
    end = int(now.timestamp() // 60)
    start = end - minutes + 1
    since = datetime.fromtimestamp(start * 60, tz=now.tzinfo)
    claims = dict(repo.per_minute(session, batch_id=batch.id, since=since, what="claims"))
    redemptions = dict(repo.per_minute(session, batch_id=batch.id, since=since, what="redeem"))
    minutes_axis = list(range(start, end + 1))
    return {
        "minutes": minutes_axis,
        "claims": [claims.get(m, 0) for m in minutes_axis],
        "redemptions": [redemptions.get(m, 0) for m in minutes_axis],
    }


# ---- claims -------------------------------------------------------------------------------

# (database, batch id) -> monotonic time a process saw the batch sold out. Per process on
# purpose: it only saves a round trip; the ledger stays the one truth on stock.
_sold_out_seen: dict[tuple[str, int], float] = {}


def _memo_key(session: Session, batch_id: int) -> tuple[str, int]:
    bind = session.get_bind()
    return (str(bind.engine.url), batch_id)


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


def _replay(coupon: Coupon, *, batch_id: int, subscriber_id: int) -> ClaimOutcome:
    if coupon.batch_id != batch_id or coupon.subscriber_id != subscriber_id:
        raise Conflict("this idempotency key was used for another claim", field="idempotency_key")
    return ClaimOutcome(coupon=ClaimedCoupon.of(coupon), replayed=True)


@dataclass(frozen=True)
class _ClaimTerms:
    """What a claim needs of a batch that left draft: none of it changes after that."""

    owner_region: str
    shard_count: int
    claim_starts_at: datetime
    claim_ends_at: datetime | None
    limit_total: int
    limit_per_day: int | None
    validity_kind: ValidityKind
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
_claim_terms: dict[tuple[str, int], _ClaimTerms] = {}
CLAIM_TERMS_TTL_S = 5.0
# (database, batch id, vault key) -> the code permutation (four derived keys) of an `auto` batch.
_permutations: dict[tuple[str, int, bytes], Permutation] = {}


def _terms_for_claim(session: Session, batch_id: int) -> _ClaimTerms:
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
    terms = _ClaimTerms(
        owner_region=row.owner_region,
        shard_count=row.shard_count,
        claim_starts_at=clock.as_utc(row.claim_starts_at),
        claim_ends_at=clock.as_utc(row.claim_ends_at) if row.claim_ends_at else None,
        limit_total=row.limit_total,
        limit_per_day=row.limit_per_day,
        validity_kind=ValidityKind(row.validity_kind),
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


def _subscriber_for_claim(session: Session, *, owner_region: str, subscriber_id: int) -> None:
    # Share-locked: a churn committed meanwhile waits for this claim, never slips past it.
    sub = subscribers.hold_active_subscriber(session, actor=SYSTEM, subscriber_id=subscriber_id)
    if owner_region != "CN" and sub.province_code != owner_region:
        raise Forbidden("this offer is for subscribers of another province", field="batch_id")


def _replay_key(session: Session, key: str, *, batch_id: int, subscriber_id: int) -> ClaimOutcome:
    twin = repo.coupon_by_key(session, key)
    assert twin is not None
    return _replay(twin, batch_id=batch_id, subscriber_id=subscriber_id)


def open_claim_terms(session: Session, *, batch_id: int) -> _ClaimTerms:
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


def claim_coupon(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    batch_id: int,
    subscriber_id: int,
    idempotency_key: str,
    channel: str,
    device_id: str | None,
    zone: str,
) -> ClaimOutcome:
    """Claim one coupon into a subscriber's wallet: stock, limits and the key decide atomically."""
    require_claimant(actor, subscriber_id=subscriber_id)
    key = f"{subscriber_id}:{idempotency_key}"
    if repo.claim_id_by_key(session, key) is not None:
        return _replay_key(session, key, batch_id=batch_id, subscriber_id=subscriber_id)
    terms = open_claim_terms(session, batch_id=batch_id)
    now = clock.now()
    _subscriber_for_claim(session, owner_region=terms.owner_region, subscriber_id=subscriber_id)

    total, day = period_keys(clock.today(zone))
    limits = [(total, terms.limit_total)]
    if terms.limit_per_day is not None:
        limits.append((day, terms.limit_per_day))
    if not repo.bump_claim_counters(
        session, batch_id=batch_id, subscriber_id=subscriber_id, limits=limits
    ):
        # A concurrent twin with our key may have taken the last allowance: replay it.
        if repo.claim_id_by_key(session, key) is not None:
            return _replay_key(session, key, batch_id=batch_id, subscriber_id=subscriber_id)
        raise LimitReached("you have claimed as many as this offer allows", field="batch_id")
    taken = _take_slot(session, batch_id=batch_id, shard_count=terms.shard_count)
    if taken is None:
        _sold_out_seen[_memo_key(session, batch_id)] = time.monotonic()
        if repo.claim_id_by_key(session, key) is not None:
            return _replay_key(session, key, batch_id=batch_id, subscriber_id=subscriber_id)
        raise SoldOut("sold out", field="batch_id", batch_id=batch_id)
    shard, slot = taken
    valid_from, valid_until = coupon_validity(
        kind=terms.validity_kind,
        claimed_at=now,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        valid_days=terms.valid_days,
    )
    if terms.code_source == CodeSource.AUTO:
        pattern = terms.pattern
        code = pattern.spell(_permutation(session, vault, batch_id, pattern.capacity)(slot))
        hashed = code_hash(vault, code)
        code_enc = _encrypt_code(vault, code, hashed)
    else:
        pooled = repo.pool_code(session, batch_id=batch_id, ordinal=slot)
        if pooled is None:
            raise Conflict("this batch's codes are missing; tell the operator", field="batch_id")
        hashed, code_enc = pooled.code_hash, pooled.code_enc
    values = {
        "batch_id": batch_id,
        "subscriber_id": subscriber_id,
        "slot": slot,
        "code_hash": hashed,
        "code_enc": code_enc,
        "idempotency_key": key,
        "status": CouponStatus.CLAIMED.value,
        "channel": channel,
        "device_id": device_id[:64] if device_id else None,
        "claimed_at": now,
        "valid_from": valid_from,
        "valid_until": valid_until,
    }
    coupon_id = repo.insert_claim(session, values)
    if coupon_id is None:
        # A twin request with the same key committed while we worked. Undo our own stock and
        # counter changes (their rows are still locked by us, so this is exact), then replay.
        repo.give_back_to_shard(session, batch_id=batch_id, shard=shard)
        repo.unbump_claim_counters(
            session, batch_id=batch_id, subscriber_id=subscriber_id, periods=[p for p, _ in limits]
        )
        return _replay_key(session, key, batch_id=batch_id, subscriber_id=subscriber_id)
    # Sent at once through a cached Core INSERT (no ORM flush at commit); same transaction.
    org.append_audit(
        session,
        actor=actor,
        action="coupon.claim",
        target_type="coupon",
        target_id=str(coupon_id),
        details={"batch": batch_id, "subscriber": subscriber_id, "channel": channel},
    )
    return ClaimOutcome(coupon=ClaimedCoupon.inserted(coupon_id, values), replayed=False)


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


# ---- prize coupons (paid by red-envelope lottery tiers) ------------------------------------


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
        kind=ValidityKind(batch.validity_kind),
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


# ---- codes --------------------------------------------------------------------------------


def start_code_job(
    session: Session, *, actor: Actor, batch_id: int, count: int | None = None
) -> CodeJob:
    """Queue generating a pattern batch's missing codes, or `count` more (stock to add later)."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    if batch.code_source != CodeSource.PATTERN:
        raise Conflict("only a pattern batch has codes generated", field="code_source")
    missing = batch.stock_total - batch.pool_size if count is None else count
    if count is not None:
        if not 1 <= count <= MAX_STOCK:
            raise ValidationFailed(f"make 1-{MAX_STOCK:,} codes", field="count")
        problem = pattern_problem(_pattern_of(batch), count=batch.pool_size + count)
        if problem:
            raise ValidationFailed(problem, field="count")
    if missing <= 0:
        raise Conflict("every code of this batch exists", field="batch_id")
    now = clock.now()
    cursor = 0
    previous = repo.jobs_of(session, batch.id)
    if previous:
        cursor = max(j.cursor for j in previous)
    job = CodeJob(
        batch_id=batch.id,
        kind="generate",
        status=JobStatus.QUEUED.value,
        total=missing,
        done=0,
        cursor=cursor,
        collisions=0,
        created_by=actor.name,
        created_at=now,
        heartbeat_at=now,
    )
    session.add(job)
    try:
        session.flush()  # the partial unique index allows one live job per batch
    except IntegrityError as exc:
        raise Conflict("a code job of this batch is already running", field="batch_id") from exc
    org.record_audit(
        session,
        actor=actor,
        action="coupon_codes.start",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"job": job.id, "count": missing},
    )
    return job


def get_job(session: Session, *, job_id: int) -> CodeJob:
    """A code job by id, or 404."""
    job = repo.get_job(session, job_id)
    if job is None:
        raise NotFound(f"no code job {job_id}", field="job_id")
    return job


def jobs_of(session: Session, *, batch_id: int) -> Sequence[CodeJob]:
    """A batch's code jobs, newest first."""
    return repo.jobs_of(session, batch_id)


def job_is_stale(job: CodeJob, *, after_s: int = 30) -> bool:
    """Whether a running job's worker stopped beating (crashed): it may be resumed."""
    return job.status == JobStatus.RUNNING and clock.now() - job.heartbeat_at > timedelta(
        seconds=after_s
    )


def run_code_chunk(session: Session, *, vault: Vault, job_id: int, size: int = 5000) -> CodeJob:
    """Generate the next chunk of a job's codes; the caller commits after each chunk."""
    job = get_job(session, job_id=job_id)
    if job.status in (JobStatus.DONE, JobStatus.FAILED):
        return job
    batch = repo.get_batch(session, job.batch_id)
    assert batch is not None
    session.refresh(batch)  # pool_size moves by CAS statements: read the committed value
    pattern = _pattern_of(batch)
    perm = Permutation(_code_key(vault, batch.id), pattern.capacity)
    want = min(size, job.total - job.done)
    candidates: list[tuple[str, str]] = []
    cursor = job.cursor
    while len(candidates) < want and cursor < pattern.capacity:
        code = pattern.spell(perm(cursor))
        candidates.append((code, code_hash(vault, code)))
        cursor += 1
    # Within a batch the permutation cannot repeat a code; another batch with the same
    # pattern can, so such codes are skipped (the unique index backs this up).
    taken = repo.existing_hashes(session, [h for _, h in candidates])
    fresh = [(c, h) for c, h in candidates if h not in taken]
    base = batch.pool_size
    repo.insert_pool_codes(
        session,
        [
            {
                "batch_id": batch.id,
                "ordinal": base + i,
                "code_hash": h,
                "code_enc": _encrypt_code(vault, c, h),
            }
            for i, (c, h) in enumerate(fresh)
        ],
    )
    # CAS on the pool size: a second worker on the same job would fail here, not interleave.
    if not repo.advance_pool(session, batch_id=batch.id, expected=base, added=len(fresh)):
        raise Conflict("another worker is filling this batch's pool", field="job_id")
    job.done += len(fresh)
    job.collisions += len(candidates) - len(fresh)
    job.cursor = cursor
    job.heartbeat_at = clock.now()
    job.status = JobStatus.RUNNING.value
    if job.done >= job.total:
        job.status = JobStatus.DONE.value
        job.finished_at = clock.now()
        org.record_audit(
            session,
            actor=Actor(kind="system", id="job", name=f"code job {job.id}"),
            action="coupon_codes.done",
            target_type="coupon_batch",
            target_id=str(batch.id),
            details={"job": job.id, "done": job.done, "collisions": job.collisions},
        )
    elif cursor >= pattern.capacity:
        job.status = JobStatus.FAILED.value
        job.error = "the pattern ran out of codes"
    session.flush()  # the caller's commit makes the chunk and the progress durable together
    return job


def fail_job(session: Session, *, job_id: int, error: str) -> None:
    """Mark a job failed (it can be started again and continues where it stopped)."""
    job = get_job(session, job_id=job_id)
    job.status = JobStatus.FAILED.value
    job.error = error[:500]
    job.finished_at = clock.now()


@dataclass(frozen=True)
class ImportReport:
    """What an import of codes did."""

    added: int
    duplicates: int
    invalid: list[tuple[int, str]]


def import_codes(
    session: Session, *, actor: Actor, vault: Vault, batch_id: int, codes: Sequence[str]
) -> ImportReport:
    """Append imported codes to a batch's pool; malformed lines are reported, duplicates skipped."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    session.refresh(batch)  # pool_size moves by CAS statements: read the committed value
    if batch.code_source != CodeSource.IMPORT:
        raise Conflict("only an import batch takes imported codes", field="code_source")
    seen: set[str] = set()
    clean: list[tuple[str, str]] = []
    invalid: list[tuple[int, str]] = []
    duplicates = 0
    for line_no, raw in enumerate(codes, start=1):
        code = normalize_code(raw)
        if not code:
            continue
        problem = imported_code_problem(code)
        if problem:
            invalid.append((line_no, problem))
            continue
        if code in seen:
            duplicates += 1
            continue
        seen.add(code)
        clean.append((code, code_hash(vault, code)))
    taken = repo.existing_hashes(session, [h for _, h in clean])
    fresh = [(c, h) for c, h in clean if h not in taken]
    duplicates += len(clean) - len(fresh)
    base = batch.pool_size
    if fresh:
        repo.insert_pool_codes(
            session,
            [
                {
                    "batch_id": batch.id,
                    "ordinal": base + i,
                    "code_hash": h,
                    "code_enc": _encrypt_code(vault, c, h),
                }
                for i, (c, h) in enumerate(fresh)
            ],
        )
        # CAS on the pool size: two imports at once cannot hand out the same ordinals.
        if not repo.advance_pool(session, batch_id=batch.id, expected=base, added=len(fresh)):
            raise Conflict("another import into this batch is running; retry", field="batch_id")
        session.refresh(batch)
    org.record_audit(
        session,
        actor=actor,
        action="coupon_codes.import",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"added": len(fresh), "duplicates": duplicates, "invalid": len(invalid)},
    )
    return ImportReport(added=len(fresh), duplicates=duplicates, invalid=invalid)


def export_codes(
    session: Session, *, actor: Actor, vault: Vault, batch_id: int, after: int = -1, limit: int
) -> list[tuple[int, str]]:
    """(ordinal, clear code) of a pool, for printing; audited."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    rows = repo.pool_codes_page(session, batch_id=batch.id, after_ordinal=after, limit=limit)
    if after < 0:
        org.record_audit(
            session,
            actor=actor,
            action="coupon_codes.export",
            target_type="coupon_batch",
            target_id=str(batch.id),
        )
    return [(r.ordinal, decrypt_code(vault, code_enc=r.code_enc, hashed=r.code_hash)) for r in rows]


# ---- redemption ---------------------------------------------------------------------------


def _place_of(actor: Actor, *, category: str | None) -> Place:
    """Where an actor redeems: a clerk's store, or a partner key's merchant."""
    if actor.kind == "staff":
        org.require(actor, Perm.REDEEM)
        parts = actor.scope_path.split("/")
        if len(parts) != 4:
            raise Forbidden("redeem from a store account: your scope is not a store")
        return Place(
            store_code=parts[-1], store_path=actor.scope_path, partner_code=None, category=category
        )
    if actor.kind == "api_key":
        _require_api_scope(actor, "coupons:redeem")
        if actor.owner_kind != "partner" or not actor.owner_ref:
            raise Forbidden("only a partner merchant's key redeems coupons")
        return Place(
            store_code=None, store_path=None, partner_code=actor.owner_ref, category=category
        )
    raise Forbidden("only store clerks and partner merchants redeem coupons")


def _scope_of(batch: CouponBatch) -> Scope:
    return Scope(
        stores=tuple(batch.scope_stores),
        region_paths=tuple(batch.scope_regions),
        partners=tuple(batch.scope_partners),
        categories=tuple(batch.scope_categories),
    )


def _find_coupon(session: Session, *, vault: Vault, code: str) -> Coupon:
    normalized = normalize_code(code)
    coupon = repo.coupon_by_hash(session, code_hash(vault, normalized)) if normalized else None
    if coupon is None:
        raise Refused(Refusal.NOT_FOUND, "no coupon has this code")
    return coupon


@dataclass(frozen=True)
class CouponCard:
    """A coupon as the clerk sees it before redeeming: the subscriber masked."""

    coupon: Coupon
    batch: CouponBatch
    phone: str
    refusal: tuple[Refusal, str] | None


def look_up_coupon(
    session: Session, *, actor: Actor, vault: Vault, code: str, order_fen: int | None = None
) -> CouponCard:
    """A coupon by its typed or scanned code, and whether it can be redeemed here now."""
    place = _place_of(actor, category=None)
    coupon = _find_coupon(session, vault=vault, code=code)
    batch = repo.get_batch(session, coupon.batch_id)
    assert batch is not None
    me = subscribers.subscriber_home(session, vault=vault, subscriber_id=coupon.subscriber_id)
    scope = _scope_of(batch)
    refusal = redemption_refusal(
        coupon_status=coupon.status,
        batch_status=batch.status,
        now=clock.now(),
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        # The purchase category is only known when redeeming; a lookup does not judge it.
        scope=Scope(scope.stores, scope.region_paths, scope.partners, ()),
        place=place,
        min_spend_fen=batch.min_spend_fen,
        order_fen=order_fen if order_fen is not None else batch.min_spend_fen,
    )
    return CouponCard(coupon=coupon, batch=batch, phone=me.phone, refusal=refusal)


def redeem_coupon(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    code: str,
    order_fen: int,
    category: str | None = None,
    source: str = "counter",
    recorded_at: datetime | None = None,
    client_ref: str | None = None,
) -> Redemption:
    """Redeem a coupon once, here and now; of two clerks at the same moment exactly one wins."""
    place = _place_of(actor, category=category)
    coupon = _find_coupon(session, vault=vault, code=code)
    batch = repo.get_batch(session, coupon.batch_id)
    assert batch is not None
    now = clock.now()
    when = recorded_at or now
    refusal = redemption_refusal(
        coupon_status=coupon.status,
        batch_status=batch.status,
        now=when,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        scope=_scope_of(batch),
        place=place,
        min_spend_fen=batch.min_spend_fen,
        order_fen=order_fen,
    )
    if refusal:
        raise Refused(*refusal)
    # Compare-and-set claimed -> redeemed: the second of two simultaneous clerks updates no row.
    if not repo.cas_coupon(
        session,
        coupon_id=coupon.id,
        expected=CouponStatus.CLAIMED.value,
        target=CouponStatus.REDEEMED.value,
        at=now,
    ):
        raise Refused(Refusal.ALREADY_REDEEMED, "this coupon was already redeemed")
    off = discount_fen(
        value_kind=ValueKind(batch.value_kind),
        amount_fen=batch.amount_fen,
        percent_off=batch.percent_off,
        cap_fen=batch.cap_fen,
        order_fen=order_fen,
    )
    redemption = Redemption(
        coupon_id=coupon.id,
        batch_id=batch.id,
        store_code=place.store_code,
        partner_code=place.partner_code,
        category=category,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_name=actor.name,
        source=source,
        client_ref=client_ref,
        order_fen=order_fen,
        discount_fen=off,
        recorded_at=when,
        at=now,
        status="done",
    )
    session.add(redemption)
    try:
        session.flush()  # the partial unique index backs the CAS; the id goes to the audit
    except IntegrityError as exc:
        raise Refused(Refusal.DUPLICATE_UPLOAD, "this entry was already uploaded") from exc
    org.record_audit(
        session,
        actor=actor,
        action="coupon.redeem",
        target_type="coupon",
        target_id=str(coupon.id),
        details={
            "redemption": redemption.id,
            "store": place.store_code,
            "partner": place.partner_code,
            "order_fen": order_fen,
            "discount_fen": off,
            "source": source,
        },
    )
    session.expire(coupon)
    return redemption


def reverse_redemption(
    session: Session, *, actor: Actor, redemption_id: int, reason: str
) -> Redemption:
    """Undo a redemption within the batch's window: the coupon goes back to the wallet."""
    place = _place_of(actor, category=None)
    redemption = repo.get_redemption(session, redemption_id)
    if redemption is None:
        raise NotFound(f"no redemption {redemption_id}", field="redemption_id")
    if (place.store_code or place.partner_code) not in (
        redemption.store_code,
        redemption.partner_code,
    ):
        raise Forbidden("only the store or partner that redeemed it can reverse it")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    batch = repo.get_batch(session, redemption.batch_id)
    assert batch is not None
    now = clock.now()
    problem = reversal_problem(
        status=redemption.status,
        redeemed_at=redemption.at,
        now=now,
        window_s=batch.reversal_window_s,
    )
    if problem:
        raise Conflict(problem, field="redemption_id")
    # Coupon first, then the redemption: the same row order as redeeming, so no deadlock.
    if not repo.cas_coupon(
        session,
        coupon_id=redemption.coupon_id,
        expected=CouponStatus.REDEEMED.value,
        target=CouponStatus.CLAIMED.value,
        at=None,
    ) or not repo.cas_reverse(
        session, redemption_id=redemption.id, at=now, by=actor.name, reason=reason.strip()
    ):
        raise Conflict("this redemption changed meanwhile; reload", field="redemption_id")
    session.refresh(redemption)
    org.record_audit(
        session,
        actor=actor,
        action="coupon.reverse",
        target_type="coupon",
        target_id=str(redemption.coupon_id),
        details={"redemption": redemption.id, "reason": reason.strip()},
    )
    # Back in the wallet of a subscriber who churned or was suspended since: binding applies.
    coupon = repo.get_coupon(session, redemption.coupon_id)
    if coupon is not None:
        sid = coupon.subscriber_id
        status = subscribers.subscriber_statuses(session, subscriber_ids=[sid]).get(sid)
        if status is not None and status != SubscriberStatus.ACTIVE:
            bind_coupons(session, actor=actor, subscriber_id=sid, status=status, reason="reversed")
    return redemption


@dataclass(frozen=True)
class OfflineResult:
    """The fate of one offline entry: a redemption, or a refusal with its reason."""

    client_ref: str
    redemption_id: int | None
    reason: str | None
    message: str | None


def redeem_offline(
    session: Session, *, actor: Actor, vault: Vault, entries: Sequence[OfflineEntry]
) -> list[OfflineResult]:
    """Redeem a store's offline batch in the order the clerk took them; each entry on its own."""
    place = _place_of(actor, category=None)
    results: dict[str, OfflineResult] = {}
    refs = [e.client_ref for e in entries]
    if len(set(refs)) != len(refs):
        raise ValidationFailed("client_ref must be unique within an upload", field="entries")
    # The earliest entry of a code wins; later ones are refused as already redeemed.
    for entry in sorted(entries, key=lambda e: (e.recorded_at, e.client_ref)):
        if place.store_code is not None:
            earlier = repo.redemption_by_ref(
                session, store_code=place.store_code, client_ref=entry.client_ref
            )
            if earlier is not None:
                results[entry.client_ref] = OfflineResult(
                    entry.client_ref, earlier.id, None, "already recorded by an earlier upload"
                )
                continue
        try:
            # A savepoint per entry: a refused entry rolls back alone, the others stand.
            with session.begin_nested():
                redemption = redeem_coupon(
                    session,
                    actor=actor,
                    vault=vault,
                    code=entry.code,
                    order_fen=entry.order_fen,
                    category=entry.category,
                    source="offline",
                    recorded_at=entry.recorded_at,
                    client_ref=entry.client_ref,
                )
            results[entry.client_ref] = OfflineResult(entry.client_ref, redemption.id, None, None)
        except Refused as exc:
            results[entry.client_ref] = OfflineResult(
                entry.client_ref, None, exc.reason.value, exc.message
            )
    refused = [r for r in results.values() if r.redemption_id is None]
    org.record_audit(
        session,
        actor=actor,
        action="coupon.offline_upload",
        target_type="store",
        target_id=place.store_code or place.partner_code or "-",
        details={
            "entries": len(entries),
            "refused": [{"ref": r.client_ref, "reason": r.reason} for r in refused][:200],
        },
    )
    return [results[e.client_ref] for e in entries]


@dataclass(frozen=True)
class StoreRedemption:
    """A redemption on the clerk's list of the day."""

    redemption: Redemption
    batch: CouponBatch
    reversible: bool


def store_today(session: Session, *, actor: Actor, zone: str) -> list[StoreRedemption]:
    """The clerk's store's redemptions since local midnight."""
    place = _place_of(actor, category=None)
    if place.store_code is None:
        return []
    tz = ZoneInfo(zone)
    midnight = datetime.combine(clock.today(zone), datetime.min.time(), tzinfo=tz)
    now = clock.now()
    return [
        StoreRedemption(
            redemption=r,
            batch=b,
            reversible=reversal_problem(
                status=r.status, redeemed_at=r.at, now=now, window_s=b.reversal_window_s
            )
            is None,
        )
        for r, _c, b in repo.store_redemptions(session, store_code=place.store_code, since=midnight)
    ]


# ---- reads for campaign responses ----------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFact:
    """Something a subscriber did in the ledger that a campaign may count as a response."""

    id: int
    subscriber_id: int
    at: datetime
    value_fen: int
    ref: str  # what it was about: "coupon_batch:<id>"


def claims_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[LedgerFact]:
    """Coupon claims after a coupon id, oldest first."""
    return [
        LedgerFact(i, s, at, 0, f"coupon_batch:{b}")
        for i, s, b, at in repo.claims_after(session, after_id=after_id, limit=limit)
    ]


def redemptions_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[LedgerFact]:
    """Standing redemptions after a redemption id (value: the order amount), oldest first."""
    return [
        LedgerFact(i, s, at, v, f"coupon_batch:{b}")
        for i, s, b, at, v in repo.redemptions_after(session, after_id=after_id, limit=limit)
    ]


# ---- binding (绑) ------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponBinding:
    """What binding did to one subscriber's unredeemed coupons."""

    voided: list[int]
    paused: list[int]
    resumed: list[int]

    @property
    def changed(self) -> int:
        return len(self.voided) + len(self.paused) + len(self.resumed)


def bind_coupons(
    session: Session, *, actor: Actor, subscriber_id: int, status: SubscriberStatus, reason: str
) -> CouponBinding:
    """Make a subscriber's unredeemed coupons follow their network status; audited."""
    # Called by the status change (grants.change_subscriber_status), in its transaction, after
    # the subscriber row changed: churn voids, suspension pauses, reactivation resumes.
    claimed, paused, void = (
        CouponStatus.CLAIMED.value,
        CouponStatus.PAUSED.value,
        CouponStatus.VOID.value,
    )
    moves: dict[SubscriberStatus, tuple[tuple[str, ...], str]] = {
        SubscriberStatus.CHURNED: ((claimed, paused), void),
        SubscriberStatus.SUSPENDED: ((claimed,), paused),
        SubscriberStatus.ACTIVE: ((paused,), claimed),
    }
    expected, target = moves[status]
    moved = repo.move_subscriber_coupons(
        session, subscriber_id=subscriber_id, expected=expected, target=target
    )
    if moved:
        org.record_audit(
            session,
            actor=actor,
            action="coupon.binding",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"to": target, "coupons": moved[:200], "count": len(moved), "reason": reason},
        )
    return CouponBinding(
        voided=moved if target == void else [],
        paused=moved if target == paused else [],
        resumed=moved if target == claimed else [],
    )


# ---------------------------------------------------------------- the console home


@dataclass(frozen=True)
class CouponActivity:
    """Coupons claimed and redeemed today and this month."""

    claims_today: int
    claims_month: int
    redemptions_today: int
    redemptions_month: int


def coupon_activity(session: Session, *, actor: Actor, zone: str) -> CouponActivity:
    """Claims and redemptions today and this month, by the actor's region's subscribers."""
    from sqlalchemy import and_, case, func, select

    org.require(actor, Perm.DASHBOARD)
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    day = datetime.combine(today, datetime.min.time(), tzinfo=tz)
    month = datetime.combine(today.replace(day=1), datetime.min.time(), tzinfo=tz)
    province = org.visible_province(actor)
    members = subscribers.ids_in_province(province=province) if province else None

    def today_and_month(column: Any) -> tuple[Any, Any]:
        return (
            func.coalesce(func.sum(case((column >= day, 1), else_=0)), 0),
            func.count(),
        )

    claims = select(*today_and_month(Coupon.claimed_at)).where(Coupon.claimed_at >= month)
    redeemed = (
        select(*today_and_month(Redemption.at))
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .where(and_(Redemption.at >= month, Redemption.status == "done"))
    )
    if members is not None:
        claims = claims.where(Coupon.subscriber_id.in_(members))
        redeemed = redeemed.where(Coupon.subscriber_id.in_(members))
    c_today, c_month = session.execute(claims).one()
    r_today, r_month = session.execute(redeemed).one()
    return CouponActivity(
        claims_today=int(c_today),
        claims_month=int(c_month),
        redemptions_today=int(r_today),
        redemptions_month=int(r_month),
    )


def low_stock_batches(
    session: Session, *, actor: Actor, share: float = 0.1
) -> list[tuple[CouponBatch, int, int]]:
    """Active batches of the actor's region (and national ones) with at most `share` left."""
    org.require(actor, Perm.DASHBOARD)
    province = org.visible_province(actor)
    batches = repo.list_batches(
        session,
        owner_regions=[province, "CN"] if province else None,
        statuses=[BatchStatus.ACTIVE.value],
    )
    levels = repo.stock_levels(session, [b.id for b in batches])
    out = []
    for b in batches:
        remaining, total = levels.get(b.id, (0, 0))
        if total and remaining <= total * share:
            out.append((b, remaining, total))
    return sorted(out, key=lambda row: row[1] / row[2])
