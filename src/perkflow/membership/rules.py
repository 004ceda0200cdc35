"""Pure rules of membership: the tier program format, qualification, tier changes, points maths."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from perkflow.kit.money import parse_yuan


class Op(StrEnum):
    GTE = "gte"
    GT = "gt"
    LTE = "lte"
    LT = "lt"
    EQ = "eq"
    IN = "in"


class Mode(StrEnum):
    AUTO = "auto"  # granted to every member each cycle
    PICK = "pick"  # the member chooses `choose` of a group's options each cycle


class Cadence(StrEnum):
    MONTHLY = "monthly"
    YEARLY = "yearly"


class ChangeKind(StrEnum):
    JOIN = "join"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    LEAVE = "leave"
    DOWNGRADE_SCHEDULED = "downgrade_scheduled"
    DOWNGRADE_CANCELLED = "downgrade_cancelled"


class EntryKind(StrEnum):
    EARN = "earn"
    BONUS = "bonus"
    BURN = "burn"
    EXPIRE = "expire"
    REVERSE = "reverse"
    FORFEIT = "forfeit"


# The counter account each kind of entry posts against; the member's account is the other leg.
COUNTER_ACCOUNT: dict[EntryKind, str] = {
    EntryKind.EARN: "issued",
    EntryKind.BONUS: "issued",
    EntryKind.BURN: "redeemed",
    EntryKind.EXPIRE: "expired",
    EntryKind.REVERSE: "reversed",
    EntryKind.FORFEIT: "forfeited",
}
MEMBER_ACCOUNT = "member"

# Fields every subscriber has: plan fee (the plan), prepaid balance (the ledger), tenure.
BUILTIN_FIELDS: dict[str, str] = {
    "plan_fee_yuan": "number",
    "prepaid_yuan": "number",
    "tenure_months": "number",
}
CODE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
GROUP = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_TIERS = 12
MAX_ITEMS = 40
DEFAULT_GRACE_DAYS = 30


class RuleError(ValueError):
    """A tier program that cannot be used, with the path of the offending field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Condition:
    field: str
    op: Op
    value: Any


@dataclass(frozen=True)
class ItemSpec:
    """One benefit of a tier's bundle, with its stated value per unit (fen)."""

    benefit_code: str
    mode: Mode
    cadence: Cadence
    quantity: int
    value_fen: int
    pick_group: str | None = None
    choose: int = 1


@dataclass(frozen=True)
class TierSpec:
    code: str
    name_zh: str
    name_en: str
    level: int
    multiplier_pct: int
    # Any of the paths qualifies; each path is all of its conditions; no paths = everyone.
    paths: tuple[tuple[Condition, ...], ...]
    bundle: tuple[ItemSpec, ...]


@dataclass(frozen=True)
class PointsSpec:
    per_yuan: int = 1
    expiry_years: int = 1
    value_fen_per_100: int = 100


@dataclass(frozen=True)
class Program:
    tiers: tuple[TierSpec, ...]
    points: PointsSpec
    grace_days: int

    def fields(self) -> set[str]:
        """Every field a qualification rule reads."""
        return {c.field for t in self.tiers for p in t.paths for c in p}


# ---- parsing --------------------------------------------------------------------------------


