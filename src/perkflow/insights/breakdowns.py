"""Uplift by kind of subscriber: plan band and activity group, each row against its controls.

Does the campaign work better on some subscribers than on others? Each breakdown splits the
campaign's targets and controls by an attribute fixed before the campaign (from the mart's
profile) and compares every group's targets with the same group's controls: control was split
off at random from the same list, so each group is a fair experiment of its own. Rows are per
variant and group: a variant's targets against its own control rows of the group (a control row
carries the variant it would have been sent, as ``cells.by_variant`` reads it), intent to treat
(every assigned row, a target suppressed at send time too). A history whose control rows carry
no variant compares each variant's group with the whole control's group (``own_control`` False).

* **plan band** — monthly plan fee under 59 yuan, 59 to 128 yuan, 129 yuan and over;
* **activity group** — the profile's ``activity_level`` (responsive, active, low active, silent).

Subscribers without a profile row fall in "unknown". Reading several groups at once multiplies
the chances of a false "significant", so the p-values of each breakdown are adjusted by
Benjamini–Hochberg over all its rows (every variant's groups) and the badge reads the adjusted
one; a group with a cell under 10 contacts (or nobody responding) is **not enough data**
(``stats.tests``). The counts come from the mart's history, the headline's waves
(``mart_cells``), summed in the engine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from perkflow.campaigns.rules import Cell
from perkflow.insights import mart_cells, presentation, rules
from perkflow.insights.rules import Arm, Comparison
from perkflow.mart import Mart

BREAKDOWNS = ("plan_band", "activity")
ACTIVITY_ORDER = ("responsive", "active", "low_active", "silent")
_ORDER = {
    "plan_band": tuple(key for key, _, _ in mart_cells.PLAN_BANDS),
    "activity": ACTIVITY_ORDER,
    "segment": (mart_cells.MEMBER, mart_cells.NOT_MEMBER),
}


@dataclass(frozen=True)
class Row:
    """One group of a breakdown for one variant: its comparison and its BH-adjusted p-value."""

    group: str
    comparison: Comparison
    p_adjusted: float | None
    variant: str | None = None
    own_control: bool = True


@dataclass(frozen=True)
class Breakdown:
    """One breakdown's rows, in a fixed order ("unknown" last)."""

    name: str
    rows: list[Row]
    waves: str = "all"  # the waves read: "all", or the headline's wave ("rollout", "test")
    segment: dict[str, Any] | None = None  # a saved segment's breakdown: its id, name, version


def _order(name: str, group: str) -> tuple[int, str]:
    known = _ORDER.get(name, ())
    if group == mart_cells.UNKNOWN:
        return (len(known) + 1, group)
    return (known.index(group), group) if group in known else (len(known), group)


def _variant_order(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


@dataclass(frozen=True)
class Segment:
    """A saved segment to split the campaign by: its id, name, version and members' expression."""

    id: int
    name: str
    version: int
    members: Any  # ibis Table of subscriber_id on the mart's engine


def read(
    mart: Mart,
    *,
    campaign_id: int,
    wave_ids: Sequence[int] | None = None,
    waves: str = "all",
    segments: Sequence[Segment] = (),
) -> list[Breakdown]:
    """Every breakdown of a campaign from the mart; empty when the campaign is not there.

    ``wave_ids`` limits the counts to those waves (the headline's, labelled ``waves``). Each of
    ``segments`` adds a breakdown of its own: its members against everyone else of the campaign.
    """
    counts = mart_cells.breakdown_counts(mart, campaign_id, wave_ids)
    out = []
    for name in BREAKDOWNS:
        found = _breakdown(name, counts.get(name, []), waves)
        if found is not None:
            out.append(found)
    for seg in segments:
        rows = mart_cells.segment_counts(mart, campaign_id, seg.members, wave_ids)
        found = _breakdown("segment", rows, waves)
        if found is not None:
            out.append(
                replace(found, segment={"id": seg.id, "name": seg.name, "version": seg.version})
            )
    return out


def _breakdown(name: str, counts: list[dict[str, Any]], waves: str) -> Breakdown | None:
    """One breakdown's rows from its counts, BH-adjusted over every row; None without counts."""
    empty = Arm(0, 0)
    # (group, variant) → cell → arm
    cells: dict[tuple[str, str | None], dict[str, Arm]] = defaultdict(dict)
    for r in counts:
        cells[(r["group"], r["variant"])][r["cell"]] = Arm(r["contacts"], r["responders"])
    if not cells:
        return None
    labelled = any(v is not None for (_, v), arms in cells.items() if Cell.CONTROL in arms)
    groups = sorted({g for g, _ in cells}, key=lambda g: _order(name, g))
    variants = sorted(
        {v for (_, v), arms in cells.items() if labelled or Cell.TARGET in arms},
        key=_variant_order,
    )
    keys, comparisons = [], []
    for v in variants:
        for g in groups:
            target = cells.get((g, v), {}).get(Cell.TARGET.value, empty)
            if labelled:
                control = cells.get((g, v), {}).get(Cell.CONTROL.value, empty)
            else:
                control = _total(
                    arms.get(Cell.CONTROL.value, empty)
                    for (group, _), arms in cells.items()
                    if group == g
                )
            if target.contacts == 0 and (not labelled or control.contacts == 0):
                continue  # a group this variant has nobody in
            keys.append((g, v))
            comparisons.append(rules.compare(target, control))
    adjusted = presentation.adjust(comparisons, presentation.BH)
    return Breakdown(
        name,
        waves=waves,
        rows=[
            Row(g, c, a, variant=v, own_control=labelled)
            for (g, v), c, a in zip(keys, comparisons, adjusted, strict=True)
        ],
    )


def _total(arms: Iterable[Arm]) -> Arm:
    contacts = responders = 0
    for a in arms:
        contacts, responders = contacts + a.contacts, responders + a.responders
    return Arm(contacts, responders)


def _cell(arm: Arm) -> dict[str, Any]:
    return {"contacts": arm.contacts, "responses": arm.responders, "rate": arm.rate}


def breakdowns_dict(breakdowns: list[Breakdown] | None) -> dict[str, Any]:
    """The breakdowns as plain JSON, each row with raw and adjusted p-value and its badge."""
    if breakdowns is None:
        return {"reason": "no_mart", "tables": []}
    return {
        "reason": None if breakdowns else "not_in_mart",
        "source": "mart_history",
        "waves": breakdowns[0].waves if breakdowns else "all",
        "adjustment": presentation.BH,
        "badge_reads": "adjusted",
        "tables": [
            {
                "name": b.name,
                "segment": b.segment,
                "rows": [
                    {
                        "group": r.group,
                        "variant": r.variant,
                        "own_control": r.own_control,
                        "target": _cell(r.comparison.target),
                        "control": _cell(r.comparison.control),
                        "uplift": presentation.uplift_dict(
                            r.comparison, r.p_adjusted, adjusted_by=presentation.BH
                        ),
                        "significant": presentation.significant(
                            r.comparison, r.p_adjusted, adjusted_by=presentation.BH
                        ),
                        "verdict": presentation.verdict(
                            r.comparison, r.p_adjusted, adjusted_by=presentation.BH
                        ),
                    }
                    for r in b.rows
                ],
            }
            for b in breakdowns
        ],
    }
