"""The CUPED reading of a campaign: its uplift sharpened by each subscriber's pre-period bill.

The covariate is the subscriber's **mean monthly bill** (``usage_monthly.bill_yuan``) over the
months before the month the campaign first contacted anyone: it is known for nearly every
subscriber, fixed before assignment (so the campaign cannot have moved it), and it tracks how
engaged a subscriber is. The outcome is whether the subscriber responded at all. Targets and
controls are read from the mart's history (``service.sync_history``), all waves together: every
control and every target whose contact was made (a target dropped at send time is not in the
mart's history, so these cells can be a little smaller than the headline's). The plain
difference is shown on the same rows, so the variance reduction compares like with like.

The arithmetic is ``stats.cuped``; the sums come from the engine (``mart_cells``). No number —
"not enough data" — when the campaign is not in the mart, no subscriber has a pre-period month,
a cell is under ``stats.cuped.MIN_N`` rows, or the counts are too small for a normal
approximation (the same rule as the z-test's: every expected count at least 5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from perkflow.campaigns.rules import Cell
from perkflow.insights import mart_cells, rules
from perkflow.insights.stats import cuped, tests
from perkflow.mart import Mart

COVARIATE = "pre_period_mean_bill_yuan"
NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class Reading:
    """What CUPED says about a campaign, or why it says nothing."""

    reason: str | None  # None when there is a figure
    target: int = 0  # rows read from the mart, per cell
    control: int = 0
    covered: int = 0  # of them, rows with a pre-period month
    pre_period_before: date | None = None
    result: cuped.Cuped | None = None


def _moments(s: dict[str, float]) -> cuped.Moments:
    return cuped.Moments(
        n=int(s["n"]), sx=s["sx"], sxx=s["sxx"], sy=s["sy"], syy=s["syy"], sxy=s["sxy"]
    )


def read(mart: Mart, *, campaign_id: int) -> Reading:
    """CUPED of a campaign's targets against its controls from the mart."""
    first = mart_cells.first_contact(mart, campaign_id)
    if first is None:
        return Reading("not_in_mart")
    before = date(first.year, first.month, 1)
    sums = mart_cells.cuped_sums(mart, campaign_id, before=before)
    t = sums.get(Cell.TARGET.value)
    c = sums.get(Cell.CONTROL.value)
    n_t, n_c = int(t["n"]) if t else 0, int(c["n"]) if c else 0
    covered = int((t or {}).get("covered", 0) + (c or {}).get("covered", 0))
    base = Reading(None, target=n_t, control=n_c, covered=covered, pre_period_before=before)
    if t is None or c is None:
        return replace(base, reason=str(tests.NotEnoughData.EMPTY_CELL))
    if covered == 0:
        return replace(base, reason="no_pre_period")
    x_t, x_c = round(t["sy"]), round(c["sy"])
    small = tests.not_enough_data(x_t, n_t, x_c, n_c)
    if small is not None:
        return replace(base, reason=str(small))
    if not tests.large_enough_for_z(x_t, n_t, x_c, n_c):
        return replace(base, reason="small_counts")
    result = cuped.adjust(_moments(t), _moments(c))
    if isinstance(result, cuped.TooLittle):
        return replace(base, reason=str(result))
    return replace(base, result=result)


def _pair(ci: tuple[float, float]) -> list[float]:
    return [ci[0], ci[1]]


def reading_dict(reading: Reading | None) -> dict[str, Any]:
    """The reading as plain JSON; ``verdict`` is "not enough data" whenever there is no number."""
    if reading is None:
        return {"covariate": COVARIATE, "verdict": NOT_ENOUGH_DATA, "reason": "no_mart"}
    r = reading.result
    out: dict[str, Any] = {
        "covariate": COVARIATE,
        "pre_period_before": reading.pre_period_before.isoformat()
        if reading.pre_period_before
        else None,
        "waves": "all",
        "source": "mart_history",
        "min_rows_per_cell": cuped.MIN_N,
        "target": reading.target,
        "control": reading.control,
        "covered": reading.covered,
        "reason": reading.reason,
    }
    if r is None:
        return out | {"verdict": NOT_ENOUGH_DATA}
    return out | {
        "theta": r.theta,
        "plain": {"absolute": r.plain, "se": r.plain_se, "ci95": _pair(r.plain_ci95)},
        "adjusted": {
            "absolute": r.adjusted,
            "se": r.adjusted_se,
            "ci95": _pair(r.adjusted_ci95),
            "p_value": r.p_value,
        },
        "variance_reduction": r.variance_reduction,
        "significant": r.p_value < rules.ALPHA,
        "verdict": "significant" if r.p_value < rules.ALPHA else "not significant",
    }
