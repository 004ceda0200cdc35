"""Use cases of membership: the tier program, tier evaluation and history, bundles, points."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus
from perkflow.catalog.schemas import BenefitCreate, PartnerCreate
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.membership import compiler, rules
from perkflow.membership import repository as repo
from perkflow.membership.models import (
    BundleGrant,
    BundleItem,
    MembershipProgram,
    MemberTier,
    PointsEntry,
    PointsLot,
    PrepaidEvent,
    TierChange,
)
from perkflow.membership.rules import (
    COUNTER_ACCOUNT,
    MEMBER_ACCOUNT,
    Cadence,
    ChangeKind,
    EntryKind,
    Mode,
    Program,
    RuleError,
    TierSpec,
)
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

# --- who may do what -----------------------------------------------------------------------------


def _require_read(actor: Actor) -> None:
    if actor.kind in ("subscriber", "partner"):
        raise Forbidden("not for subscribers or partners")
    org.require_perm_or_scope(
        actor, perm=Perm.MEMBERSHIP_READ, scope=("members:read", "members:write")
    )


def _require_national(actor: Actor) -> None:
    _require_read(actor)
    if org.visible_province(actor) is not None:
        raise Forbidden("membership reports are national; your scope is one province")


def _require_edit(actor: Actor) -> None:
    if actor.kind == "staff":
        org.require(actor, Perm.MEMBERSHIP_EDIT)
    elif actor.kind != "system":
        raise Forbidden("only HQ staff define the tier program")


def _require_write(actor: Actor) -> None:
    """Events about a subscriber: prepayments, plan changes, bills (operator systems, HQ staff)."""
    if actor.kind in ("subscriber", "partner"):
        raise Forbidden("not for subscribers or partners")
    org.require_perm_or_scope(actor, perm=Perm.MEMBERSHIP_EDIT, scope="members:write")


def _require_adjust(actor: Actor) -> None:
    if actor.kind == "staff":
        org.require(actor, Perm.POINTS_ADJUST)
    else:
        _require_write(actor)


def _in_scope(session: Session, *, actor: Actor, subscriber_id: int) -> None:
    if actor.kind in ("staff", "api_key"):
        subscribers.require_in_scope(session, actor=actor, subscriber_id=subscriber_id)


def require_read(actor: Actor) -> None:
    """403 unless the actor may read membership."""
    _require_read(actor)


# --- the program ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The active program as stored: settings, tiers by level, and their rules."""

    settings: MembershipProgram | None
    tiers: list[MemberTier]
    specs: list[TierSpec]
    all_tiers: dict[int, MemberTier]

    @property
    def grace_days(self) -> int:
        return self.settings.grace_days if self.settings else rules.DEFAULT_GRACE_DAYS

    @property
    def points(self) -> rules.PointsSpec:
        s = self.settings
        if s is None:
            return rules.PointsSpec()
        return rules.PointsSpec(
            per_yuan=s.points_per_yuan,
            expiry_years=s.points_expiry_years,
            value_fen_per_100=s.point_value_fen_per_100,
        )

    def by_level(self, level: int) -> MemberTier | None:
        for t in self.tiers:
            if t.level == level:
                return t
        return None

    def level_of(self, tier_id: int | None) -> int:
        """The level a member's tier counts as; a retired tier counts as none."""
        if tier_id is None:
            return 0
        tier = self.all_tiers.get(tier_id)
        return tier.level if tier is not None and tier.status == "active" else -1

    def fields(self) -> set[str]:
        return {c.field for s in self.specs for p in s.paths for c in p}


def load(session: Session) -> Loaded:
    """The active program (tiers, rules and settings)."""
    every = list(repo.tiers(session, active_only=False))
    active = [t for t in every if t.status == "active"]
    specs = [
        TierSpec(
            code=t.code,
            name_zh=t.name_zh,
            name_en=t.name_en,
            level=t.level,
            multiplier_pct=t.points_multiplier_pct,
            paths=rules.paths_from_json(t.qualify),
            bundle=(),
        )
        for t in active
    ]
    return Loaded(
        settings=repo.program(session),
        tiers=active,
        specs=specs,
        all_tiers={t.id: t for t in every},
    )


def profile_columns(mart: Mart | None) -> dict[str, str]:
    """Mart profile columns a rule may use: numbers and text (from the Parquet schema)."""
    if mart is None or not mart.has(compiler.PROFILE_TABLE):
        return {}
    schema = pq.read_schema(mart.path(compiler.PROFILE_TABLE))
    out: dict[str, str] = {}
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            out[f.name] = "number"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out[f.name] = "text"
    out.pop("subscriber_id", None)
    return out


def parse_program(raw: Any, *, mart: Mart | None = None) -> Program:
    """A program from its YAML/JSON form, or 422 naming the offending field."""
    try:
        return rules.parse_program(raw, profile_columns(mart))
    except RuleError as exc:
        raise ValidationFailed(f"{exc.field}: {exc.message}", field=exc.field) from exc


def define_program(
    session: Session, *, actor: Actor, raw: Any, mart: Mart | None = None
) -> Program:
    """Replace the tier program: tiers by code (missing ones retire), bundles, points settings."""
    _require_edit(actor)
    program = parse_program(raw, mart=mart)
    now = clock.now()
    benefit_ids: dict[str, int] = {}
    for i, tier in enumerate(program.tiers):
        for j, item in enumerate(tier.bundle):
            if item.benefit_code not in benefit_ids:
                try:
                    benefit = catalog.find_benefit(session, actor=SYSTEM, code=item.benefit_code)
                except NotFound as exc:
                    where = f"tiers[{i}].bundle[{j}].benefit"
                    raise ValidationFailed(
                        f"{where}: no benefit {item.benefit_code!r} in the catalog", field=where
                    ) from exc
                benefit_ids[item.benefit_code] = benefit.id
    settings = repo.program(session)
    if settings is None:
        settings = MembershipProgram(id=repo.PROGRAM_ID, version=0)
        session.add(settings)
    settings.grace_days = program.grace_days
    settings.points_per_yuan = program.points.per_yuan
    settings.points_expiry_years = program.points.expiry_years
    settings.point_value_fen_per_100 = program.points.value_fen_per_100
    settings.version = (settings.version or 0) + 1
    settings.updated_by = actor.name[:128]
    settings.updated_at = now
    existing = {t.code: t for t in repo.tiers(session, active_only=False)}
    keep = {t.code for t in program.tiers}
    for code, old in existing.items():
        if code not in keep and old.status == "active":
            old.status = "retired"
            old.updated_at = now
            repo.retire_items(session, old.id)
    session.flush()  # retired levels are out of the way before the new ones are written
    for spec in program.tiers:
        row = existing.get(spec.code)
        if row is None:
            row = MemberTier(code=spec.code, created_at=now)
            session.add(row)
        row.name_zh, row.name_en, row.level = spec.name_zh, spec.name_en, spec.level
        row.points_multiplier_pct = spec.multiplier_pct
        row.qualify = rules.paths_to_json(spec.paths)
        row.status = "active"
        row.updated_at = now
        session.flush()  # the tier's id goes on its bundle items
        repo.retire_items(session, row.id)
        for position, item in enumerate(spec.bundle):
            session.add(
                BundleItem(
                    tier_id=row.id,
                    benefit_id=benefit_ids[item.benefit_code],
                    mode=item.mode.value,
                    cadence=item.cadence.value,
                    quantity=item.quantity,
                    value_fen=item.value_fen,
                    pick_group=item.pick_group,
                    choose=item.choose,
                    position=position,
                    active=True,
                )
            )
    session.flush()
    org.record_audit(
        session,
        actor=actor,
        action="membership.define",
        target_type="membership_program",
        target_id=str(repo.PROGRAM_ID),
        details={
            "version": settings.version,
            "tiers": [t.code for t in program.tiers],
            "retired": sorted(set(existing) - keep),
        },
    )
    return program


