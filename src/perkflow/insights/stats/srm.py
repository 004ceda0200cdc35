"""Sample-ratio mismatch: do the assigned target and control counts fit the planned share?

A campaign plans a control share (say 10 %). If the cells it ended up with are far from that
share, something between assignment and the report lost or added rows (a bug, a filter applied to
one cell only, a rerun), and no uplift read from those cells can be trusted. The check is the
chi-square goodness-of-fit test of the two counts against the planned split (one degree of
freedom); a mismatch is flagged at p < 0.001, the threshold commonly used for this check because
it runs on every report and must not raise false alarms often.
"""

from __future__ import annotations

from dataclasses import dataclass

SRM_ALPHA = 0.001
BASIS_POINTS = 10_000


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """The check's figures: counts, what the plan expected, the statistic and its p-value."""

    target: int
    control: int
    planned_control_share: float  # 0.10 for a 10 % control
    observed_control_share: float | None
    expected_control: float
    chi2: float | None
    p_value: float | None
    mismatch: bool  # p < SRM_ALPHA: the cells do not fit the plan


def check(target: int, control: int, *, control_share_bp: int) -> SampleRatio:
    """Chi-square of assigned target/control counts against the planned control share.

    Undefined (None, no mismatch) when nobody is assigned or the plan has no control (0 % or
    100 %), where any count fits or no count can.
    """
    if target < 0 or control < 0:
        raise ValueError("counts are not negative")
    if not 0 <= control_share_bp <= BASIS_POINTS:
        raise ValueError("the planned share is 0 to 10,000 basis points")
    share = control_share_bp / BASIS_POINTS
    n = target + control
    expected_control = n * share
    observed = control / n if n else None
    if n == 0 or share in (0.0, 1.0):
        return SampleRatio(target, control, share, observed, expected_control, None, None, False)
    expected_target = n - expected_control
    chi2 = (control - expected_control) ** 2 / expected_control + (
        target - expected_target
    ) ** 2 / expected_target
    from scipy.stats import chi2 as chi2_dist  # imported where used: scipy is slow to import

    p = float(chi2_dist.sf(chi2, df=1))
    return SampleRatio(target, control, share, observed, expected_control, chi2, p, p < SRM_ALPHA)
