"""The tests and intervals match scipy/statsmodels on the same counts; history files are checked."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import fisher_exact, norm
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from perkflow.campaigns.rules import Cell
from perkflow.insights import rules
from perkflow.insights.rules import Arm

GRID = [
    (x1, n1, x2, n2)
    for n1, n2 in [(1, 1), (2, 7), (40, 35), (500, 480), (21_307, 21_306), (1_000_000, 50_000)]
    for f1, f2 in itertools.product([0.0, 0.003, 0.1, 0.5, 0.97, 1.0], repeat=2)
    for x1, x2 in [(round(n1 * f1), round(n2 * f2))]
]


def _check(x1: int, n1: int, x2: int, n2: int) -> None:
    c = rules.compare(Arm(n1, x1), Arm(n2, x2))
    p1, p2 = x1 / n1, x2 / n2
    assert c.absolute == pytest.approx(p1 - p2, abs=1e-15)

    # The interval is Newcombe's hybrid score (it was Wald, which fails in small cells).
    low, upp = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
    assert c.ci95 is not None
    assert c.ci95 == pytest.approx((low, upp), rel=1e-9, abs=1e-12)
    assert -1 <= c.ci95[0] < c.ci95[1] <= 1

    pooled = (x1 + x2) / (n1 + n2)
    if min(n1, n2) < 10 or not 0 < pooled < 1:  # tiny cell, or nothing to test: it says so
        assert c.z is None and c.p_value is None and c.significant is False
        assert c.not_enough_data is not None and c.test is None
    elif min(n1, n2) * min(pooled, 1 - pooled) >= 5:  # large cells: the z-test
        z, p = proportions_ztest([x1, x2], [n1, n2])
        assert c.test == "z"
        assert c.z == pytest.approx(z, rel=1e-9, abs=1e-12)
        assert c.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert c.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9, abs=1e-300)
        assert c.significant == (p < 0.05)
    else:  # small expected counts: Fisher's exact test
        p = fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue
        assert c.test == "fisher" and c.z is None
        assert c.p_value == pytest.approx(min(1.0, p), rel=1e-9, abs=1e-300)
        assert c.significant == (p < 0.05)

    if x1 > 0 and x2 > 0:
        rlow, rupp = confint_proportions_2indep(x1, n1, x2, n2, method="log", compare="ratio")
        assert c.relative == pytest.approx(p1 / p2 - 1, rel=1e-12)
        assert c.relative_ci95 == pytest.approx((rlow - 1, rupp - 1), rel=1e-9, abs=1e-12)
    else:
        assert c.relative_ci95 is None
        if x2 == 0:
            assert c.relative is None

    assert c.incremental_responses == pytest.approx((p1 - p2) * n1)
    assert c.incremental_ci95 == pytest.approx((low * n1, upp * n1), rel=1e-9, abs=1e-9)
    for value in (c.absolute, c.relative, c.z, c.p_value, c.incremental_responses):
        assert value is None or math.isfinite(value)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), GRID)
def test_z_test_and_intervals_match_statsmodels_on_a_grid(
    x1: int, n1: int, x2: int, n2: int
) -> None:
    _check(x1, n1, x2, n2)


@settings(max_examples=300, deadline=None)
@given(
    n1=st.integers(1, 2_000_000),
    n2=st.integers(1, 2_000_000),
    f1=st.floats(0, 1),
    f2=st.floats(0, 1),
)
def test_z_test_and_intervals_match_statsmodels_on_random_counts(
    n1: int, n2: int, f1: float, f2: float
) -> None:
    _check(math.floor(n1 * f1), n1, math.floor(n2 * f2), n2)


def test_empty_cells_give_none_not_nan() -> None:
    for target, control in [
        (Arm(0, 0), Arm(0, 0)),
        (Arm(0, 0), Arm(100, 10)),
        (Arm(100, 10), Arm(0, 0)),
        (Arm(100, 0), Arm(100, 0)),
        (Arm(100, 100), Arm(100, 100)),
    ]:
        c = rules.compare(target, control)
        assert c.significant is False
        assert c.p_value is None
        text = json.dumps(
            [c.absolute, c.ci95, c.relative, c.relative_ci95, c.z, c.incremental_responses]
        )
        assert "NaN" not in text and "Infinity" not in text
    assert rules.compare(Arm(0, 0), Arm(100, 10)).absolute is None
    assert rules.compare(Arm(100, 10), Arm(100, 0)).relative is None


def test_small_and_degenerate_cells_never_mislead() -> None:
    # 2/2 against 0/2 was "significant" (z = 2, p = 0.046): now it is not enough data.
    tiny = rules.compare(Arm(2, 2), Arm(2, 0))
    assert not tiny.significant and tiny.p_value is None
    assert tiny.not_enough_data == "tiny_cell"
    # 0/n against 0/n had a zero-width interval: the score interval keeps a width.
    none = rules.compare(Arm(100, 0), Arm(100, 0))
    assert none.ci95 is not None and none.ci95[1] - none.ci95[0] > 0.05
    assert none.not_enough_data == "no_variation"
    # A Wald interval went past ±100 points at 10/10 against 1/10; this one never does.
    for x1, n1, x2, n2 in [(10, 10, 1, 10), (0, 10, 10, 10), (30, 30, 0, 30), (1, 1, 0, 1)]:
        ci = rules.compare(Arm(n1, x1), Arm(n2, x2)).ci95
        assert ci is not None and -1 <= ci[0] < ci[1] <= 1
    # Small expected counts are tested exactly: 4/40 against 0/40 is Fisher's p = 0.116.
    small = rules.compare(Arm(40, 4), Arm(40, 0))
    assert small.test == "fisher" and not small.significant
    assert small.p_value == pytest.approx(fisher_exact([[4, 36], [0, 40]]).pvalue)


def test_incremental_revenue_and_cost_per_incremental_response() -> None:
    c = rules.compare(Arm(10_000, 1_500, 300_000), Arm(5_000, 500, 50_000))
    assert c.significant
    assert c.incremental_responses == pytest.approx(500)
    # 300,000 fen against 10 fen per control contact × 10,000 target contacts.
    assert c.incremental_revenue_fen == 200_000
    cost = rules.campaign_cost_fen(offer_cost_fen=500, offers_issued=1_500, sends={"sms": 10_000})
    assert cost == 500 * 1_500 + 5 * 10_000
    assert rules.cost_per_incremental_fen(cost, c) == round(cost / 500)
    # Unknown costs and a noisy uplift give no number at all.
    assert rules.campaign_cost_fen(offer_cost_fen=None, offers_issued=1, sends={}) is None
    assert rules.campaign_cost_fen(offer_cost_fen=0, offers_issued=1, sends={"fax": 1}) is None
    noisy = rules.compare(Arm(100, 11), Arm(100, 10))
    assert not noisy.significant
    assert rules.cost_per_incremental_fen(1_000, noisy) is None
    negative = rules.compare(Arm(10_000, 500), Arm(10_000, 1_000))
    assert negative.significant and rules.cost_per_incremental_fen(1_000, negative) is None


def test_time_slots_in_the_operator_zone() -> None:
    zone = "Asia/Shanghai"
    at = [datetime(2026, 3, 1, h, 30, tzinfo=UTC) for h in (0, 5, 11, 16, 22)]
    # UTC+8: 08:30, 13:30, 19:30, 00:30, 06:30
    assert [rules.time_slot(t, zone) for t in at] == [
        "morning",
        "afternoon",
        "evening",
        "night",
        "morning",
    ]


def test_cumulative_timeline_fills_days_and_divides_by_cell_size() -> None:
    firsts = [
        ("target", datetime(2026, 3, 1, 2, tzinfo=UTC)),
        ("target", datetime(2026, 3, 3, 2, tzinfo=UTC)),
        ("control", datetime(2026, 3, 1, 20, tzinfo=UTC)),  # 2 March in Shanghai
    ]
    t = rules.cumulative_timeline(firsts, {"target": 4, "control": 2}, zone="Asia/Shanghai")
    assert t.days == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert t.responders == {"target": [1, 1, 2], "control": [0, 1, 1]}
    assert t.rates == {"target": [0.25, 0.25, 0.5], "control": [0.0, 0.5, 0.5]}


# ---- history files ---------------------------------------------------------------------------

HEADER = "subscriber_id,cell,variant,contacted_at,responded,revenue"


def test_history_rows_parse_with_zones_and_money() -> None:
    lines = [
        HEADER,
        "1,target,A,2026-03-01T10:00:00+08:00,1,12.5",
        "2,control,,2026-03-01 10:00,0,",
        "3,TARGET,B,2026-03-01T02:00:00Z,true,",
        "",
        "4,control,A,2026-03-01,false,",
    ]
    rows, problems = rules.parse_history(lines, zone="Asia/Shanghai")
    assert problems == []
    assert [r.subscriber_id for r in rows] == [1, 2, 3, 4]
    assert rows[0].revenue_fen == 1250 and rows[0].responded and rows[0].cell == Cell.TARGET
    assert rows[1].variant is None and rows[1].revenue_fen is None
    # Naive times are the operator's: 10:00 in Shanghai is 02:00 UTC.
    assert rows[1].contacted_at == datetime(2026, 3, 1, 2, tzinfo=UTC)
    assert rows[2].contacted_at == datetime(2026, 3, 1, 2, tzinfo=UTC) and rows[2].responded
    assert rows[3].contacted_at == datetime(2026, 2, 28, 16, tzinfo=UTC)


def test_every_bad_line_is_reported_with_its_number() -> None:
    lines = [
        HEADER,
        "1,target,A,2026-03-01T10:00:00+08:00,1,12.5",
        "x,target,A,2026-03-01T10:00:00+08:00,1,",  # line 3: id
        "2,treatment,A,2026-03-01T10:00:00+08:00,1,",  # line 4: cell
        "3,target,A,yesterday,1,",  # line 5: time
        "4,target,A,2026-03-01,maybe,",  # line 6: responded
        "5,target,A,2026-03-01,1,12.345",  # line 7: too many decimals
        "1,control,,2026-03-01,0,",  # line 8: duplicate of line 2
        "6,control,,2026-03-01,0,3",  # line 9: revenue without a response
        "7,target",  # line 10: short
        "8,control,,2026-03-01,0,-1",  # line 11: negative
    ]
    rows, problems = rules.parse_history(lines, zone="Asia/Shanghai")
    assert rows == []
    assert [p.path for p in problems] == [
        "line 3 [subscriber_id]",
        "line 4 [cell]",
        "line 5 [contacted_at]",
        "line 6 [responded]",
        "line 7 [revenue]",
        "line 8 [subscriber_id]",
        "line 9 [revenue]",
        "line 10 [file]",
        "line 11 [revenue]",
    ]
    assert "line 2" in problems[5].message
    text = rules.summarize_problems(problems, limit=3)
    assert text.startswith("line 3 [subscriber_id]") and "and 6 more" in text


def test_a_header_without_the_columns_is_one_problem() -> None:
    rows, problems = rules.parse_history(["id,cell\n", "1,target\n"], zone="Asia/Shanghai")
    assert rows == [] and len(problems) == 1 and problems[0].path == "line 1 [header]"
    assert "subscriber_id" in problems[0].message
    assert rules.parse_history([], zone="UTC")[1][0].message == "the file is empty"
    assert rules.parse_history([HEADER], zone="UTC")[1][0].message == "the file has no rows"