def program_document(session: Session) -> dict[str, Any] | None:
    """The stored program in its YAML/JSON form (for the editor), or None before the first one."""
    loaded = load(session)
    if not loaded.tiers:
        return None
    tier_items = _items_by_tier(session, [t.id for t in loaded.tiers])
    specs = []
    for tier, spec in zip(loaded.tiers, loaded.specs, strict=True):
        bundle = tuple(
            rules.ItemSpec(
                benefit_code=catalog.get_benefit(session, benefit_id=i.benefit_id).code,
                mode=Mode(i.mode),
                cadence=Cadence(i.cadence),
                quantity=i.quantity,
                value_fen=i.value_fen,
                pick_group=i.pick_group,
                choose=i.choose,
            )
            for i in tier_items.get(tier.id, [])
        )
        specs.append(
            TierSpec(
                code=spec.code,
                name_zh=spec.name_zh,
                name_en=spec.name_en,
                level=spec.level,
                multiplier_pct=spec.multiplier_pct,
                paths=spec.paths,
                bundle=bundle,
            )
        )
    return rules.program_to_dict(
        Program(tiers=tuple(specs), points=loaded.points, grace_days=loaded.grace_days)
    )


def _items_by_tier(session: Session, tier_ids: Sequence[int]) -> dict[int, list[BundleItem]]:
    out: dict[int, list[BundleItem]] = {}
    for item in repo.items(session, tier_ids=tier_ids):
        out.setdefault(item.tier_id, []).append(item)
    return out


@dataclass(frozen=True)
class ItemView:
    """A bundle item with its benefit's names."""

    item: BundleItem
    benefit_code: str
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class TierView:
    """A tier with its bundle and what the bundle is worth in a year."""

    tier: MemberTier
    items: list[ItemView]
    annual_value_fen: int
    rule: list[list[dict[str, Any]]]


def _views(session: Session, items: Iterable[BundleItem]) -> list[ItemView]:
    out = []
    for item in items:
        b = catalog.get_benefit(session, benefit_id=item.benefit_id)
        out.append(ItemView(item=item, benefit_code=b.code, name_zh=b.name_zh, name_en=b.name_en))
    return out


def _spec_of(item: BundleItem) -> rules.ItemSpec:
    return rules.ItemSpec(
        benefit_code=str(item.benefit_id),
        mode=Mode(item.mode),
        cadence=Cadence(item.cadence),
        quantity=item.quantity,
        value_fen=item.value_fen,
        pick_group=item.pick_group,
        choose=item.choose,
    )


def tier_views(session: Session) -> list[TierView]:
    """Every active tier with its bundle, lowest level first."""
    loaded = load(session)
    by_tier = _items_by_tier(session, [t.id for t in loaded.tiers])
    return [
        TierView(
            tier=t,
            items=_views(session, by_tier.get(t.id, [])),
            annual_value_fen=rules.annual_value_fen(_spec_of(i) for i in by_tier.get(t.id, [])),
            rule=list(t.qualify),
        )
        for t in loaded.tiers
    ]


def list_tiers(session: Session, *, actor: Actor) -> list[TierView]:
    """The tiers as staff or an operator system sees them."""
    _require_read(actor)
    return tier_views(session)


# --- tier changes --------------------------------------------------------------------------------


