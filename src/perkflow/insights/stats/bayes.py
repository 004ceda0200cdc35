"""A Bayesian reading beside the frequentist one: how likely the variant is better, at what risk.

Each cell's rate has a Beta(1 + x, 1 + n − x) posterior (a uniform prior, binomial responses).
From ``DRAWS`` paired draws of a generator seeded with ``SEED`` (so a report reads the same every
time):

* the **probability the target beats the control**, ``P(p_t > p_c)``;
* the **expected loss** of choosing the target, ``E[max(p_c − p_t, 0)]``: the response rate given
  up, on average, if the target is in fact worse.

Monte Carlo error is about ``0.5/sqrt(DRAWS)`` ≈ 0.001 on the probability. It is a summary, not a
decision rule: the badge and the rollout gate read the frequentist and sequential tests.
Assumptions: as for the tests (random assignment, independent subscribers).
"""

from __future__ import annotations

from dataclasses import dataclass

DRAWS = 200_000
SEED = 20_140_614


@dataclass(frozen=True, slots=True)
class Posterior:
    """The probability the target is better and the expected loss of choosing it."""

    prob_better: float
    expected_loss: float


def compare(x_t: int, n_t: int, x_c: int, n_c: int, *, draws: int = DRAWS) -> Posterior | None:
    """The Beta-Binomial summary of a target against its control; None if a cell is empty."""
    if n_t <= 0 or n_c <= 0:
        return None
    import numpy as np

    rng = np.random.default_rng(SEED)
    t = rng.beta(1 + x_t, 1 + n_t - x_t, draws)
    c = rng.beta(1 + x_c, 1 + n_c - x_c, draws)
    return Posterior(
        prob_better=float(np.mean(t > c)), expected_loss=float(np.mean(np.maximum(c - t, 0.0)))
    )
