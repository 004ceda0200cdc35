"""Per-subscriber sums of a campaign's cells in the mart (Ibis, set-based, any backend).

After ``service.sync_history`` the mart holds each ledger campaign's contacts (``c<id>``) and
responses; beside them the subscriber profile and monthly usage. The queries here join them per
subscriber and aggregate in the engine: only one row per cell (CUPED's sufficient statistics) or
per (group, cell) (breakdown counts) comes back, never the subscribers' rows.

A subscriber's outcome ``y`` is 1 when they responded to the campaign at all (as the ledger's
responders count), else 0. Every row the history holds counts, a target suppressed at send time
too (intent to treat, as the ledger's cell counts), and each sum is kept per variant: a control
row carries the variant its subscriber would have got, so each variant meets its own controls
(``pre_period``, ``breakdowns``). A history synced before the variant was exported reads as one
unnamed variant until the next sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from perkflow.audience import marts
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart

if TYPE_CHECKING:
    import ibis
else:
    ibis = lazy_module("ibis")

# The operator's monthly bills, written by the data load (synth) and read by membership too.
USAGE = "usage_monthly"
# Plan bands (yuan per month): under 59, 59 to 128, 129 and over.
PLAN_BANDS: tuple[tuple[str, int | None, int | None], ...] = (
    ("lt59", None, 59),
    ("59to128", 59, 129),
    ("ge129", 129, None),
)
UNKNOWN = "unknown"  # no profile row, or the attribute is empty


def campaign_key(campaign_id: int) -> str:
    """The name of a ledger campaign in the mart's history tables."""
    return f"c{campaign_id}"


def has_history(mart: Mart) -> bool:
    """Whether the history has been synced to the mart at all."""
    return mart.has(marts.CONTACT_HISTORY)


def _contacts(mart: Mart) -> Any:
    """The contact history, with an empty variant where it was written without one."""
    contacts = mart.table(marts.CONTACT_HISTORY)
    if "variant" not in contacts.columns:
        contacts = contacts.mutate(variant=ibis.null("string"))
    return contacts


Waves = Sequence[int] | None  # the ledger's wave ids to read; None reads every wave


def _mine(mart: Mart, key: str, wave_ids: Waves) -> Any:
    """The campaign's history rows, only those of ``wave_ids`` when given."""
    contacts = _contacts(mart)
    mine = contacts.filter(contacts.campaign_id == key)
    if wave_ids is not None:
        if "wave_id" not in contacts.columns:
            return mine.filter(ibis.literal(False))  # written before waves were exported
        mine = mine.filter(mine.wave_id.isin([int(w) for w in wave_ids]))
    return mine


def _rows(mart: Mart, key: str, wave_ids: Waves = None) -> Any:
    """One row per subscriber of the campaign: cell, variant, first contact, the outcome ``y``.

    A subscriber is assigned once per campaign, in one wave, so their responses to the campaign
    are that wave's.
    """
    mine = _mine(mart, key, wave_ids)
    per_sub = mine.group_by(["subscriber_id", "cell", "variant"]).aggregate(
        contacted_at=mine.contacted_at.min()
    )
    if mart.has(marts.RESPONSE_HISTORY):
        responses = mart.table(marts.RESPONSE_HISTORY)
        answered = (
            responses.filter(responses.campaign_id == key)
            .select(responder=responses.subscriber_id)
            .distinct()
        )
        joined = per_sub.left_join(answered, per_sub.subscriber_id == answered.responder)
        return joined.select(
            per_sub.subscriber_id,
            per_sub.cell,
            per_sub.variant,
            per_sub.contacted_at,
            y=answered.responder.notnull().cast("int64"),
        )
    return per_sub.mutate(y=ibis.literal(0, type="int64"))


def first_contact(mart: Mart, campaign_id: int, wave_ids: Waves = None) -> datetime | None:
    """When the mart's history first contacted (or held back) someone of the campaign's waves."""
    if not has_history(mart):
        return None
    mine = _mine(mart, campaign_key(campaign_id), wave_ids)
    value = mart.con.to_pyarrow(mine.contacted_at.min().name("first")).as_py()
    return value if isinstance(value, datetime) else None


CellKey = tuple[str | None, str]  # (variant, cell)