@dataclass
class TierRun:
    """What one application of evaluated tiers changed."""

    evaluated: int = 0
    joined: int = 0
    upgraded: int = 0
    downgraded: int = 0
    left: int = 0
    scheduled: int = 0
    cancelled: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)

    def count(self, kind: ChangeKind) -> None:
        attr = {
            ChangeKind.JOIN: "joined",
            ChangeKind.UPGRADE: "upgraded",
            ChangeKind.DOWNGRADE: "downgraded",
            ChangeKind.LEAVE: "left",
            ChangeKind.DOWNGRADE_SCHEDULED: "scheduled",
            ChangeKind.DOWNGRADE_CANCELLED: "cancelled",
        }[kind]
        setattr(self, attr, getattr(self, attr) + 1)

    def add(self, other: TierRun) -> None:
        for name in ("evaluated", "joined", "upgraded", "downgraded", "left", "scheduled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cancelled += other.cancelled


def apply_tier_targets(
    session: Session,
    *,
    actor: Actor,
    targets: Mapping[int, int],
    reason: str,
    source: str,
    immediate: Iterable[int] = (),
    loaded: Loaded | None = None,
) -> TierRun:
    """Move members to freshly evaluated levels: up at once, down after the grace period."""
    loaded = loaded or load(session)
    now = clock.now()
    run = TierRun(evaluated=len(targets))
    at_once = set(immediate)
    repo.begin_write(session)
    repo.ensure_members(
        session, subscriber_ids=sorted(s for s, lvl in targets.items() if lvl > 0), at=now
    )
    for m in repo.lock_members(session, sorted(targets)):
        target = targets[m.subscriber_id]
        current = loaded.level_of(m.tier_id)
        if current < 0:  # a retired tier: the member moves at once, wherever the rules say
            current, at_once_here = (0 if target > 0 else 1), True
        else:
            at_once_here = m.subscriber_id in at_once
        pending_level = (
            loaded.level_of(m.pending_tier_id) if m.downgrade_due_at is not None else None
        )
        decision = rules.decide(
            current=current,
            pending=pending_level,
            due=m.downgrade_due_at,
            target=target,
            now=now,
            grace_days=loaded.grace_days,
            immediate=at_once_here,
        )
        if decision.kind is None:
            continue
        new_tier = loaded.by_level(decision.level) if decision.level > 0 else None
        pending_tier = (
            loaded.by_level(decision.pending) if decision.pending and decision.pending > 0 else None
        )
        new_tier_id = new_tier.id if new_tier else None
        moved = new_tier_id != m.tier_id
        repo.set_member(
            session,
            subscriber_id=m.subscriber_id,
            tier_id=new_tier_id,
            pending_tier_id=pending_tier.id if pending_tier else None,
            due=decision.due,
            at=now,
            since=now if moved else None,
        )
        run.count(decision.kind)
        to_tier = (
            (pending_tier.id if pending_tier else None)
            if decision.kind == ChangeKind.DOWNGRADE_SCHEDULED
            else new_tier_id
        )
        run.changes.append(
            {
                "subscriber_id": m.subscriber_id,
                "from_tier_id": m.tier_id,
                "to_tier_id": to_tier,
                "kind": decision.kind.value,
                "reason": (
                    f"{reason}; downgrade due {decision.due.date().isoformat()}"
                    if decision.kind == ChangeKind.DOWNGRADE_SCHEDULED and decision.due
                    else reason
                )[:255],
                "source": source[:16],
                "at": now,
            }
        )
    repo.add_changes(session, run.changes)
    if run.changes:
        org.record_audit(
            session,
            actor=actor,
            action="member.tiers",
            target_type="subscriber" if len(targets) == 1 else "members",
            target_id=str(next(iter(targets))) if len(targets) == 1 else f"{len(targets)}",
            details={
                "source": source,
                "reason": reason[:255],
                "joined": run.joined,
                "upgraded": run.upgraded,
                "downgraded": run.downgraded,
                "left": run.left,
                "scheduled": run.scheduled,
                "cancelled": run.cancelled,
            },
        )
    return run


def apply_due_downgrades(session: Session, *, actor: Actor, limit: int = 1000) -> int:
    """Downgrades whose grace period has ended take effect; returns how many did."""
    now = clock.now()
    ids = repo.due_downgrades(session, now=now, limit=limit)
    if not ids:
        return 0
    loaded = load(session)
    repo.begin_write(session)
    changes = []
    for m in repo.lock_members(session, ids):
        if m.downgrade_due_at is None or clock.as_utc(m.downgrade_due_at) > now:
            continue  # re-qualified meanwhile (the lock shows the latest state)
        target_level = loaded.level_of(m.pending_tier_id) if m.pending_tier_id else 0
        repo.set_member(
            session,
            subscriber_id=m.subscriber_id,
            tier_id=m.pending_tier_id,
            pending_tier_id=None,
            due=None,
            at=now,
            since=now,
        )
        changes.append(
            {
                "subscriber_id": m.subscriber_id,
                "from_tier_id": m.tier_id,
                "to_tier_id": m.pending_tier_id,
                "kind": rules.due_kind(max(target_level, 0)).value,
                "reason": "grace period ended",
                "source": "grace",
                "at": now,
            }
        )
    repo.add_changes(session, changes)
    if changes:
        org.record_audit(
            session,
            actor=actor,
            action="member.downgrades",
            target_type="members",
            target_id=str(len(changes)),
            details={"applied": len(changes)},
        )
    return len(changes)


def _mart_values(mart: Mart | None, subscriber_id: int, names: set[str]) -> dict[str, Any]:
    if not names or mart is None or not mart.has(compiler.PROFILE_TABLE):
        return {}
    t = mart.table(compiler.PROFILE_TABLE)
    rows = t.filter(t.subscriber_id == subscriber_id).select(*sorted(names)).limit(1).to_pyarrow()
    if rows.num_rows == 0:
        return {}
    return {k: v[0] for k, v in rows.to_pydict().items()}


def _values(
    session: Session, facts: subscribers.PlanFacts, *, zone: str, mart: Mart | None, extra: set[str]
) -> dict[str, Any]:
    values: dict[str, Any] = _mart_values(mart, facts.subscriber_id, extra)
    values.update(
        {
            "plan_fee_yuan": facts.plan_fee_fen / 100,
            "prepaid_yuan": repo.prepaid_balance(session, facts.subscriber_id) / 100,
            "tenure_months": rules.months_between(facts.joined_on, clock.today(zone)),
        }
    )
    return values


def _facts(session: Session, subscriber_id: int) -> subscribers.PlanFacts:
    found = subscribers.plan_facts(session, subscriber_ids=[subscriber_id]).get(subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    return found


def evaluate_member(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    reason: str,
    source: str,
    zone: str,
    mart: Mart | None = None,
) -> TierRun:
    """Re-derive one subscriber's tier after an event (plan change, prepayment, status change)."""
    loaded = load(session)
    facts = _facts(session, subscriber_id)
    extra = loaded.fields() - set(rules.BUILTIN_FIELDS)
    values = _values(session, facts, zone=zone, mart=mart, extra=extra)
    churned = facts.status == Status.CHURNED
    target = rules.level_for(loaded.specs, values, churned=churned)
    return apply_tier_targets(
        session,
        actor=actor,
        targets={subscriber_id: target},
        reason=reason,
        source=source,
        immediate=[subscriber_id] if churned else [],
        loaded=loaded,
    )


def record_prepayment(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    amount_fen: int,
    idempotency_key: str,
    zone: str,
    reason: str = "prepayment",
    mart: Mart | None = None,
) -> tuple[int, bool]:
    """Add a prepayment (or, negative, its use) and re-evaluate; (balance, replayed)."""
    _require_write(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise ValidationFailed(
            "idempotency key must be 1 to 128 characters", field="idempotency_key"
        )
    if amount_fen == 0 or abs(amount_fen) > 100_000_000:
        raise ValidationFailed(
            "amount must be non-zero and at most 1,000,000 yuan", field="amount_fen"
        )
    _facts(session, subscriber_id)
    seen = repo.prepaid_event_by_key(session, key)
    if seen is not None:
        if seen.subscriber_id != subscriber_id or seen.amount_fen != amount_fen:
            raise Conflict(
                "this idempotency key was used for another prepayment", field="idempotency_key"
            )
        return repo.prepaid_balance(session, subscriber_id), True
    now = clock.now()
    repo.begin_write(session)
    try:
        with session.begin_nested():
            repo.ensure_prepaid_account(session, subscriber_id=subscriber_id, at=now)
            if not repo.move_prepaid(
                session, subscriber_id=subscriber_id, amount_fen=amount_fen, at=now
            ):
                raise Conflict("the prepaid balance is too low", field="amount_fen")
            session.add(
                PrepaidEvent(
                    subscriber_id=subscriber_id,
                    amount_fen=amount_fen,
                    idempotency_key=key,
                    reason=reason.strip()[:255] or "prepayment",
                    at=now,
                )
            )
            session.flush()  # the unique key decides a concurrent duplicate, here
    except IntegrityError:
        return repo.prepaid_balance(session, subscriber_id), True
    org.record_audit(
        session,
        actor=actor,
        action="member.prepay",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"amount_fen": amount_fen, "key": key},
    )
    evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"prepaid {amount_fen / 100:.2f} yuan",
        source="prepay",
        zone=zone,
        mart=mart,
    )
    return repo.prepaid_balance(session, subscriber_id), False


def change_plan(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    plan_fee_fen: int,
    zone: str,
    reason: str = "plan change",
    mart: Mart | None = None,
) -> TierRun:
    """Move a subscriber to another plan and re-evaluate their tier."""
    _require_write(actor)
    before = subscribers.change_plan_fee(
        session,
        actor=SYSTEM if actor.kind == "api_key" else actor,
        subscriber_id=subscriber_id,
        plan_fee_fen=plan_fee_fen,
        reason=reason,
    )
    return evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"plan {before / 100:.0f} → {plan_fee_fen / 100:.0f} yuan",
        source="plan",
        zone=zone,
        mart=mart,
    )


@dataclass(frozen=True)
class StatusOutcome:
    """A status change with its binding and what it meant for membership."""

    binding: grants.Binding
    run: TierRun
    forfeited_picks: int
    forfeited_points: int
    event: Any = None
    coupon_binding: Any = None


def change_status(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    status: Status,
    reason: str,
    zone: str,
    source: str = "membership",
    mart: Mart | None = None,
) -> StatusOutcome:
    """Change a subscriber's status: grants and coupons bind to it, then the tier (churn leaves)."""
    # The one status change path of every entry point (API, console, CLI): membership is the
    # capability above grants and coupons, so it is where all three meet in one transaction.
    changed = grants.change_subscriber_status(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        status=status,
        reason=reason,
        source=source[:16],
    )
    picks = points = 0
    run = evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"subscriber {status.value}: {reason.strip()}",
        source="status",
        zone=zone,
        mart=mart,
    )
    if status == Status.CHURNED:
        now = clock.now()
        cycles = [rules.cycle_of(now, zone, c) for c in Cadence]
        picks = repo.forfeit_picks(session, subscriber_id=subscriber_id, cycles=cycles)
        points = forfeit_points(session, actor=actor, subscriber_id=subscriber_id, reason="churned")
    return StatusOutcome(
        binding=changed.binding,
        run=run,
        forfeited_picks=picks,
        forfeited_points=points,
        event=changed.event,
        coupon_binding=changed.coupon_binding,
    )