def _int(raw: Any, *, field: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or int(raw) != raw:
        raise RuleError(f"must be a whole number from {low} to {high}", field)
    value = int(raw)
    if not low <= value <= high:
        raise RuleError(f"must be a whole number from {low} to {high}", field)
    return value


def _yuan(raw: Any, *, field: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RuleError("must be an amount in yuan from 0 to 1,000,000", field)
    # The number as written (a float's shortest form) read by the one money parser: exact, and
    # more than two decimals is refused, not rounded.
    try:
        fen = parse_yuan(str(raw))
    except ValueError:
        fen = -1
    if not 0 <= fen <= 100_000_000:
        raise RuleError("must be an amount in yuan from 0 to 1,000,000", field)
    return fen


def _text(raw: Any, *, field: str, max_len: int = 64) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > max_len:
        raise RuleError(f"must be text of 1 to {max_len} characters", field)
    return raw.strip()


def _mapping(raw: Any, *, field: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RuleError("must be a mapping", field)
    return raw


def _known(raw: Mapping[str, Any], allowed: set[str], *, field: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}", field)


def _condition(name: str, raw: Any, *, field: str, columns: Mapping[str, str]) -> list[Condition]:
    kind = columns.get(name)
    if kind is None:
        raise RuleError(f"unknown field {name!r}; known: {', '.join(sorted(columns))}", field)
    ops = _mapping(raw, field=field)
    if not ops:
        raise RuleError("give at least one of gte, gt, lte, lt, eq, in", field)
    out = []
    for op_name, value in ops.items():
        try:
            op = Op(op_name)
        except ValueError:
            raise RuleError(
                f"unknown operator {op_name!r}; use gte, gt, lte, lt, eq or in",
                f"{field}.{op_name}",
            ) from None
        where = f"{field}.{op_name}"
        if op == Op.IN:
            if not isinstance(value, list) or not value:
                raise RuleError("must be a non-empty list", where)
            items = value
        else:
            items = [value]
        for v in items:
            is_num = isinstance(v, int | float) and not isinstance(v, bool)
            if kind == "number" and not is_num:
                raise RuleError(f"{name} is a number; compare it with a number", where)
            if kind == "text" and (not isinstance(v, str) or op not in (Op.EQ, Op.IN)):
                raise RuleError(f"{name} is text; use eq or in with text values", where)
            if is_num and (v < 0 or v > 1e9):
                raise RuleError("must be from 0 to 1,000,000,000", where)
        out.append(Condition(field=name, op=op, value=tuple(items) if op == Op.IN else value))
    return out


def _paths(
    raw: Any, *, field: str, columns: Mapping[str, str]
) -> tuple[tuple[Condition, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError("must be a list of paths (each a mapping of field → comparison)", field)
    paths = []
    for i, path in enumerate(raw):
        where = f"{field}[{i}]"
        conds: list[Condition] = []
        for name, ops in _mapping(path, field=where).items():
            conds += _condition(str(name), ops, field=f"{where}.{name}", columns=columns)
        if not conds:
            raise RuleError("a path needs at least one condition", where)
        paths.append(tuple(conds))
    return tuple(paths)


def _item(raw: Any, *, field: str, benefit: str | None = None) -> ItemSpec:
    data = _mapping(raw, field=field)
    _known(data, {"benefit", "cadence", "quantity", "value_yuan"}, field=field)
    code = _text(data.get("benefit"), field=f"{field}.benefit", max_len=48)
    try:
        cadence = Cadence(data.get("cadence", "monthly"))
    except ValueError:
        raise RuleError("must be monthly or yearly", f"{field}.cadence") from None
    if "value_yuan" not in data:
        raise RuleError("state the value of each benefit in yuan", f"{field}.value_yuan")
    return ItemSpec(
        benefit_code=code,
        mode=Mode.AUTO,
        cadence=cadence,
        quantity=_int(data.get("quantity", 1), field=f"{field}.quantity", low=1, high=31),
        value_fen=_yuan(data["value_yuan"], field=f"{field}.value_yuan"),
    )


def _bundle(raw: Any, *, field: str) -> tuple[ItemSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError("must be a list of benefits and pick groups", field)
    items: list[ItemSpec] = []
    groups: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"{field}[{i}]"
        data = _mapping(entry, field=where)
        if "pick" not in data:
            items.append(_item(data, field=where))
            continue
        _known(data, {"pick", "choose", "cadence", "options"}, field=where)
        group = _text(data["pick"], field=f"{where}.pick", max_len=32)
        if not GROUP.match(group):
            raise RuleError("lower-case letters, digits, - and _", f"{where}.pick")
        if group in groups:
            raise RuleError(f"pick group {group!r} appears twice", f"{where}.pick")
        groups.add(group)
        try:
            cadence = Cadence(data.get("cadence", "monthly"))
        except ValueError:
            raise RuleError("must be monthly or yearly", f"{where}.cadence") from None
        options = data.get("options")
        if not isinstance(options, list) or len(options) < 2:
            raise RuleError("a pick group needs at least two options", f"{where}.options")
        choose = _int(data.get("choose", 1), field=f"{where}.choose", low=1, high=len(options))
        seen: set[str] = set()
        for j, option in enumerate(options):
            spec = _item(option, field=f"{where}.options[{j}]")
            if spec.benefit_code in seen:
                raise RuleError("an option appears twice", f"{where}.options[{j}].benefit")
            seen.add(spec.benefit_code)
            items.append(
                ItemSpec(
                    benefit_code=spec.benefit_code,
                    mode=Mode.PICK,
                    cadence=cadence,
                    quantity=1,
                    value_fen=spec.value_fen,
                    pick_group=group,
                    choose=choose,
                )
            )
    if len(items) > MAX_ITEMS:
        raise RuleError(f"at most {MAX_ITEMS} benefits per tier", field)
    return tuple(items)


def parse_program(raw: Any, columns: Mapping[str, str] | None = None) -> Program:
    """A tier program from its YAML/JSON form, or RuleError naming the field."""
    known_columns = {**(columns or {}), **BUILTIN_FIELDS}
    data = _mapping(raw, field="program")
    _known(data, {"tiers", "points", "downgrade_grace_days"}, field="program")
    grace = _int(
        data.get("downgrade_grace_days", DEFAULT_GRACE_DAYS),
        field="downgrade_grace_days",
        low=0,
        high=366,
    )
    raw_points = _mapping(data.get("points", {}), field="points")
    _known(raw_points, {"per_yuan", "expiry_years", "value_fen_per_100"}, field="points")
    points = PointsSpec(
        per_yuan=_int(raw_points.get("per_yuan", 1), field="points.per_yuan", low=0, high=100),
        expiry_years=_int(
            raw_points.get("expiry_years", 1), field="points.expiry_years", low=0, high=10
        ),
        value_fen_per_100=_int(
            raw_points.get("value_fen_per_100", 100),
            field="points.value_fen_per_100",
            low=1,
            high=10_000,
        ),
    )
    raw_tiers = data.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise RuleError("give at least one tier", "tiers")
    if len(raw_tiers) > MAX_TIERS:
        raise RuleError(f"at most {MAX_TIERS} tiers", "tiers")
    tiers: list[TierSpec] = []
    for i, entry in enumerate(raw_tiers):
        where = f"tiers[{i}]"
        t = _mapping(entry, field=where)
        _known(
            t,
            {"code", "name_zh", "name_en", "level", "points_multiplier", "qualify", "bundle"},
            field=where,
        )
        code = _text(t.get("code"), field=f"{where}.code", max_len=32)
        if not CODE.match(code):
            raise RuleError("lower-case letters, digits and dashes", f"{where}.code")
        multiplier = t.get("points_multiplier", 1)
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise RuleError("must be a number from 0 to 20", f"{where}.points_multiplier")
        if not 0 <= multiplier <= 20:
            raise RuleError("must be a number from 0 to 20", f"{where}.points_multiplier")
        tiers.append(
            TierSpec(
                code=code,
                name_zh=_text(t.get("name_zh"), field=f"{where}.name_zh"),
                name_en=_text(t.get("name_en"), field=f"{where}.name_en"),
                level=_int(t.get("level"), field=f"{where}.level", low=1, high=99),
                multiplier_pct=round(multiplier * 100),
                paths=_paths(t.get("qualify"), field=f"{where}.qualify", columns=known_columns),
                bundle=_bundle(t.get("bundle"), field=f"{where}.bundle"),
            )
        )
    for field_name in ("code", "level"):
        seen: dict[Any, int] = {}
        for i, tier in enumerate(tiers):
            value = getattr(tier, field_name)
            if value in seen:
                raise RuleError(
                    f"tiers[{seen[value]}] already has {field_name} {value!r}",
                    f"tiers[{i}].{field_name}",
                )
            seen[value] = i
    ordered = tuple(sorted(tiers, key=lambda t: t.level))
    return Program(tiers=ordered, points=points, grace_days=grace)


def program_to_dict(program: Program) -> dict[str, Any]:
    """The YAML/JSON form of a program (round-trips through parse_program)."""
    tiers = []
    for t in program.tiers:
        bundle: list[dict[str, Any]] = []
        groups: dict[str, dict[str, Any]] = {}
        for item in t.bundle:
            option = {"benefit": item.benefit_code, "value_yuan": item.value_fen / 100}
            if item.mode == Mode.AUTO:
                bundle.append({**option, "cadence": item.cadence.value, "quantity": item.quantity})
                continue
            group = groups.get(item.pick_group or "")
            if group is None:
                group = {
                    "pick": item.pick_group,
                    "choose": item.choose,
                    "cadence": item.cadence.value,
                    "options": [],
                }
                groups[item.pick_group or ""] = group
                bundle.append(group)
            group["options"].append(option)
        paths = []
        for path in t.paths:
            p: dict[str, dict[str, Any]] = {}
            for c in path:
                p.setdefault(c.field, {})[c.op.value] = list(c.value) if c.op == Op.IN else c.value
            paths.append(p)
        tiers.append(
            {
                "code": t.code,
                "name_zh": t.name_zh,
                "name_en": t.name_en,
                "level": t.level,
                "points_multiplier": t.multiplier_pct / 100,
                "qualify": paths,
                "bundle": bundle,
            }
        )
    return {
        "downgrade_grace_days": program.grace_days,
        "points": {
            "per_yuan": program.points.per_yuan,
            "expiry_years": program.points.expiry_years,
            "value_fen_per_100": program.points.value_fen_per_100,
        },
        "tiers": tiers,
    }


# ---- qualification --------------------------------------------------------------------------


def condition_met(cond: Condition, value: Any) -> bool:
    """Whether one value meets one condition; a missing value meets none."""
    if value is None:
        return False
    if cond.op == Op.GTE:
        return bool(value >= cond.value)
    if cond.op == Op.GT:
        return bool(value > cond.value)
    if cond.op == Op.LTE:
        return bool(value <= cond.value)
    if cond.op == Op.LT:
        return bool(value < cond.value)
    if cond.op == Op.EQ:
        return bool(value == cond.value)
    return value in cond.value


def qualifies(tier: TierSpec, values: Mapping[str, Any]) -> bool:
    """Whether a subscriber's values meet any of the tier's paths (no paths: everyone)."""
    if not tier.paths:
        return True
    return any(all(condition_met(c, values.get(c.field)) for c in path) for path in tier.paths)


def level_for(tiers: Sequence[TierSpec], values: Mapping[str, Any], *, churned: bool) -> int:
    """The highest level whose rule the values meet; 0 (no tier) when none does or churned."""
    if churned:
        return 0
    best = 0
    for tier in tiers:
        if tier.level > best and qualifies(tier, values):
            best = tier.level
    return best


def months_between(start: date, end: date) -> int:
    """Whole months from `start` to `end` (tenure), never negative."""
    months = (end.year - start.year) * 12 + end.month - start.month
    if end.day < start.day:
        months -= 1
    return max(0, months)


@dataclass(frozen=True)
class Hint:
    """One way to reach a tier: a field, the value needed and how far the subscriber is."""

    field: str
    target: float
    current: float
    gap: float


@dataclass(frozen=True)
class Progress:
    """How close a subscriber is to a tier, and the cheapest-looking path to it."""

    ratio: float
    hints: tuple[Hint, ...]


def progress_to(tier: TierSpec, values: Mapping[str, Any]) -> Progress:
    """Per path, the share of each threshold reached; the best path's gaps as hints."""
    best = Progress(ratio=1.0 if not tier.paths else 0.0, hints=())
    options: list[Progress] = []
    for path in tier.paths:
        ratios: list[float] = []
        hints: list[Hint] = []
        for c in path:
            current = values.get(c.field)
            if c.op in (Op.GTE, Op.GT) and isinstance(c.value, int | float):
                have = float(current or 0)
                need = float(c.value) + (1 if c.op == Op.GT else 0)
                ratios.append(1.0 if need <= 0 else min(1.0, max(0.0, have / need)))
                if have < need:
                    hints.append(Hint(field=c.field, target=need, current=have, gap=need - have))
            else:
                met = condition_met(c, current)
                ratios.append(1.0 if met else 0.0)
        options.append(Progress(ratio=min(ratios) if ratios else 1.0, hints=tuple(hints)))
    for option in options:
        if option.ratio > best.ratio or (not best.hints and option.hints and best.ratio < 1.0):
            best = option
    return best


# ---- tier changes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do with a member's tier given a fresh evaluation."""

    kind: ChangeKind | None
    level: int  # the level after the decision
    pending: int | None  # the level a scheduled downgrade goes to
    due: datetime | None


def decide(
    *,
    current: int,
    pending: int | None,
    due: datetime | None,
    target: int,
    now: datetime,
    grace_days: int,
    immediate: bool = False,
) -> Decision:
    """Upgrades apply at once; downgrades at the end of the grace period (churn: at once)."""
    if target > current:
        kind = ChangeKind.JOIN if current == 0 else ChangeKind.UPGRADE
        return Decision(kind, target, None, None)
    if target == current:
        if pending is not None or due is not None:
            return Decision(ChangeKind.DOWNGRADE_CANCELLED, current, None, None)
        return Decision(None, current, None, None)
    # target < current
    if immediate or grace_days == 0:
        kind = ChangeKind.LEAVE if target == 0 else ChangeKind.DOWNGRADE
        return Decision(kind, target, None, None)
    if due is not None and pending == target:
        return Decision(None, current, pending, due)  # already scheduled to this level
    if due is not None and pending is not None:
        # Already on the way down: keep the original deadline, only the destination moves.
        return Decision(ChangeKind.DOWNGRADE_SCHEDULED, current, target, due)
    return Decision(
        ChangeKind.DOWNGRADE_SCHEDULED, current, target, now + timedelta(days=grace_days)
    )


def due_kind(target: int) -> ChangeKind:
    """The change a due downgrade records."""
    return ChangeKind.LEAVE if target == 0 else ChangeKind.DOWNGRADE


# ---- cycles and values -----------------------------------------------------------------------


def cycle_of(at: datetime, zone: str, cadence: Cadence) -> str:
    """The operator-local cycle a time falls in: `2026-11` (monthly) or `2026` (yearly)."""
    local = at.astimezone(ZoneInfo(zone))
    return local.strftime("%Y-%m") if cadence == Cadence.MONTHLY else local.strftime("%Y")


MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_month(text: str) -> tuple[int, int] | None:
    """(year, month) of a `2026-11` cycle, or None."""
    found = MONTH.match(text.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def cycle_for_month(month: str, cadence: Cadence) -> str:
    """The cycle a monthly issue run of `month` serves for items of a cadence."""
    return month if cadence == Cadence.MONTHLY else month[:4]


def cycles_per_year(cadence: Cadence) -> int:
    return 12 if cadence == Cadence.MONTHLY else 1


@dataclass(frozen=True)
class ValueLine:
    """One line of a bundle's stated value per year."""

    label: str
    per_cycle_fen: int
    per_year_fen: int


def annual_value_fen(items: Iterable[ItemSpec]) -> int:
    """A bundle's worth in a year: automatic items in full, a pick group its best options."""
    total = 0
    groups: dict[str, list[ItemSpec]] = {}
    for item in items:
        if item.mode == Mode.AUTO:
            total += item.value_fen * item.quantity * cycles_per_year(item.cadence)
        else:
            groups.setdefault(item.pick_group or "", []).append(item)
    for options in groups.values():
        best = sorted((o.value_fen for o in options), reverse=True)[: options[0].choose]
        total += sum(best) * cycles_per_year(options[0].cadence)
    return total


# ---- points ----------------------------------------------------------------------------------


def points_for_bill(bill_fen: int, *, per_yuan: int, multiplier_pct: int) -> int:
    """Points for a paid bill: whole yuan × points per yuan × the tier multiplier, rounded down."""
    if bill_fen <= 0:
        return 0
    return (bill_fen // 100) * per_yuan * multiplier_pct // 100


def expires_at(earned_at: datetime, *, zone: str, years: int) -> datetime:
    """End of the year `years` after the year of earning, operator-local (0: end of this year)."""
    tz = ZoneInfo(zone)
    year = earned_at.astimezone(tz).year + years + 1
    return datetime.combine(date(year, 1, 1), time.min, tzinfo=tz)


def points_cost(sale_price_fen: int, *, value_fen_per_100: int) -> int:
    """Points that buy a benefit at its sale price (rounded up: points never undersell)."""
    return math.ceil(sale_price_fen * 100 / value_fen_per_100)


def points_value_fen(points: int, *, value_fen_per_100: int) -> int:
    """What a number of points is worth in fen (the liability)."""
    return points * value_fen_per_100 // 100


def take_fifo(lots: Sequence[tuple[int, int]], amount: int) -> list[tuple[int, int]]:
    """(lot id, points taken) from lots given oldest-expiring first, until `amount` is covered."""
    taken: list[tuple[int, int]] = []
    left = amount
    for lot_id, remaining in lots:
        if left <= 0:
            break
        take = min(left, remaining)
        if take > 0:
            taken.append((lot_id, take))
            left -= take
    return taken


def paths_to_json(paths: tuple[tuple[Condition, ...], ...]) -> list[list[dict[str, Any]]]:
    """The stored form of a tier's qualification paths."""
    return [
        [
            {
                "field": c.field,
                "op": c.op.value,
                "value": list(c.value) if c.op == Op.IN else c.value,
            }
            for c in path
        ]
        for path in paths
    ]


def paths_from_json(
    raw: Sequence[Sequence[Mapping[str, Any]]],
) -> tuple[tuple[Condition, ...], ...]:
    """Qualification paths from their stored form (validated when they were saved)."""
    return tuple(
        tuple(
            Condition(
                field=str(c["field"]),
                op=Op(c["op"]),
                value=tuple(c["value"]) if c["op"] == Op.IN.value else c["value"],
            )
            for c in path
        )
        for path in raw
    )
