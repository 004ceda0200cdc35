"""Membership use cases: the program."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.membership import compiler, rules
from perkflow.membership import repository as repo
from perkflow.membership.models import (
    BundleItem,
    MembershipProgram,
    MemberTier,
)
from perkflow.membership.rules import (
    Cadence,
    Mode,
    Program,
    RuleError,
    TierSpec,
)
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _require_edit, _require_read

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


def _facts(session: Session, subscriber_id: int) -> subscribers.PlanFacts:
    found = subscribers.plan_facts(session, subscriber_ids=[subscriber_id]).get(subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    return found


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


def _mart_values(mart: Mart | None, subscriber_id: int, names: set[str]) -> dict[str, Any]:
    if not names or mart is None or not mart.has(compiler.PROFILE_TABLE):
        return {}
    t = mart.table(compiler.PROFILE_TABLE)
    rows = t.filter(t.subscriber_id == subscriber_id).select(*sorted(names)).limit(1).to_pyarrow()
    if rows.num_rows == 0:
        return {}
    return {k: v[0] for k, v in rows.to_pydict().items()}