# --- batch evaluation over the mart --------------------------------------------------------------


def export_prepaid(session: Session, *, mart: Mart) -> int:
    """Write the ledger's prepaid balances to the mart (the one sync path); returns the rows."""
    ids: list[int] = []
    yuan: list[float] = []
    for sid, bal in repo.prepaid_balances(session):
        ids.append(sid)
        yuan.append(bal / 100)
    table = pa.table(
        {
            "subscriber_id": pa.array(ids, type=pa.int64()),
            "prepaid_yuan": pa.array(yuan, type=pa.float64()),
        }
    )
    mart.write(compiler.PREPAID_TABLE, table)
    return len(ids)


def tier_source(mart: Mart) -> Any:
    """The mart profile with prepaid balances joined in (what tier rules read)."""
    if not mart.has(compiler.PROFILE_TABLE):
        raise NotFound("the mart has no subscriber profile yet; run `perkflow synth`", field="mart")
    prepaid = mart.table(compiler.PREPAID_TABLE) if mart.has(compiler.PREPAID_TABLE) else None
    return compiler.with_prepaid(mart.table(compiler.PROFILE_TABLE), prepaid)


def _program_of(loaded: Loaded) -> Program:
    return Program(tiers=tuple(loaded.specs), points=loaded.points, grace_days=loaded.grace_days)


@dataclass(frozen=True)
class PreviewRow:
    code: str
    name_zh: str
    name_en: str
    level: int
    subscribers: int


def preview_program(
    session: Session, *, actor: Actor, mart: Mart, raw: Any
) -> tuple[Program, list[PreviewRow], int]:
    """How many subscribers each tier of a draft program would hold (mart), before saving it."""
    _require_edit(actor)
    program = parse_program(raw, mart=mart)
    counts = _distribution(mart, program)
    rows = [
        PreviewRow(t.code, t.name_zh, t.name_en, t.level, counts.get(t.level, 0))
        for t in program.tiers
    ]
    return program, rows, counts.get(0, 0)


def _distribution(mart: Mart, program: Program) -> dict[int, int]:
    levels = compiler.tier_levels(tier_source(mart), program)
    table = compiler.distribution(levels).to_pyarrow()
    return {
        int(lvl): int(n)
        for lvl, n in zip(table["tier_level"].to_pylist(), table["n"].to_pylist(), strict=True)
    }


def evaluate_levels(mart: Mart, program: Program) -> pa.Table:
    """(subscriber_id, tier_level) for every subscriber in the mart: one set-based query."""
    levels: pa.Table = compiler.tier_levels(tier_source(mart), program).to_pyarrow()
    return levels


def plan_evaluation(
    session: Session, *, actor: Actor, mart: Mart
) -> tuple[list[tuple[int, int]], int]:
    """Evaluate every subscriber over the mart and keep those whose tier state must change.

    Returns ((subscriber, target level) to apply, subscribers evaluated). The comparison with the
    ledger's members also runs in DuckDB, so only the differences come back to Python.
    """
    _require_edit(actor)
    loaded = load(session)
    if not loaded.tiers:
        raise Conflict("define the tier program first (perkflow member define)", field="tiers")
    export_prepaid(session, mart=mart)
    subscribers.export_statuses(session, mart=mart)  # churned in the ledger is churned here
    levels = compiler.tier_levels(tier_source(mart), _program_of(loaded))
    sids: list[int] = []
    cur: list[int] = []
    pend: list[int] = []
    due: list[bool] = []
    for sid, tier_id, pending, when in repo.member_states(session):
        sids.append(sid)
        cur.append(loaded.level_of(tier_id))
        pend.append(loaded.level_of(pending) if when is not None else -2)
        due.append(when is not None)
    state = ibis.memtable(
        pa.table(
            {
                "subscriber_id": pa.array(sids, type=pa.int64()),
                "cur": pa.array(cur, type=pa.int32()),
                "pend": pa.array(pend, type=pa.int32()),
                "has_due": pa.array(due, type=pa.bool_()),
            }
        )
    )
    j = levels.left_join(state, "subscriber_id")
    cur_l = j["cur"].fill_null(0)
    target = j["tier_level"]
    has_due = j["has_due"].fill_null(False)
    scheduled_same = has_due & (target < cur_l) & (j["pend"] == target)
    needs = ((target != cur_l) & ~scheduled_same.fill_null(False)) | (has_due & (target >= cur_l))
    diff = j.filter(needs).select("subscriber_id", "tier_level").order_by("subscriber_id")
    table = diff.to_pyarrow()
    total = int(levels.count().to_pyarrow().as_py())
    pairs = list(
        zip(table["subscriber_id"].to_pylist(), table["tier_level"].to_pylist(), strict=True)
    )
    return pairs, total


def apply_batch(
    session: Session, *, actor: Actor, targets: Sequence[tuple[int, int]], loaded: Loaded
) -> TierRun:
    """Apply one chunk of a batch evaluation; subscribers unknown to the ledger are left out."""
    statuses = subscribers.subscriber_statuses(session, subscriber_ids=[s for s, _ in targets])
    known = {s: lvl for s, lvl in targets if s in statuses}
    if not known:
        return TierRun()
    return apply_tier_targets(
        session,
        actor=actor,
        targets=known,
        reason="monthly evaluation",
        source="batch",
        immediate=[s for s in known if statuses[s] == Status.CHURNED],
        loaded=loaded,
    )


# --- bundles -------------------------------------------------------------------------------------


@dataclass
class IssueCount:
    """What one bundle issue run did."""

    members: int = 0
    issued: int = 0
    replayed: int = 0
    refused: int = 0
    skipped: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # asked to stop: the chunks done are committed, a rerun continues

    def add(self, other: IssueCount) -> None:
        self.members += other.members
        self.issued += other.issued
        self.replayed += other.replayed
        self.refused += other.refused
        self.skipped += other.skipped
        for k, v in other.refusals.items():
            self.refusals[k] = self.refusals.get(k, 0) + v


def check_month(month: str) -> str:
    """A `2026-11` cycle month, or 422."""
    if rules.parse_month(month) is None:
        raise ValidationFailed("month must look like 2026-11", field="month")
    return month.strip()


