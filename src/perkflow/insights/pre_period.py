"""The CUPED reading of a campaign: its uplift sharpened by each subscriber's pre-period bill.

The covariate is the subscriber's **mean monthly bill** (``usage_monthly.bill_yuan``) over the
months before the month the campaign first contacted anyone: it is known for nearly every
subscriber, fixed before assignment (so the campaign cannot have moved it), and it tracks how
engaged a subscriber is. The outcome is whether the subscriber responded at all. Targets and
controls are read from the mart's history (``service.sync_history``), the headline's waves, as
intent to treat: every assigned row counts, a target dropped at send time too, exactly the rows
of the headline's cells. Each variant is compared with its own control rows (a control row
carries the variant it would have been sent, ``cells.by_variant``), one reading per variant; the
campaign's reading compares all targets with all controls, the mix of the variants. A history
whose control rows carry no variant compares every variant with the whole control
(``own_control`` False). The plain difference is shown on the same rows, so the variance
reduction compares like with like.

The arithmetic is ``stats.cuped``; the sums come from the engine (``mart_cells``). No number —
"not enough data" — when the campaign is not in the mart, no subscriber has a pre-period month,
a cell is under ``stats.cuped.MIN_N`` rows, or the counts are too small for a normal
approximation (the same rule as the z-test's: every expected count at least 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from perkflow.campaigns.rules import Cell
from perkflow.insights import mart_cells, presentation, rules
from perkflow.insights.stats import cuped, multiplicity, tests
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
    variant: str | None = None  # the variant read; None for the campaign as a whole
    own_control: bool = True  # False: the whole control shared (controls carry no variant)
    variants: tuple[Reading, ...] = ()  # the campaign's reading: one per variant
    waves: str = "all"  # the waves read: "all", or the headline's wave ("rollout", "test")


def _moments(s: dict[str, float]) -> cuped.Moments:
    return cuped.Moments(
        n=int(s["n"]), sx=s["sx"], sxx=s["sxx"], sy=s["sy"], syy=s["syy"], sxy=s["sxy"]
    )


Sums = dict[str, float]


def _add(parts: list[Sums]) -> Sums | None:
    """The sums of several cells together (every sum is additive), None when there are none."""
    if not parts:
        return None
    return {k: sum(p.get(k, 0.0) for p in parts) for k in parts[0]}


def _reading(t: Sums | None, c: Sums | None, before: date, **label: Any) -> Reading:
    """CUPED of one target cell against its control cell, or why there is no figure."""
    n_t, n_c = int(t["n"]) if t else 0, int(c["n"]) if c else 0
    covered = int((t or {}).get("covered", 0) + (c or {}).get("covered", 0))
    base = Reading(
        None, target=n_t, control=n_c, covered=covered, pre_period_before=before, **label
    )
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


def _order(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


def read(
    mart: Mart,
    *,
    campaign_id: int,
    wave_ids: Sequence[int] | None = None,
    waves: str = "all",
) -> Reading:
    """CUPED of a campaign's targets against its controls from the mart, and of each variant.

    ``wave_ids`` limits the reading to those waves (the headline's, labelled ``waves``).
    """
    first = mart_cells.first_contact(mart, campaign_id, wave_ids)
    if first is None:
        return Reading("not_in_mart", waves=waves)
    before = date(first.year, first.month, 1)
    sums = mart_cells.cuped_sums(mart, campaign_id, before=before, wave_ids=wave_ids)
    target = {v: s for (v, cell), s in sums.items() if cell == Cell.TARGET.value}
    control = {v: s for (v, cell), s in sums.items() if cell == Cell.CONTROL.value}
    labelled = any(v is not None for v in control)
    keys = sorted(set(target) | (set(control) if labelled else set()), key=_order)
    whole_control = _add(list(control.values()))
    variants = tuple(
        _reading(target.get(key), control.get(key), before, variant=key)
        if labelled
        else _reading(target.get(key), whole_control, before, variant=key, own_control=False)
        for key in keys
    )
    overall = _reading(_add(list(target.values())), whole_control, before)
    variants = tuple(replace(v, waves=waves) for v in variants)
    return replace(overall, variants=variants, waves=waves)


def _pair(ci: tuple[float, float]) -> list[float]:
    return [ci[0], ci[1]]


def reading_dict(reading: Reading | None) -> dict[str, Any]:
    """The reading as plain JSON; ``verdict`` is "not enough data" whenever there is no number.

    The campaign's figure (all targets against all controls, the mix of its variants) with one
    reading per variant in ``variants``, each against its own control rows.
    """
    if reading is None:
        return {
            "covariate": COVARIATE,
            "verdict": NOT_ENOUGH_DATA,
            "reason": "no_mart",
            "variants": [],
        }
    # The variants are one family, as the headline's (Holm); the badge reads the adjusted p.
    adjusted = multiplicity.holm([v.result.p_value if v.result else None for v in reading.variants])
    return _one_dict(reading) | {
        "itt": True,
        "variants_adjustment": presentation.HOLM,
        "variants": [
            _one_dict(v, p_adjusted=p)
            | {"variant": v.variant, "own_control": v.own_control, "badge_reads": "adjusted"}
            for v, p in zip(reading.variants, adjusted, strict=True)
        ],
    }


def _one_dict(reading: Reading, *, p_adjusted: float | None = None) -> dict[str, Any]:
    r = reading.result
    out: dict[str, Any] = {
        "covariate": COVARIATE,
        "pre_period_before": reading.pre_period_before.isoformat()
        if reading.pre_period_before
        else None,
        "waves": reading.waves,
        "source": "mart_history",
        "min_rows_per_cell": cuped.MIN_N,
        "target": reading.target,
        "control": reading.control,
        "covered": reading.covered,
        "reason": reading.reason,
    }
    if r is None:
        return out | {"verdict": NOT_ENOUGH_DATA}
    p = r.p_value if p_adjusted is None else p_adjusted
    return out | {
        "theta": r.theta,
        "plain": {"absolute": r.plain, "se": r.plain_se, "ci95": _pair(r.plain_ci95)},
        "adjusted": {
            "absolute": r.adjusted,
            "se": r.adjusted_se,
            "ci95": _pair(r.adjusted_ci95),
            "p_value": r.p_value,
            "p_value_adjusted": p,
        },
        "variance_reduction": r.variance_reduction,
        "significant": p < rules.ALPHA,
        "verdict": "significant" if p < rules.ALPHA else "not significant",
    }