def cuped_sums(
    mart: Mart, campaign_id: int, *, before: date, wave_ids: Waves = None
) -> dict[CellKey, dict[str, float]]:
    """Per (variant, cell): n, Σx, Σx², Σy, Σy², Σxy and how many rows have a pre-period ``x``.

    ``x`` is the subscriber's mean monthly bill (yuan) over the usage months before ``before``
    (the first of the campaign's first month). A subscriber without such a month gets the mean of
    those who have one, so every row counts and that row adds nothing to theta.
    Empty when the campaign is not in the mart's history.
    """
    if not has_history(mart):
        return {}
    rows = _rows(mart, campaign_key(campaign_id), wave_ids)
    if mart.has(USAGE):
        usage = mart.table(USAGE)
        pre = (
            usage.filter(usage.month < ibis.date(before))
            .group_by("subscriber_id")
            .aggregate(x=usage.bill_yuan.cast("float64").mean())
        )
        joined = rows.left_join(pre, rows.subscriber_id == pre.subscriber_id)
        rows = joined.select(rows.cell, rows.variant, rows.y, pre.x)
    else:
        rows = rows.select(rows.cell, rows.variant, rows.y, x=ibis.null("float64"))
    filled = rows.mutate(
        xf=rows.x.coalesce(rows.x.mean().over(ibis.window()), 0.0),
        yf=rows.y.cast("float64"),
    )
    sums = filled.group_by(["variant", "cell"]).aggregate(
        n=filled.count(),
        covered=filled.x.count(),
        sx=filled.xf.sum(),
        sxx=(filled.xf * filled.xf).sum(),
        sy=filled.yf.sum(),
        syy=(filled.yf * filled.yf).sum(),
        sxy=(filled.xf * filled.yf).sum(),
    )
    out: dict[CellKey, dict[str, float]] = {}
    for row in mart.con.to_pyarrow(sums).to_pylist():
        cell, variant = str(row.pop("cell")), row.pop("variant")
        out[(variant, cell)] = {k: float(v or 0) for k, v in row.items()}
    return out


def _plan_band(fee: Any) -> Any:
    cases = []
    for key, low, high in PLAN_BANDS:
        cond = fee.notnull()
        if low is not None:
            cond = cond & (fee >= low)
        if high is not None:
            cond = cond & (fee < high)
        cases.append((cond, key))
    return ibis.cases(*cases, else_=UNKNOWN)


def breakdown_counts(
    mart: Mart, campaign_id: int, wave_ids: Waves = None
) -> dict[str, list[dict[str, Any]]]:
    """Per breakdown (``plan_band``, ``activity``): contacts, responders by group, variant, cell."""
    if not has_history(mart):
        return {}
    rows = _rows(mart, campaign_key(campaign_id), wave_ids)
    if mart.has(marts.PROFILE):
        profile = mart.table(marts.PROFILE)
        joined = rows.left_join(profile, rows.subscriber_id == profile.subscriber_id)
        rows = joined.select(
            rows.cell,
            rows.variant,
            rows.y,
            fee=profile.plan_fee_yuan.cast("int64"),
            activity=profile.activity_level.cast("string"),
        )
    else:
        rows = rows.select(
            rows.cell,
            rows.variant,
            rows.y,
            fee=ibis.null("int64"),
            activity=ibis.null("string"),
        )
    grouped = rows.mutate(
        plan_band=_plan_band(rows.fee),
        activity_group=rows.activity.fill_null(UNKNOWN),
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for name, column in (("plan_band", "plan_band"), ("activity", "activity_group")):
        counts = grouped.group_by([column, "variant", "cell"]).aggregate(
            contacts=grouped.count(), responders=grouped.y.sum()
        )
        out[name] = [
            {
                "group": str(r[column]),
                "variant": r["variant"],
                "cell": str(r["cell"]),
                "contacts": int(r["contacts"]),
                "responders": int(r["responders"] or 0),
            }
            for r in mart.con.to_pyarrow(counts).to_pylist()
        ]
    return out


MEMBER, NOT_MEMBER = "member", "not_member"


def segment_counts(
    mart: Mart, campaign_id: int, members: Any, wave_ids: Waves = None
) -> list[dict[str, Any]]:
    """Contacts and responders by segment membership (``member``/``not_member``), variant, cell.

    ``members`` is an engine expression of the segment's ``subscriber_id`` on the mart's engine
    (``audience.service.segment_members``); the join and the sums run there.
    """
    if not has_history(mart):
        return []
    rows = _rows(mart, campaign_key(campaign_id), wave_ids)
    inside = members.select(member=members.subscriber_id).distinct()
    joined = rows.left_join(inside, rows.subscriber_id == inside.member)
    flagged = joined.select(
        rows.cell,
        rows.variant,
        rows.y,
        group=ibis.ifelse(inside.member.notnull(), MEMBER, NOT_MEMBER),
    )
    counts = flagged.group_by(["group", "variant", "cell"]).aggregate(
        contacts=flagged.count(), responders=flagged.y.sum()
    )
    return [
        {
            "group": str(r["group"]),
            "variant": r["variant"],
            "cell": str(r["cell"]),
            "contacts": int(r["contacts"]),
            "responders": int(r["responders"] or 0),
        }
        for r in mart.con.to_pyarrow(counts).to_pylist()
    ]