def issue_bundles_for(
    session: Session,
    *,
    actor: Actor,
    members: Sequence[tuple[int, int]],
    month: str,
    zone: str,
    items: Mapping[int, Sequence[ItemRow]] | None = None,
) -> IssueCount:
    """Grant a group of members' automatic bundle benefits for the month's cycles, exactly once.

    Set-based: one group of grants (`grants.issue_grants`) and one statement of bundle rows,
    whether the group is a chunk of the monthly run or a single member.
    """
    if actor.kind != "system":
        _require_edit(actor)
    month = check_month(month)
    by_tier = items if items is not None else bundle_items(session)
    statuses = subscribers.subscriber_statuses(session, subscriber_ids=[s for s, _ in members])
    count = IssueCount()
    # Per tier, once: every automatic unit as (item, cycle, slot, the key's tail); a member's
    # key is then one concatenation ("tier:<subscriber>:<benefit>:<cycle>:<unit>").
    units = {
        tier_id: [
            (item, cycle, f"item:{item.id}:{u}", f":{item.benefit_id}:{cycle}:{u}")
            for item in tier_items
            if item.mode == Mode.AUTO.value
            for cycle in (rules.cycle_for_month(month, Cadence(item.cadence)),)
            for u in range(1, item.quantity + 1)
        ]
        for tier_id, tier_items in by_tier.items()
    }
    # (subscriber, tier, item, cycle, slot, key tail) of every automatic slot active members hold.
    wanted: list[tuple[int, int, ItemRow, str, str, str]] = []
    for sid, tier_id in members:
        if statuses.get(sid) != Status.ACTIVE:
            # Binding: a suspended member's bundle waits for reactivation, a churned one's is gone.
            count.skipped += 1
            continue
        count.members += 1
        wanted += [(sid, tier_id, *unit) for unit in units.get(tier_id, ())]
    if not wanted:
        return count
    # A slot recorded by an earlier run was granted with it (they commit together): a replay.
    taken = repo.taken_slots(
        session,
        subscriber_ids=[sid for sid, _ in members],
        cycles=sorted({w[3] for w in wanted}),
    )
    todo = [w for w in wanted if (w[0], w[3], w[4]) not in taken] if taken else wanted
    count.replayed += len(wanted) - len(todo)
    outcomes = grants.issue_grants(
        session,
        actor=SYSTEM,
        requests=[
            grants.GrantRequest(sid, item.benefit_id, f"tier:{sid}{tail}")
            for sid, _, item, _, _, tail in todo
        ],
        source="membership",
        zone=zone,
    )
    now = clock.now()
    rows: list[tuple[Any, ...]] = []
    for (sid, tier_id, item, cycle, slot, _), outcome in zip(todo, outcomes, strict=True):
        if outcome.grant_id is None:
            why = outcome.refusal or "refused"
            count.refused += 1
            count.refusals[why] = count.refusals.get(why, 0) + 1
            continue
        if outcome.replayed:
            count.replayed += 1
        else:
            count.issued += 1
        rows.append(
            (sid, tier_id, item.id, cycle, slot, outcome.grant_id, item.value_fen, "granted", now)
        )
    repo.add_bundle_grants(session, rows)
    if count.issued:
        org.record_audit(
            session,
            actor=actor,
            action="member.bundles",
            target_type="cycle",
            target_id=month,
            details={"members": count.members, "issued": count.issued},
        )
    return count


def pick_benefit(
    session: Session, *, actor: Actor, subscriber_id: int, item_id: int, zone: str
) -> BundleGrant:
    """A member chooses one option of a pick group this cycle ("pick 1 of 6 video VIPs")."""
    if actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber picks only for themselves")
    if actor.kind not in ("subscriber", "system"):
        _require_write(actor)
    item = repo.item(session, item_id)
    member = repo.member(session, subscriber_id)
    if item is None or not item.active or item.mode != Mode.PICK.value:
        raise NotFound(f"no choice {item_id}", field="item_id")
    if member is None or member.tier_id != item.tier_id:
        raise Conflict("this choice is not part of your tier", field="item_id")
    status = subscribers.subscriber_statuses(session, subscriber_ids=[subscriber_id]).get(
        subscriber_id
    )
    if status == Status.SUSPENDED:
        raise Conflict("benefits are paused while your line is suspended", field="subscriber_id")
    if status != Status.ACTIVE:
        raise Conflict("your line is closed; its benefits are forfeited", field="subscriber_id")
    now = clock.now()
    cycle = rules.cycle_of(now, zone, Cadence(item.cadence))
    group = item.pick_group or ""
    taken = [
        g
        for g in repo.bundle_grants_of(session, subscriber_id=subscriber_id, cycles=[cycle])
        if g.slot.startswith(f"pick:{group}:")
    ]
    if len(taken) >= item.choose:
        raise Conflict("you have already made this cycle's choice", field="item_id")
    slot_n = len(taken) + 1
    slot = f"pick:{group}:{slot_n}"
    repo.begin_write(session)
    try:
        with session.begin_nested():
            # The slot is claimed first: its unique key refuses a second pick at the same time.
            if not repo.add_bundle_grant(
                session,
                {
                    "subscriber_id": subscriber_id,
                    "tier_id": item.tier_id,
                    "bundle_item_id": item.id,
                    "cycle": cycle,
                    "slot": slot,
                    "grant_id": None,
                    "value_fen": item.value_fen,
                    "status": "granted",
                    "at": now,
                },
            ):
                raise Conflict("you have already made this cycle's choice", field="item_id")
            issued = grants.issue_grant(
                session,
                actor=SYSTEM,
                subscriber_id=subscriber_id,
                benefit_id=item.benefit_id,
                source="membership-pick",
                idempotency_key=f"pick:{subscriber_id}:{group}:{cycle}:{slot_n}",
                zone=zone,
            )
            row = next(
                g
                for g in repo.bundle_grants_of(session, subscriber_id=subscriber_id, cycles=[cycle])
                if g.slot == slot
            )
            row.grant_id = issued.grant.id
            session.flush()
    except IntegrityError as exc:
        raise Conflict("you have already made this cycle's choice", field="item_id") from exc
    org.record_audit(
        session,
        actor=actor,
        action="member.pick",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"item_id": item.id, "benefit_id": item.benefit_id, "cycle": cycle},
    )
    return row


# --- points --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    """A points entry and whether this call wrote it or found it under its key."""

    entry: PointsEntry | None
    replayed: bool
    balance: int


def _replayed(session: Session, entry: PointsEntry, subscriber_id: int) -> Posted:
    if entry.subscriber_id != subscriber_id:
        raise Conflict("this key was used for another subscriber's points", field="idempotency_key")
    return Posted(entry=entry, replayed=True, balance=repo.points_balance(session, subscriber_id))


def _expire_due(session: Session, *, subscriber_id: int, now: datetime) -> int:
    """Expire this subscriber's due lots; the caller holds the account lock."""
    total = 0
    for lot in repo.expired_lots(session, subscriber_id=subscriber_id, now=now):
        left = lot.remaining
        if not repo.take_from_lot(session, lot_id=lot.id, expected=left, take=left):
            continue
        if not repo.move_points(session, subscriber_id=subscriber_id, points=-left, at=now):
            raise RuntimeError(f"points account {subscriber_id} is below its lots")
        repo.add_entry(
            session,
            PointsEntry(
                subscriber_id=subscriber_id,
                kind=EntryKind.EXPIRE.value,
                points=-left,
                idempotency_key=f"expire:lot:{lot.id}",
                reason=f"expired {clock.as_utc(lot.expires_at).date().isoformat()}",
                ref=f"lot:{lot.id}",
                details={"lot_id": lot.id},
                at=now,
            ),
            counter=COUNTER_ACCOUNT[EntryKind.EXPIRE],
            member=MEMBER_ACCOUNT,
        )
        total += left
    return total


def _take(session: Session, *, subscriber_id: int, lots: Sequence[PointsLot], amount: int) -> None:
    for lot_id, take in rules.take_fifo([(lot.id, lot.remaining) for lot in lots], amount):
        lot = next(lo for lo in lots if lo.id == lot_id)
        if not repo.take_from_lot(session, lot_id=lot_id, expected=lot.remaining, take=take):
            raise RuntimeError(f"lot {lot_id} changed under the account lock")


