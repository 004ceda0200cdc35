"""Several comparisons read at once: adjusted p-values.

* **Holm** (step-down Bonferroni) for a campaign's variants: the chance of calling *any* variant
  significant when none works stays at most alpha (family-wise error), whatever the dependence
  between the comparisons (they share a control group). Sorted ascending, the i-th of m p-values
  becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``.
* **Benjamini–Hochberg** for breakdowns with many rows (provinces, segments): among the rows
  called significant, the expected share of false ones stays at most alpha (false discovery
  rate), for independent or positively dependent tests. Sorted ascending, the i-th becomes
  ``min_{j ≥ i} min(1, m / j · p_(j))``.

A comparison without a p-value (not enough data) is not counted in m and stays None. The report
shows the raw and the adjusted p-value and the badge reads the adjusted one. Same figures as
statsmodels ``multipletests(method="holm" | "fdr_bh")``.
"""

from __future__ import annotations

from collections.abc import Sequence


def _present(p_values: Sequence[float | None]) -> list[tuple[int, float]]:
    return sorted(((i, p) for i, p in enumerate(p_values) if p is not None), key=lambda t: t[1])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the order given; None stays None."""
    ranked = _present(p_values)
    m = len(ranked)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for j, (i, p) in enumerate(ranked):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg adjusted p-values (q-values) in the order given; None stays None."""
    ranked = _present(p_values)
    m = len(ranked)
    out: list[float | None] = [None] * len(p_values)
    running = 1.0
    for j in range(m - 1, -1, -1):
        i, p = ranked[j]
        running = min(running, m / (j + 1) * p)
        out[i] = min(1.0, running)
    return out
