"""The rollout gate: the response window must close and the sequential test must show an effect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perkflow.insights.stats import gate, sequential, simulate

DONE = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _decide(x_t: int, n_t: int, x_c: int, n_c: int, *, days_after: float) -> gate.Decision:
    return gate.decide(
        x_t=x_t,
        n_t=n_t,
        x_c=x_c,
        n_c=n_c,
        finished_at=DONE,
        window_days=7,
        now=DONE + timedelta(days=days_after),
    )


def test_the_gate_waits_for_the_response_window() -> None:
    open_ = _decide(600, 2000, 200, 2000, days_after=3)
    assert not open_.allowed and "response window" in open_.reason
    assert gate.decide(
        x_t=1, n_t=2, x_c=0, n_c=2, finished_at=None, window_days=7, now=DONE
    ).reason.startswith("the test wave has not finished")


def test_the_gate_reads_the_sequential_test_not_the_fixed_horizon_one() -> None:
    # p ≈ 0.03 at a fixed horizon: enough for a peeker, not for the always-valid test.
    weak = _decide(230, 2000, 195, 2000, days_after=8)
    assert not weak.allowed and "sequential test" in weak.reason and weak.p_value is not None
    assert weak.p_value > 0.05
    strong = _decide(300, 2000, 200, 2000, days_after=8)
    assert strong.allowed and strong.p_value is not None and strong.p_value < 0.05
    assert strong.cs is not None and strong.cs[0] > 0
    look = sequential.look(300, 2000, 200, 2000, tau=strong.tau)
    assert look is not None and look.p_value == strong.p_value


def test_the_gate_refuses_on_too_little_data() -> None:
    tiny = _decide(2, 2, 0, 2, days_after=8)
    assert not tiny.allowed and "not enough data" in tiny.reason


def test_ten_looks_at_the_gate_keep_false_rollouts_under_five_percent() -> None:
    # The old gate (roll out at the first fixed-horizon p < 0.05 over 10 looks) against this one.
    old = simulate.peeking_fpr(0.05, 2000, reps=3000, sequential_gate=False)
    new = simulate.peeking_fpr(0.05, 2000, reps=3000)
    assert old.value > 0.10
    assert new.value <= 0.05 + 2 * new.mc_error