def _post(
    session: Session,
    *,
    subscriber_id: int,
    kind: EntryKind,
    points: int,
    key: str,
    reason: str,
    ref: str | None = None,
    details: dict[str, Any] | None = None,
    zone: str,
    expiry_years: int | None = None,
    earned_at: datetime | None = None,
) -> Posted:
    """Write one entry with its two postings, the balance and the lots, atomically and once."""
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    now = clock.now()
    repo.begin_write(session)
    with session.begin_nested():
        repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
        # The account row is the one lock every points write takes first: burns, expiry and
        # reversals of one member queue here, so lots are only ever changed under it (the lock
        # outlives this savepoint: it is the transaction's).
        repo.lock_points_balance(session, subscriber_id)
        # Lots past their date leave the balance whatever happens to this write: a burn refused
        # for want of points must not bring back points that expired before it.
        _expire_due(session, subscriber_id=subscriber_id, now=now)
    try:
        with session.begin_nested():
            if points < 0:
                if not repo.move_points(
                    session, subscriber_id=subscriber_id, points=points, at=now
                ):
                    raise Conflict("not enough points", field="points")
                _take(
                    session,
                    subscriber_id=subscriber_id,
                    lots=repo.open_lots(session, subscriber_id, now=now),
                    amount=-points,
                )
            elif points > 0:
                repo.move_points(session, subscriber_id=subscriber_id, points=points, at=now)
            entry = repo.add_entry(
                session,
                PointsEntry(
                    subscriber_id=subscriber_id,
                    kind=kind.value,
                    points=points,
                    idempotency_key=key,
                    reason=reason[:255],
                    ref=ref,
                    details=details or {},
                    at=now,
                ),
                counter=COUNTER_ACCOUNT[kind],
                member=MEMBER_ACCOUNT,
            )
            if points > 0:
                when = earned_at or now
                repo.add_lot(
                    session,
                    PointsLot(
                        subscriber_id=subscriber_id,
                        entry_id=entry.id,
                        points=points,
                        remaining=points,
                        earned_at=when,
                        expires_at=rules.expires_at(when, zone=zone, years=expiry_years or 0),
                    ),
                )
            session.flush()
    except IntegrityError:
        winner = repo.entry_by_key(session, key)
        if winner is None:
            raise
        return _replayed(session, winner, subscriber_id)
    return Posted(entry=entry, replayed=False, balance=repo.points_balance(session, subscriber_id))


def _multiplier(session: Session, loaded: Loaded, subscriber_id: int) -> int:
    member = repo.member(session, subscriber_id)
    if member is None or member.tier_id is None:
        return 100
    tier = loaded.all_tiers.get(member.tier_id)
    return tier.points_multiplier_pct if tier is not None and tier.status == "active" else 100


def _earnable(session: Session, subscriber_id: int) -> None:
    status = _facts(session, subscriber_id).status
    if status == Status.CHURNED:
        raise Conflict("a churned subscriber earns no points", field="subscriber_id")


def earn_for_bill(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    bill_ref: str,
    bill_fen: int,
    zone: str,
    earned_at: datetime | None = None,
    loaded: Loaded | None = None,
) -> Posted:
    """Points for a paid bill (yuan × points per yuan × tier multiplier), once per bill."""
    _require_write(actor)
    ref = bill_ref.strip()
    if not ref or len(ref) > 100:
        raise ValidationFailed("bill reference must be 1 to 100 characters", field="bill_ref")
    if bill_fen < 0 or bill_fen > 100_000_000:
        raise ValidationFailed("bill must be from 0 to 1,000,000 yuan", field="bill_fen")
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    key = f"bill:{subscriber_id}:{ref}"
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    _earnable(session, subscriber_id)
    loaded = loaded or load(session)
    multiplier = _multiplier(session, loaded, subscriber_id)
    points = rules.points_for_bill(
        bill_fen, per_yuan=loaded.points.per_yuan, multiplier_pct=multiplier
    )
    if points <= 0:
        return Posted(
            entry=None, replayed=False, balance=repo.points_balance(session, subscriber_id)
        )
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.EARN,
        points=points,
        key=key,
        reason=f"bill {ref}: {bill_fen / 100:.2f} yuan × {multiplier / 100:g}",
        ref=f"bill:{ref}",
        details={"bill_fen": bill_fen, "multiplier_pct": multiplier},
        zone=zone,
        expiry_years=loaded.points.expiry_years,
        earned_at=earned_at,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.earn",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"bill_ref": ref, "points": points},
        )
    return posted


def award_bonus(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    points: int,
    campaign_ref: str,
    zone: str,
) -> Posted:
    """Campaign bonus points, once per campaign and subscriber."""
    _require_adjust(actor)
    ref = campaign_ref.strip()
    if not ref or len(ref) > 64:
        raise ValidationFailed(
            "campaign reference must be 1 to 64 characters", field="campaign_ref"
        )
    if not 0 < points <= 1_000_000:
        raise ValidationFailed("bonus must be from 1 to 1,000,000 points", field="points")
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    _earnable(session, subscriber_id)
    loaded = load(session)
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.BONUS,
        points=points,
        key=f"bonus:{ref}:{subscriber_id}",
        reason=f"campaign {ref}",
        ref=f"campaign:{ref}",
        zone=zone,
        expiry_years=loaded.points.expiry_years,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.bonus",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"campaign": ref, "points": points},
        )
    return posted


def burn_points(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    points: int,
    idempotency_key: str,
    reason: str,
    zone: str,
    ref: str | None = None,
) -> Posted:
    """Spend points (oldest lots first); 409 when the balance is short, and nothing changes."""
    if actor.kind != "subscriber":
        _require_adjust(actor)
        _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    elif actor.id != str(subscriber_id):
        raise Forbidden("a subscriber spends only their own points")
    if not 0 < points <= 100_000_000:
        raise ValidationFailed("points must be from 1 to 100,000,000", field="points")
    key = idempotency_key.strip()
    if not key or len(key) > 100:
        raise ValidationFailed(
            "idempotency key must be 1 to 100 characters", field="idempotency_key"
        )
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.BURN,
        points=-points,
        key=f"burn:{subscriber_id}:{key}",
        reason=reason,
        ref=ref,
        zone=zone,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.burn",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"points": points, "key": key, "reason": reason[:255]},
        )
    return posted


@dataclass(frozen=True)
class Redeemed:
    posted: Posted
    grant_id: int
    cost: int


def redeem_points(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    benefit_id: int,
    idempotency_key: str,
    zone: str,
) -> Redeemed:
    """Exchange points for a catalog benefit at its sale price; both happen or neither does."""
    benefit = catalog.get_benefit(session, benefit_id=benefit_id)
    loaded = load(session)
    cost = rules.points_cost(
        benefit.sale_price_fen, value_fen_per_100=loaded.points.value_fen_per_100
    )
    key = idempotency_key.strip()
    repo.begin_write(session)
    with session.begin_nested():
        posted = burn_points(
            session,
            actor=actor,
            subscriber_id=subscriber_id,
            points=cost,
            idempotency_key=f"redeem:{key}",
            reason=f"redeemed for {benefit.code}",
            zone=zone,
            ref=f"benefit:{benefit.id}",
        )
        issued = grants.issue_grant(
            session,
            actor=SYSTEM,
            subscriber_id=subscriber_id,
            benefit_id=benefit.id,
            source="points",
            idempotency_key=f"points:{subscriber_id}:{key}",
            zone=zone,
        )
    return Redeemed(posted=posted, grant_id=issued.grant.id, cost=cost)


