"""Tier rules compiled to one Ibis expression over the mart: set-based, no per-row Python."""

from __future__ import annotations

from functools import reduce
from typing import TYPE_CHECKING, Any

from perkflow.kit.lazy import lazy_module
from perkflow.membership.rules import Condition, Op, Program, TierSpec

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir
else:
    ibis = lazy_module("ibis")
    ir = lazy_module("ibis.expr.types")

# The mart table the ledger's prepaid balances are exported to before a batch evaluation.
PREPAID_TABLE = "member_prepaid"
PROFILE_TABLE = "subscriber_profile"


def _column(t: ir.Table, name: str) -> ir.Value:
    col = t[name]
    # Float columns compare as doubles: a float32 cell against a decimal literal is otherwise
    # widened differently from engine to engine (and from Python).
    return col.cast("float64") if col.type().is_floating() else col


def _literal(value: Any, col: ir.Value) -> Any:
    if col.type().is_floating() or (isinstance(value, float) and col.type().is_integer()):
        return ibis.literal(float(value), type="float64")
    return value


def _condition(t: ir.Table, cond: Condition) -> ir.BooleanValue:
    col = _column(t, cond.field)
    if cond.op == Op.IN:
        values = [v.item() if hasattr(v, "item") else v for v in cond.value]
        if col.type().is_numeric():
            return col.cast("float64").isin([float(v) for v in values])
        return col.isin(values)
    value = _literal(cond.value, col)
    if isinstance(value, float) and col.type().is_integer():
        col = col.cast("float64")
    compare = {
        Op.GTE: col >= value,
        Op.GT: col > value,
        Op.LTE: col <= value,
        Op.LT: col < value,
        Op.EQ: col == value,
    }[cond.op]
    # A missing value meets no condition (as in rules.condition_met).
    return compare.fill_null(False)


def _qualifies(t: ir.Table, tier: TierSpec) -> ir.BooleanValue:
    if not tier.paths:
        return ibis.literal(True)
    paths = [reduce(lambda a, b: a & b, [_condition(t, c) for c in p]) for p in tier.paths]
    return reduce(lambda a, b: a | b, paths)


def with_prepaid(profile: ir.Table, prepaid: ir.Table | None) -> ir.Table:
    """The profile with `prepaid_yuan` (0 for subscribers who never prepaid)."""
    if prepaid is None:
        return profile.mutate(prepaid_yuan=ibis.literal(0.0, type="float64"))
    joined = profile.left_join(
        prepaid.select("subscriber_id", prepaid_in=prepaid["prepaid_yuan"]), "subscriber_id"
    )
    return joined.mutate(prepaid_yuan=joined["prepaid_in"].cast("float64").fill_null(0.0)).drop(
        "prepaid_in"
    )


def tier_levels(source: ir.Table, program: Program) -> ir.Table:
    """(subscriber_id, tier_level): the highest level whose rule is met, 0 for none or churned."""
    branches = [
        (_qualifies(source, tier), tier.level)
        for tier in sorted(program.tiers, key=lambda t: -t.level)
    ]
    level = ibis.cases(*branches, else_=0) if branches else ibis.literal(0)
    churned = source["status"].cast("string") == "churned"
    return source.select("subscriber_id", tier_level=ibis.ifelse(churned, 0, level).cast("int32"))


def distribution(levels: ir.Table) -> ir.Table:
    """Subscribers per tier level."""
    return levels.group_by("tier_level").aggregate(n=levels.count()).order_by("tier_level")
