"""Definitions compiled to Ibis expressions: one plan for every engine, no per-row Python."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from typing import TYPE_CHECKING, Any

from perkflow.audience import rules
from perkflow.audience.rules import (
    All,
    AnyOf,
    Between,
    Compare,
    Contacted,
    Definition,
    InList,
    MemberOf,
    Node,
    Not,
    NullCheck,
    OnList,
    ParamRef,
    Responded,
    Score,
)
from perkflow.kit.lazy import lazy_module

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir
else:
    ibis = lazy_module("ibis")
    ir = lazy_module("ibis.expr.types")

_TRUE = ibis.literal(True)
_FALSE = ibis.literal(False)


@dataclass(frozen=True)
class Scoped:
    """A definition and the province its segment is confined to (None: national)."""

    definition: Definition
    province: str | None = None


@dataclass(frozen=True)
class Sources:
    """The mart tables one compilation reads, all on the same backend; absent history is empty."""

    profile: ir.Table
    contacts: ir.Table | None = None
    responses: ir.Table | None = None
    lists: ir.Table | None = None
    scores: ir.Table | None = None
    # Member-of targets by (segment id, version), and each segment's latest version.
    segments: Mapping[tuple[int, int], Scoped] = field(default_factory=dict)
    latest: Mapping[int, int] = field(default_factory=dict)
    score_columns: frozenset[str] = frozenset({"churn_risk"})
    # Response features (`response_features`), one row per subscriber; rules name its columns.
    features: ir.Table | None = None
    feature_columns: frozenset[str] = frozenset()


def _ts(value: datetime) -> ir.Value:
    # Every relative time is a literal from `as_of`: no engine clock, so engines agree.
    return ibis.literal(value.astimezone(UTC), type="timestamp('UTC')")


def _as_compared(col: ir.Value) -> ir.Value:
    # Float columns compare as doubles on every engine: a float32 cell against a decimal literal
    # is otherwise widened differently by DuckDB and Spark.
    return col.cast("float64") if col.type().is_floating() else col


def _column(src: Sources, name: str) -> ir.Value:
    return _as_compared(src.profile[name])


def _literal(value: Any, col: ir.Value) -> Any:
    if isinstance(value, ParamRef):
        raise ValueError(f"parameter {value.name} was not bound before compiling")
    if isinstance(value, date) and not isinstance(value, datetime):
        return ibis.literal(value, type="date")
    if col.type().is_floating():
        return ibis.literal(float(value), type="float64")
    return value


def _compare(col: ir.Value, op: str, value: Any) -> ir.BooleanValue:
    match op:
        case "=":
            return col == value
        case "!=":
            return col != value
        case "<":
            return col < value
        case "<=":
            return col <= value
        case ">":
            return col > value
        case ">=":
            return col >= value
    raise ValueError(f"unknown operator {op}")


def _ids_in(src: Sources, ids: ir.Column) -> ir.BooleanValue:
    """Membership of the profile row in a set of subscriber ids (a semi-join in every engine)."""
    return src.profile.subscriber_id.isin(ids)


ColumnRule = Compare | InList | Between | NullCheck


def _test(node: ColumnRule, col: ir.Value) -> ir.BooleanValue:
    """A column rule applied to a column expression (NULL where the value is missing)."""
    match node:
        case Compare(_, op, value):
            return _compare(col, op, _literal(value, col))
        case InList(_, values, negate):
            literals = [_literal(v, col) for v in values]
            return col.notin(literals) if negate else col.isin(literals)
        case Between(_, low, high):
            return col.between(_literal(low, col), _literal(high, col))
        case NullCheck(_, is_null):
            return col.isnull() if is_null else col.notnull()
    raise TypeError(f"not a column rule: {node!r}")


def _feature(node: ColumnRule, src: Sources) -> ir.BooleanValue:
    """A rule on a response feature, as a semi-join on the features table."""
    # A subscriber without a features row has every feature missing, like a NULL in the profile:
    # the rule is false (true under `not`), and only `is_null` selects them.
    if src.features is None:
        return _TRUE if isinstance(node, NullCheck) and node.is_null else _FALSE
    f = src.features
    col = _as_compared(f[node.column])
    if isinstance(node, NullCheck):
        known = _ids_in(src, f.filter(col.notnull()).subscriber_id)
        return ~known if node.is_null else known
    return _ids_in(src, f.filter(_test(node, col)).subscriber_id)


def _score(node: Score, src: Sources) -> ir.BooleanValue:
    if node.model in src.score_columns:
        col = _column(src, node.model)
        if node.op == "between":
            return col.between(node.value, node.high)
        return _compare(col, node.op, node.value)
    if src.scores is None:
        return _FALSE
    s = src.scores.filter(src.scores.model == node.model)
    score = s.score.cast("float64")
    cond = score.between(node.value, node.high) if node.op == "between" else None
    cond = cond if cond is not None else _compare(score, node.op, node.value)
    return _ids_in(src, s.filter(cond).subscriber_id)


def _contacted(node: Contacted, src: Sources, as_of: datetime) -> ir.BooleanValue:
    if src.contacts is None:
        return _FALSE
    c = src.contacts
    conds = [
        c.contacted_at > _ts(as_of - timedelta(days=node.within_days)),
        c.contacted_at <= _ts(as_of),
    ]
    if node.channel:
        conds.append(c.channel == node.channel)
    if node.campaign:
        conds.append(c.campaign_id == node.campaign)
    recent = c.filter(*conds)
    if node.at_least <= 1:
        return _ids_in(src, recent.subscriber_id)
    counted = recent.group_by("subscriber_id").aggregate(n=recent.count())
    return _ids_in(src, counted.filter(counted.n >= node.at_least).subscriber_id)


def _responded(node: Responded, src: Sources, as_of: datetime) -> ir.BooleanValue:
    if src.responses is None:
        return _FALSE
    r = src.responses
    conds = [r.responded_at <= _ts(as_of)]
    if node.within_days:
        conds.append(r.responded_at > _ts(as_of - timedelta(days=node.within_days)))
    if node.campaign:
        conds.append(r.campaign_id == node.campaign)
    if node.channel:
        conds.append(r.channel == node.channel)
    return _ids_in(src, r.filter(*conds).subscriber_id)


def _on_list(node: OnList, src: Sources) -> ir.BooleanValue:
    if src.lists is None:
        return _FALSE
    lst = src.lists
    conds = [lst.kind == node.kind]
    if node.channel:
        # An opt-out from every channel covers each one.
        conds.append(lst.channel.isin([node.channel, "all"]))
    return _ids_in(src, lst.filter(*conds).subscriber_id)


def predicate(
    node: Node, src: Sources, as_of: datetime, _seen: frozenset[tuple[int, int]] = frozenset()
) -> ir.BooleanValue:
    """The node as a boolean over the profile; a rule on a missing value is false."""
    match node:
        case All(children):
            return reduce(lambda a, b: a & b, (predicate(c, src, as_of, _seen) for c in children))
        case AnyOf(children):
            return reduce(lambda a, b: a | b, (predicate(c, src, as_of, _seen) for c in children))
        case Not(child):
            # Only under a negation does NULL differ from false for the final filter, so only
            # here is it folded to false (filters elsewhere keep their plain, pushable form).
            return ~predicate(child, src, as_of, _seen).fill_null(False)
        case Compare() | InList() | Between() | NullCheck() if node.column in src.feature_columns:
            return _feature(node, src)
        case NullCheck(column):
            return _test(node, src.profile[column])
        case Compare(column) | InList(column) | Between(column):
            return _test(node, _column(src, column))
        case Score():
            return _score(node, src)
        case Contacted():
            return _contacted(node, src, as_of)
        case Responded():
            return _responded(node, src, as_of)
        case OnList():
            return _on_list(node, src)
        case MemberOf(segment_id, version):
            key = (segment_id, version or src.latest[segment_id])
            if key in _seen:
                raise ValueError(f"segment {segment_id} refers to itself")
            return scoped_predicate(src.segments[key], src, as_of, _seen | {key})
    raise TypeError(f"not a node: {node!r}")


def scoped_predicate(
    scoped: Scoped,
    src: Sources,
    as_of: datetime,
    _seen: frozenset[tuple[int, int]] = frozenset(),
) -> ir.BooleanValue:
    """Membership of a whole definition: its rule, minus its exclusions, within its province."""
    parts: list[ir.BooleanValue] = []
    if scoped.province is not None:
        parts.append(src.profile.province_code == scoped.province)
    if scoped.definition.rule is not None:
        parts.append(predicate(scoped.definition.rule, src, as_of, _seen))
    for node in scoped.definition.exclude:
        parts.append(~predicate(node, src, as_of, _seen).fill_null(False))
    if not parts:
        return _TRUE
    return reduce(lambda a, b: a & b, parts)


def members(scoped: Scoped, src: Sources, as_of: datetime) -> ir.Table:
    """The profile rows of a segment's members."""
    pred = scoped_predicate(scoped, src, as_of)
    return src.profile if pred is _TRUE else src.profile.filter(pred)