def reverse_bill(
    session: Session, *, actor: Actor, subscriber_id: int, bill_ref: str, zone: str
) -> Posted:
    """Take back a reversed bill's points: its own lot first, then others, never below zero."""
    _require_write(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    ref = bill_ref.strip()
    earn = repo.entry_by_key(session, f"bill:{subscriber_id}:{ref}")
    if earn is None or earn.subscriber_id != subscriber_id:
        raise NotFound(f"no points were earned for bill {ref!r}", field="bill_ref")
    key = f"reverse:bill:{subscriber_id}:{ref}"
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    now = clock.now()
    repo.begin_write(session)
    try:
        with session.begin_nested():
            repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
            repo.lock_points_balance(session, subscriber_id)
            _expire_due(session, subscriber_id=subscriber_id, now=now)
            own = repo.lot_of_entry(session, earn.id)
            others = [
                lot
                for lot in repo.open_lots(session, subscriber_id, now=now)
                if own is None or lot.id != own.id
            ]
            lots = ([own] if own is not None and own.remaining > 0 else []) + others
            available = sum(lot.remaining for lot in lots)
            taken = min(earn.points, available)
            if taken:
                _take(session, subscriber_id=subscriber_id, lots=lots, amount=taken)
                if not repo.move_points(
                    session, subscriber_id=subscriber_id, points=-taken, at=now
                ):
                    raise RuntimeError(f"points account {subscriber_id} is below its lots")
            entry = repo.add_entry(
                session,
                PointsEntry(
                    subscriber_id=subscriber_id,
                    kind=EntryKind.REVERSE.value,
                    points=-taken,
                    idempotency_key=key,
                    reason=f"bill {ref} reversed",
                    ref=f"bill:{ref}",
                    # Points already spent cannot be taken back: they are written off, stated here.
                    details={"earned": earn.points, "unrecovered": earn.points - taken},
                    at=now,
                ),
                counter=COUNTER_ACCOUNT[EntryKind.REVERSE],
                member=MEMBER_ACCOUNT,
            )
            session.flush()
    except IntegrityError:
        winner = repo.entry_by_key(session, key)
        if winner is None:
            raise
        return _replayed(session, winner, subscriber_id)
    org.record_audit(
        session,
        actor=actor,
        action="points.reverse",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"bill_ref": ref, "points": taken, "unrecovered": earn.points - taken},
    )
    return Posted(entry=entry, replayed=False, balance=repo.points_balance(session, subscriber_id))


def expire_points_of(session: Session, *, subscriber_id: int) -> int:
    """Expire one member's due lots (the expiry job's step); returns the points expired."""
    now = clock.now()
    repo.begin_write(session)
    with session.begin_nested():
        repo.lock_points_balance(session, subscriber_id)
        return _expire_due(session, subscriber_id=subscriber_id, now=now)


def expire_points(session: Session, *, actor: Actor, limit: int = 500) -> tuple[int, int]:
    """Expire due lots of up to `limit` members; (members, points). Run until it returns (0, 0)."""
    owners = repo.expired_lot_owners(session, now=clock.now(), after=0, limit=limit)
    total = 0
    for sid in owners:
        total += expire_points_of(session, subscriber_id=sid)
    if owners:
        org.record_audit(
            session,
            actor=actor,
            action="points.expire",
            target_type="members",
            target_id=str(len(owners)),
            details={"members": len(owners), "points": total},
        )
    return len(owners), total


def forfeit_points(session: Session, *, actor: Actor, subscriber_id: int, reason: str) -> int:
    """A churned member's points are forfeited (binding); returns how many."""
    now = clock.now()
    key = f"forfeit:{subscriber_id}"
    if repo.entry_by_key(session, key) is not None:
        return 0
    repo.begin_write(session)
    with session.begin_nested():
        repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
        balance = repo.lock_points_balance(session, subscriber_id)
        if balance <= 0:
            return 0
        _take(
            session,
            subscriber_id=subscriber_id,
            lots=repo.all_open_lots(session, subscriber_id),
            amount=balance,
        )
        repo.move_points(session, subscriber_id=subscriber_id, points=-balance, at=now)
        repo.add_entry(
            session,
            PointsEntry(
                subscriber_id=subscriber_id,
                kind=EntryKind.FORFEIT.value,
                points=-balance,
                idempotency_key=key,
                reason=reason[:255],
                at=now,
            ),
            counter=COUNTER_ACCOUNT[EntryKind.FORFEIT],
            member=MEMBER_ACCOUNT,
        )
        session.flush()
    org.record_audit(
        session,
        actor=actor,
        action="points.forfeit",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"points": balance, "reason": reason[:255]},
    )
    return balance


def points_balance(session: Session, *, subscriber_id: int) -> int:
    """A member's points balance."""
    return repo.points_balance(session, subscriber_id)


def ledger_sum(session: Session, *, subscriber_id: int) -> int:
    """The sum of a member's postings (what the balance must always equal)."""
    return repo.ledger_sum(session, subscriber_id)


# --- what people see -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PickGroup:
    """A pick group of this cycle: its options and what the member has chosen."""

    name: str
    choose: int
    cycle: str
    options: list[ItemView]
    picked: list[BundleGrant]

    @property
    def open(self) -> bool:
        return len(self.picked) < self.choose


@dataclass(frozen=True)
class MemberCard:
    """What a subscriber sees in the member center."""

    subscriber_id: int
    status: Status
    tier: MemberTier | None
    next_tier: MemberTier | None
    progress: rules.Progress | None
    pending_tier: MemberTier | None
    downgrade_due_at: datetime | None
    values: dict[str, Any]
    auto_items: list[ItemView]
    picks: list[PickGroup]
    annual_value_fen: int
    used_value_fen: int
    points: int
    points_value_fen: int
    multiplier_pct: int
    entries: list[PointsEntry]
    expiring: list[tuple[date, int]]
    history: list[TierChange]


def member_card(session: Session, *, subscriber_id: int, zone: str) -> MemberCard:
    """The member center of one subscriber: tier, progress, bundle, picks, points."""
    loaded = load(session)
    facts = _facts(session, subscriber_id)
    values = _values(session, facts, zone=zone, mart=None, extra=set())
    member = repo.member(session, subscriber_id)
    tier = loaded.all_tiers.get(member.tier_id) if member and member.tier_id else None
    level = tier.level if tier is not None else 0
    higher = [t for t in loaded.tiers if t.level > level]
    next_tier = higher[0] if higher else None
    progress = None
    if next_tier is not None:
        spec = next(s for s in loaded.specs if s.code == next_tier.code)
        progress = rules.progress_to(spec, values)
    items = _items_by_tier(session, [tier.id]).get(tier.id, []) if tier is not None else []
    views = _views(session, items)
    now = clock.now()
    year = now.astimezone(ZoneInfo(zone)).year
    month_cycles = [f"{year}-{m:02d}" for m in range(1, 13)] + [str(year)]
    current = repo.bundle_grants_of(
        session,
        subscriber_id=subscriber_id,
        cycles=[rules.cycle_of(now, zone, c) for c in Cadence],
    )
    groups: dict[str, PickGroup] = {}
    for v in views:
        if v.item.mode != Mode.PICK.value:
            continue
        name = v.item.pick_group or ""
        cycle = rules.cycle_of(now, zone, Cadence(v.item.cadence))
        if name not in groups:
            groups[name] = PickGroup(
                name=name,
                choose=v.item.choose,
                cycle=cycle,
                options=[],
                picked=[
                    g for g in current if g.slot.startswith(f"pick:{name}:") and g.cycle == cycle
                ],
            )
        groups[name].options.append(v)
    balance = repo.points_balance(session, subscriber_id)
    tz = ZoneInfo(zone)
    return MemberCard(
        subscriber_id=subscriber_id,
        status=facts.status,
        tier=tier,
        next_tier=next_tier,
        progress=progress,
        pending_tier=(
            loaded.all_tiers.get(member.pending_tier_id)
            if member and member.downgrade_due_at and member.pending_tier_id
            else None
        ),
        downgrade_due_at=member.downgrade_due_at if member else None,
        values=values,
        auto_items=[v for v in views if v.item.mode == Mode.AUTO.value],
        picks=list(groups.values()),
        annual_value_fen=rules.annual_value_fen(_spec_of(i) for i in items),
        used_value_fen=repo.bundle_value_since(
            session, subscriber_id=subscriber_id, cycles=month_cycles
        ),
        points=balance,
        points_value_fen=rules.points_value_fen(
            balance, value_fen_per_100=loaded.points.value_fen_per_100
        ),
        multiplier_pct=tier.points_multiplier_pct if tier is not None else 100,
        entries=list(repo.entries_of(session, subscriber_id, limit=20)),
        expiring=[
            ((clock.as_utc(when) - timedelta(seconds=1)).astimezone(tz).date(), n)
            for when, n in repo.expiring_of(session, subscriber_id)
        ],
        history=list(repo.changes_of(session, subscriber_id, limit=20)),
    )


