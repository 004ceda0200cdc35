"""The report's evidence: adjusted p-values and the badge, not enough data, sequential, plan."""

from __future__ import annotations

import json

import pytest
from statsmodels.stats.multitest import multipletests

from perkflow.insights import rules
from perkflow.insights import service as insights
from perkflow.insights.rules import Arm, Timeline
from perkflow.insights.service import Evaluation, Group


def _group(key: str, target: Arm, control: Arm) -> Group:
    return Group(
        key=key,
        comparison=rules.compare(target, control),
        cost_fen=None,
        cost_per_incremental_fen=None,
    )


def _evaluation(
    variants: list[Group], provinces: list[Group], overall: Arm, control: Arm
) -> Evaluation:
    return Evaluation(
        campaign_id=1,
        name="t",
        wave=None,
        overall=rules.compare(overall, control),
        cost_fen=None,
        cost_per_incremental_fen=None,
        variants=variants,
        provinces=provinces,
        timeline=Timeline(days=[], rates={"target": [], "control": []}, responders={}),
        zone="Asia/Shanghai",
    )


def test_variants_are_holm_adjusted_and_the_badge_reads_the_adjusted_p() -> None:
    control = Arm(2000, 200)
    # Raw p ≈ 0.03 for A: "significant" alone, not after Holm over five variants.
    arms = [Arm(2000, 245), Arm(2000, 205), Arm(2000, 195), Arm(2000, 210), Arm(2000, 190)]
    variants = [_group(k, a, control) for k, a in zip("ABCDE", arms, strict=True)]
    report = insights.report_dict(_evaluation(variants, [], Arm(10_000, 1045), Arm(2000, 200)))
    raw = [v["uplift"]["p_value"] for v in report["variants"]]
    assert raw[0] < 0.05 and variants[0].comparison.significant
    expected = multipletests(raw, method="holm")[1]
    for v, adj in zip(report["variants"], expected, strict=True):
        assert v["uplift"]["p_value_adjusted"] == pytest.approx(adj)
        assert v["uplift"]["adjustment"] == "holm" and v["uplift"]["badge_reads"] == "adjusted"
        assert v["significant"] == (adj < 0.05)
    assert report["variants"][0]["verdict"] == "not significant"
    assert report["methods"]["badge_reads"] == "adjusted"


def test_provinces_are_bh_adjusted() -> None:
    provinces = [_group(f"P{i}", Arm(300, 30 + (i % 5) * 4), Arm(300, 30)) for i in range(31)]
    report = insights.report_dict(_evaluation([], provinces, Arm(9300, 1200), Arm(9300, 930)))
    raw = [p["uplift"]["p_value"] for p in report["provinces"]]
    expected = multipletests(raw, method="fdr_bh")[1]
    for p, adj in zip(report["provinces"], expected, strict=True):
        assert p["uplift"]["p_value_adjusted"] == pytest.approx(adj)
        assert p["uplift"]["adjustment"] == "benjamini-hochberg"
        assert p["significant"] == (adj < 0.05)


def test_tiny_and_empty_cells_say_not_enough_data_and_stay_in_range() -> None:
    variants = [_group("A", Arm(2, 2), Arm(2, 0)), _group("B", Arm(0, 0), Arm(2, 0))]
    report = insights.report_dict(_evaluation(variants, [], Arm(2, 2), Arm(2, 0)))
    assert report["verdict"] == "not enough data" and not report["significant"]
    assert report["uplift"]["not_enough_data"] == "tiny_cell"
    assert report["sequential"]["verdict"] == "not enough data"
    a, b = report["variants"]
    assert a["verdict"] == b["verdict"] == "not enough data"
    assert a["uplift"]["p_value"] is None and a["uplift"]["p_value_adjusted"] is None
    low, high = a["uplift"]["ci95"]
    assert -1 <= low < high <= 1
    assert b["uplift"]["ci95"] is None and b["uplift"]["not_enough_data"] == "empty_cell"
    assert "NaN" not in json.dumps(report)


def test_sequential_plan_bayes_and_revenue_are_reported() -> None:
    target = Arm(20_000, 2_400, 5_000_000, spenders=400, revenue_sq_fen2=400 * 15_000**2)
    control = Arm(20_000, 2_000, 4_000_000, spenders=320, revenue_sq_fen2=320 * 15_000**2)
    report = insights.report_dict(_evaluation([], [], target, control))
    seq = report["sequential"]
    assert seq["rejects"] and seq["p_value"] < 0.05 and seq["verdict"] == "effect shown"
    assert seq["cs"][0] > 0
    assert seq["p_value"] > report["uplift"]["p_value"]  # always-valid costs some power
    plan = report["plan"]
    assert plan["base_rate_source"] == "default" and plan["control_needed"] > 0
    assert 0 < plan["progress"] <= 1 and plan["mde"] > 0
    assert report["uplift"]["bayes"]["prob_better"] > 0.99
    inc = report["incremental"]
    assert inc["revenue_interval"] == "welch"
    low, high = inc["revenue_ci95"]
    assert low < inc["revenue_fen"] < high
    # Totals only (no spend detail), or too few spenders: no interval, and why.
    bare = insights.report_dict(_evaluation([], [], Arm(100, 30, 9_000), Arm(100, 20, 6_000)))
    assert bare["incremental"]["revenue_ci95"] is None
    assert bare["incremental"]["revenue_interval"] == "no_spend_detail"
    few = Arm(1000, 30, 90_000, spenders=30, revenue_sq_fen2=30 * 3_000**2)
    small = insights.report_dict(_evaluation([], [], few, few))
    assert small["incremental"]["revenue_interval"] == "few_spenders"
