"""Variants targeted by `match` are each compared with their own control rows.

The scenario of the docs' own split: plan fee ≥ 100 yuan gets variant A, everyone else B, and the
response rate rises with the plan fee whatever the message says. With zero true effect, comparing
A's targets with every control row (A's and B's) made A "significant" most of the time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.orm import Session

from perkflow.campaigns.models import Campaign, CampaignContact, CampaignWave
from perkflow.campaigns.rules import CellCount
from perkflow.insights import cells, rules
from perkflow.insights import service as insights
from perkflow.org.rules import SYSTEM

REPLICATIONS = 400
ALPHA = 0.05
# The badge's false-positive rate may exceed 5 % by Monte Carlo error only (three standard errors).
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPLICATIONS)


def _simulated_counts(rng: np.random.Generator, n: int = 1_500) -> list[CellCount]:
    """One campaign with no effect: cells and variants of n subscribers, responses by plan fee."""
    fee = rng.choice([39, 59, 99, 129, 199], size=n, p=[0.25, 0.25, 0.2, 0.2, 0.1])
    variant = np.where(fee >= 100, "A", "B")
    rate = 0.02 + fee / 1_000  # 6 % on 39 yuan, 22 % on 199 yuan
    control = rng.random(n) < 0.10  # split within each variant's assignment, as the ledger does
    responded = rng.random(n) < rate  # the message changes nothing
    out = []
    for key in ("A", "B"):
        for cell, mask in (("target", ~control), ("control", control)):
            m = mask & (variant == key)
            out.append(
                CellCount(
                    cell=cell,
                    variant=key,
                    province_code="GD",
                    contacts=int(m.sum()),
                    responders=int((m & responded).sum()),
                    revenue_fen=0,
                )
            )
    return out


def test_with_no_effect_each_variant_is_significant_at_most_five_percent_of_the_time() -> None:
    rng = np.random.default_rng(14)
    own = {"A": 0, "B": 0}
    shared = {"A": 0, "B": 0}
    for _ in range(REPLICATIONS):
        counts = _simulated_counts(rng)
        for s in cells.by_variant(counts):
            assert s.own_control and {r.variant for r in s.control} == {s.key}
            assert s.key is not None
            own[s.key] += rules.compare(cells.arm(s.target), cells.arm(s.control)).significant
        # The old selection (every control row for every variant), for contrast.
        target, control = cells.split(counts)
        for key in ("A", "B"):
            mine = [r for r in target if r.variant == key]
            shared[key] += rules.compare(cells.arm(mine), cells.arm(control)).significant
    rates = {k: v / REPLICATIONS for k, v in own.items()}
    assert rates["A"] <= BOUND and rates["B"] <= BOUND, rates
    # The scenario is sharp: against all controls both variants were flagged far too often.
    assert shared["A"] / REPLICATIONS > 0.3 and shared["B"] / REPLICATIONS > 0.1, shared
    # The overall figure, all targets against all controls, is fair as it stands: the mix.


def test_imported_controls_without_a_variant_are_shared_and_said_so() -> None:
    counts = [
        CellCount("target", "A", None, 100, 10, 0),
        CellCount("target", "B", None, 100, 12, 0),
        CellCount("control", None, None, 50, 5, 0),
    ]
    picked = cells.by_variant(counts)
    assert [(s.key, s.own_control) for s in picked] == [("A", False), ("B", False)]
    assert all(cells.arm(s.control).contacts == 50 for s in picked)


T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_the_service_compares_each_variant_with_its_own_controls(session: Session) -> None:
    campaign = Campaign(
        name="match split",
        kind="batch",
        status="finished",
        goal={"kind": "claim", "window_days": 7},
        offer={"kind": "none"},
        variants=[{"key": "A", "channel": "in_app"}, {"key": "B", "channel": "in_app"}],
        schedule={},
        throttle={},
        control_share_bp=1_000,
        salt="m",
        created_by="t",
        created_at=T0,
        updated_at=T0,
    )
    session.add(campaign)
    session.flush()
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind="batch",
        share_bp=10_000,
        status="done",
        created_by="t",
        created_at=T0,
    )
    session.add(wave)
    session.flush()
    sid = 0
    # A (big plans): 90 targets, 10 controls; B: 180 targets, 20 controls.
    for variant, cell, n in (("A", "target", 90), ("A", "control", 10), ("B", "target", 180),
                             ("B", "control", 20)):  # fmt: skip
        for _ in range(n):
            sid += 1
            session.add(
                CampaignContact(
                    campaign_id=campaign.id,
                    wave_id=wave.id,
                    subscriber_id=sid,
                    cell=cell,
                    variant=variant,
                    channel="in_app",
                    province_code="GD",
                    status="held" if cell == "control" else "delivered",
                    contacted_at=T0,
                )
            )
    session.flush()
    ev = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id)
    by_variant = {g.key: g for g in ev.variants}
    assert by_variant["A"].comparison.control.contacts == 10
    assert by_variant["B"].comparison.control.contacts == 20
    assert ev.variant_control == "own" and all(g.own_control for g in ev.variants)
    assert ev.overall.control.contacts == 30  # the overall figure is the mix
    report = insights.report_dict(ev)
    assert report["variant_control"] == "own" and report["estimand"] == "intent_to_treat"
    assert [v["own_control"] for v in report["variants"]] == [True, True]
    assert [v["control"]["contacts"] for v in report["variants"]] == [10, 20]
    # 270 targets and 30 controls fit a 10 % plan exactly.
    srm_report = report["sample_ratio"]
    assert srm_report["planned_control_share"] == 0.1 and not srm_report["mismatch"]
    assert srm_report["p_value"] == 1.0
    tot = report["treated_on_treated"]
    assert tot["cells"]["target"]["contacts"] == 270 and tot["cells"]["control"]["contacts"] == 30
    assert report["headline_wave"] is None and report["test_wave"] is None