def breakdown(table: ir.Table) -> ir.Table:
    """Members counted per province, plan fee and activity: every preview figure in one scan."""
    return table.group_by(["province_code", "plan_fee_yuan", "activity_level"]).aggregate(
        n=table.count()
    )


def by_province(table: ir.Table) -> ir.Table:
    """Members counted per province."""
    return table.group_by("province_code").aggregate(n=table.count())


# ---- target lists ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """Everything the split and the policy pass need besides the members."""

    target_list_id: int
    channel: str
    as_of: datetime
    control_share_bp: int
    # `key:salt:` prefixes of the hashed text; the subscriber id follows.
    control_prefix: str
    universal_prefix: str
    universal_threshold: str
    policy: rules.ContactPolicy
    quiet_provinces: frozenset[str]


def keyed_hash(prefix: str, ids: ir.IntegerColumn) -> ir.StringValue:
    """SHA-256 of `key:salt:id` as hex, computed by the engine (DuckDB and Spark agree)."""
    return (ibis.literal(prefix) + ids.cast("string")).hexdigest("sha256")


def _flag(ids: ir.Table, name: str) -> ir.Table:
    return ids.select(**{f"{name}_id": ids.subscriber_id}).distinct()


_HEX_DIGITS = "0123456789abcdef"


