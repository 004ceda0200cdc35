"""Uplift by kind of subscriber: plan band and activity group, each row against its controls.

Does the campaign work better on some subscribers than on others? Each breakdown splits the
campaign's targets and controls by an attribute fixed before the campaign (from the mart's
profile) and compares every group's targets with the same group's controls: control was split
off at random from the same list, so each group is a fair experiment of its own.

* **plan band** — monthly plan fee under 59 yuan, 59 to 128 yuan, 129 yuan and over;
* **activity group** — the profile's ``activity_level`` (responsive, active, low active, silent).

Subscribers without a profile row fall in "unknown". Reading several groups at once multiplies
the chances of a false "significant", so the p-values of each breakdown are adjusted by
Benjamini–Hochberg and the badge reads the adjusted one; a group with a cell under 10 contacts
(or nobody responding) is **not enough data** (``stats.tests``). The counts come from the
mart's history, all waves together (``mart_cells``), summed in the engine.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
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
}


@dataclass(frozen=True)
class Row:
    """One group of a breakdown: its comparison and its Benjamini–Hochberg adjusted p-value."""

    group: str
    comparison: Comparison
    p_adjusted: float | None


@dataclass(frozen=True)
class Breakdown:
    """One breakdown's rows, in a fixed order ("unknown" last)."""

    name: str
    rows: list[Row]


def _order(name: str, group: str) -> tuple[int, str]:
    known = _ORDER.get(name, ())
    if group == mart_cells.UNKNOWN:
        return (len(known) + 1, group)
    return (known.index(group), group) if group in known else (len(known), group)


def read(mart: Mart, *, campaign_id: int) -> list[Breakdown]:
    """Every breakdown of a campaign from the mart; empty when the campaign is not there."""
    counts = mart_cells.breakdown_counts(mart, campaign_id)
    out = []
    for name in BREAKDOWNS:
        cells: dict[str, dict[str, Arm]] = defaultdict(dict)
        for r in counts.get(name, []):
            cells[r["group"]][r["cell"]] = Arm(r["contacts"], r["responders"])
        if not cells:
            continue
        groups = sorted(cells, key=lambda g: _order(name, g))
        empty = Arm(0, 0)
        comparisons = [
            rules.compare(
                cells[g].get(Cell.TARGET.value, empty), cells[g].get(Cell.CONTROL.value, empty)
            )
            for g in groups
        ]
        adjusted = presentation.adjust(comparisons, presentation.BH)
        out.append(
            Breakdown(
                name,
                [Row(g, c, a) for g, c, a in zip(groups, comparisons, adjusted, strict=True)],
            )
        )
    return out


def _cell(arm: Arm) -> dict[str, Any]:
    return {"contacts": arm.contacts, "responses": arm.responders, "rate": arm.rate}


def breakdowns_dict(breakdowns: list[Breakdown] | None) -> dict[str, Any]:
    """The breakdowns as plain JSON, each row with raw and adjusted p-value and its badge."""
    if breakdowns is None:
        return {"reason": "no_mart", "tables": []}
    return {
        "reason": None if breakdowns else "not_in_mart",
        "source": "mart_history",
        "waves": "all",
        "adjustment": presentation.BH,
        "badge_reads": "adjusted",
        "tables": [
            {
                "name": b.name,
                "rows": [
                    {
                        "group": r.group,
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
