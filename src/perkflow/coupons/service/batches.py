"""Coupon batches: create, edit, status, stock and its additions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    CouponBatch,
)
from perkflow.coupons.rules import (
    BATCH_TRANSITIONS,
    CODE_SPARSITY,
    DEFAULT_REVERSAL_WINDOW_S,
    DEFAULT_SHARDS,
    MAX_STOCK,
    BatchStatus,
    CodePattern,
    CodeSource,
    CouponValidity,
    Scope,
    added_shards,
    addition_shards,
    claim_validity_problem,
    pattern_problem,
    resolve_charset,
    slug_problem,
    split_stock,
    validity_problem,
    value_problem,
)
from perkflow.coupons.schemas import BatchSpec
from perkflow.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from .access import owner_for, require_edit
from .claims import _claim_terms, _memo_key, _pattern_of, _sold_out_seen


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
    fixed = spec.validity_kind == CouponValidity.FIXED
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