def _hex_int(text: ir.StringValue) -> ir.IntegerValue:
    """A short lower-case hex string as an integer, with string functions every engine has."""
    value: Any = ibis.literal(0, type="int64")
    for i in range(rules.QUOTA_DRAW_HEX):
        ch = text.substr(i, 1)
        digit = ibis.cases(*[(ch == c, n) for n, c in enumerate(_HEX_DIGITS)], else_=0)
        value = value * 16 + digit.cast("int64")
    return value


def assign(member_rows: ir.Table, src: Sources, plan: Assignment) -> ir.Table:
    """Cells and suppression reasons of every member, set-based, in the schema of a snapshot."""
    m = member_rows.select("subscriber_id", "province_code", "activity_level", "status")
    sid = m.subscriber_id

    # Lists and recent contacts become left-joined flags: one hash join each.
    if src.lists is not None:
        lst = src.lists
        optouts = _flag(
            lst.filter(lst.kind == "opted_out", lst.channel.isin([plan.channel, "all"])), "opt"
        )
        complaints = _flag(lst.filter(lst.kind == "complaint"), "cmp")
        m = m.left_join(optouts, sid == optouts.opt_id).left_join(
            complaints, sid == complaints.cmp_id
        )
        opted_out = m.opt_id.notnull()
        complaint = m.cmp_id.notnull()
    else:
        m = m.mutate(opt_id=ibis.null("int64"), cmp_id=ibis.null("int64"))
        opted_out = complaint = _FALSE

    caps = plan.policy.caps.get(plan.channel, {})
    capped = _FALSE
    if caps and src.contacts is not None:
        c = src.contacts
        widest = max(cap.window_days for cap in caps.values())
        recent = c.filter(
            c.channel == plan.channel,
            c.contacted_at > _ts(plan.as_of - timedelta(days=widest)),
            c.contacted_at <= _ts(plan.as_of),
        ).select("subscriber_id", "contacted_at")
        who = member_rows.select(rid=member_rows.subscriber_id, ract=member_rows.activity_level)
        j = recent.join(who, recent.subscriber_id == who.rid)
        window_start = ibis.cases(
            *[
                (j.ract == act, _ts(plan.as_of - timedelta(days=cap.window_days)))
                for act, cap in caps.items()
            ],
            else_=ibis.null("timestamp('UTC')"),
        )
        inside = j.filter(j.contacted_at > window_start)
        counted = inside.group_by(hid=inside.rid).aggregate(recent_contacts=inside.count())
        m = m.left_join(counted, m.subscriber_id == counted.hid)
        limit = ibis.cases(
            *[(m.activity_level == act, cap.max_contacts) for act, cap in caps.items()],
            else_=ibis.null("int64"),
        )
        capped = (m.recent_contacts.fill_null(0) >= limit).fill_null(False)
    quiet = m.province_code.isin(sorted(plan.quiet_provinces)) if plan.quiet_provinces else _FALSE

    reason = ibis.cases(
        (opted_out, rules.Reason.OPTED_OUT.value),
        (complaint, rules.Reason.COMPLAINT.value),
        (m.status != "active", rules.Reason.NOT_ACTIVE.value),
        (capped, rules.Reason.FREQUENCY_CAP.value),
        (quiet, rules.Reason.QUIET_HOURS.value),
        else_=ibis.null("string"),
    )
    prefix_len = rules.HASH_PREFIX_HEX
    universal = keyed_hash(plan.universal_prefix, m.subscriber_id).substr(0, prefix_len)
    in_universal = universal < plan.universal_threshold
    staged = m.select(
        "subscriber_id",
        "province_code",
        "activity_level",
        in_universal=in_universal,
        # A universal control member is held out whatever else holds: no suppression reason, so
        # a list's reason counts are of the subscribers it could have contacted.
        reason=ibis.ifelse(in_universal, ibis.null("string"), reason),
    )
    # Control is drawn per province among the eligible only, so target and control face the
    # same policy and the split holds in every province: rank by keyed hash, take the quota.
    eligible = (~staged.in_universal) & staged.reason.isnull()
    staged = staged.mutate(eligible=eligible)
    order = keyed_hash(plan.control_prefix, staged.subscriber_id)
    window = ibis.window(
        group_by=[staged.province_code, staged.eligible], order_by=[order, staged.subscriber_id]
    )
    group = ibis.window(group_by=[staged.province_code, staged.eligible])
    ranked = staged.mutate(
        rank=ibis.row_number().over(window), size=staged.subscriber_id.count().over(group)
    )
    # Randomized rounding (rules.control_quota): the whole part, plus one if the province's draw
    # falls below the fraction left, so a tiny province keeps the planned share in expectation.
    product = ranked.size.cast("int64") * plan.control_share_bp
    draw_text = ibis.literal(plan.control_prefix + "quota:") + ranked.province_code.cast(
        "string"
    ).fill_null("")
    draw = _hex_int(draw_text.hexdigest("sha256").substr(0, rules.QUOTA_DRAW_HEX))
    span = ibis.literal(rules.QUOTA_DRAW_SPAN, type="int64")
    extra = (draw * rules.BASIS_POINTS < (product % rules.BASIS_POINTS) * span).cast("int64")
    quota = product // rules.BASIS_POINTS + extra
    cell = ibis.cases(
        (ranked.in_universal, rules.ListCell.UNIVERSAL_CONTROL.value),
        (ranked.reason.notnull(), rules.ListCell.SUPPRESSED.value),
        (ranked.rank < quota, rules.ListCell.CONTROL.value),
        else_=rules.ListCell.TARGET.value,
    )
    return ranked.select(
        target_list_id=ibis.literal(plan.target_list_id, type="int64"),
        subscriber_id=ranked.subscriber_id,
        province_code=ranked.province_code.cast("string"),
        activity_level=ranked.activity_level.cast("string"),
        cell=cell,
        reason=ranked.reason,
    )


def universal_members(src: Sources, *, prefix: str, threshold: str) -> ir.Table:
    """Every subscriber of the universal control group for one rotation period."""
    p = src.profile
    h = keyed_hash(prefix, p.subscriber_id).substr(0, rules.HASH_PREFIX_HEX)
    return p.filter(h < threshold)


def cell_counts(snapshot: ir.Table) -> ir.Table:
    """Subscribers per province, cell and reason of a target list."""
    return snapshot.group_by(["province_code", "cell", "reason"]).aggregate(n=snapshot.count())