def member_for_staff(
    session: Session, *, actor: Actor, subscriber_id: int, zone: str
) -> MemberCard:
    """A member's card as staff or an operator system may see it (region scope applies)."""
    _require_read(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    return member_card(session, subscriber_id=subscriber_id, zone=zone)


def members_page(session: Session, *, after: int, limit: int) -> list[tuple[int, int]]:
    """(subscriber, tier) of members holding a tier after `after`, in id order (keyset paging)."""
    return repo.members_with_tier(session, after=after, limit=limit)


def count_members(session: Session) -> int:
    """Members holding a tier."""
    return sum(n for t, n in repo.tier_counts(session).items() if t is not None)


@dataclass(frozen=True)
class ItemRow:
    """A bundle item detached from the session (jobs keep it across transactions)."""

    id: int
    tier_id: int
    benefit_id: int
    mode: str
    cadence: str
    quantity: int
    value_fen: int


def bundle_items(session: Session) -> dict[int, list[ItemRow]]:
    """Active bundle items by tier id."""
    out: dict[int, list[ItemRow]] = {}
    for tier_id, items in _items_by_tier(session, [t.id for t in load(session).tiers]).items():
        out[tier_id] = [
            ItemRow(i.id, i.tier_id, i.benefit_id, i.mode, i.cadence, i.quantity, i.value_fen)
            for i in items
        ]
    return out


def tier_distribution(session: Session, *, actor: Actor) -> list[tuple[str, str, str, int]]:
    """(code, name_zh, name_en, members) per active tier, lowest level first."""
    _require_national(actor)
    counts = repo.tier_counts(session)
    return [(t.code, t.name_zh, t.name_en, counts.get(t.id, 0)) for t in load(session).tiers]


@dataclass(frozen=True)
class Migration:
    """Who moved up or down between tiers in a month."""

    month: str
    rows: list[tuple[str, str, str, int]]  # kind, from code, to code, members
    up: int
    down: int
    scheduled: int


def tier_migration(
    session: Session, *, actor: Actor, zone: str, month: str | None = None
) -> Migration:
    """Tier moves of a month (default: last month), operator-local."""
    _require_national(actor)
    tz = ZoneInfo(zone)
    if month is None:
        first_this = clock.now().astimezone(tz).date().replace(day=1)
        month = (first_this - timedelta(days=1)).strftime("%Y-%m")
    parsed = rules.parse_month(check_month(month))
    assert parsed is not None
    y, m = parsed
    since = datetime(y, m, 1, tzinfo=tz)
    until = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    tiers = {t.id: t.code for t in load(session).all_tiers.values()}
    rows = []
    up = down = scheduled = 0
    counts = repo.change_counts(session, since=since, until=until)
    for kind, f, t, n in sorted(counts, key=lambda r: (r[0], r[1] or 0, r[2] or 0)):
        rows.append((kind, tiers.get(f, "—") if f else "—", tiers.get(t, "—") if t else "—", n))
        if kind in (ChangeKind.JOIN, ChangeKind.UPGRADE):
            up += n
        elif kind in (ChangeKind.DOWNGRADE, ChangeKind.LEAVE):
            down += n
        elif kind == ChangeKind.DOWNGRADE_SCHEDULED:
            scheduled += n
    return Migration(month=month, rows=rows, up=up, down=down, scheduled=scheduled)


@dataclass(frozen=True)
class Liability:
    """Points outstanding and what they are worth; when they expire; the ledger's account totals."""

    members: int
    points: int
    value_fen: int
    value_fen_per_100: int
    by_expiry: list[tuple[date, int, int]]
    accounts: dict[str, int]


def points_liability(session: Session, *, actor: Actor, zone: str) -> Liability:
    """The points liability report."""
    _require_national(actor)
    loaded = load(session)
    per = loaded.points.value_fen_per_100
    members, outstanding = repo.outstanding(session)
    tz = ZoneInfo(zone)
    merged: dict[date, int] = {}
    for when, n in repo.expiring_by_year(session):
        day = (clock.as_utc(when) - timedelta(seconds=1)).astimezone(tz).date()
        merged[day] = merged.get(day, 0) + n
    return Liability(
        members=members,
        points=outstanding,
        value_fen=rules.points_value_fen(outstanding, value_fen_per_100=per),
        value_fen_per_100=per,
        by_expiry=[
            (d, n, rules.points_value_fen(n, value_fen_per_100=per))
            for d, n in sorted(merged.items())
        ],
        accounts=repo.account_totals(session),
    )


# --- the default programme -----------------------------------------------------------------------


def default_program_document() -> dict[str, Any]:
    """The packaged default programme (silver / gold / diamond)."""
    text = resources.files("perkflow.membership").joinpath("data/default_program.yaml")
    data: dict[str, Any] = yaml.safe_load(text.read_text("utf-8"))
    return data


def default_catalog() -> dict[str, Any]:
    """The partners and benefits the default programme's bundles are made of."""
    text = resources.files("perkflow.membership").joinpath("data/default_catalog.yaml")
    data: dict[str, Any] = yaml.safe_load(text.read_text("utf-8"))
    return data


def load_default_program(session: Session, *, actor: Actor, vault: Vault) -> Program:
    """Create the default programme's partners and benefits where missing, then define it."""
    _require_edit(actor)
    data = default_catalog()
    partners = {p.code for p in catalog.list_partners(session, actor=SYSTEM)}
    for p in data["partners"]:
        if p["code"] not in partners:
            catalog.create_partner(
                session,
                actor=SYSTEM,
                vault=vault,
                spec=PartnerCreate(
                    code=p["code"], name=p["name"], contact_email=f"ops@{p['code']}.example"
                ),
            )
    for b in data["benefits"]:
        try:
            catalog.find_benefit(session, actor=SYSTEM, code=b["code"])
            continue
        except NotFound:
            pass
        benefit = catalog.create_benefit(
            session,
            actor=SYSTEM,
            spec=BenefitCreate.model_validate({**b, "validity_kind": "days"}),
        )
        catalog.set_benefit_status(
            session, actor=SYSTEM, benefit_id=benefit.id, status=BenefitStatus.LISTED
        )
    return define_program(session, actor=actor, raw=default_program_document())


def read_document(text: str) -> Any:
    """A programme typed in the editor (YAML, or JSON which is YAML too), or 422."""
    if len(text) > 200_000:
        raise ValidationFailed("the programme is too long", field="program")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"not valid YAML: {exc}", field="program") from exc


def document_text(session: Session) -> str:
    """The stored programme as YAML for the editor (the default one before any is saved)."""
    doc = program_document(session) or default_program_document()
    return str(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
