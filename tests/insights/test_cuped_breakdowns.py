"""CUPED and the breakdowns through the service (SQLite and PostgreSQL) and GET /v1 evaluation.

The expected figures are computed here from the subscribers' own rows with numpy, not from the
engine's sums.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.insights import service as insights
from perkflow.insights.stats import multiplicity
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.factories import make_api_key
from tests.insights import mart_campaign


def _expected_cuped(b: mart_campaign.Built) -> tuple[float, float, float, float]:
    """(theta, adjusted, its se, variance reduction) from the rows, by least squares."""
    covered = [x for x in b.bill if x is not None]
    fill = float(np.mean(covered))
    x = np.array([fill if v is None else v for v in b.bill])
    y = np.array(b.responded, dtype=float)
    arm = np.array([c == "target" for c in b.cell], dtype=float)
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(x)), arm, x]), y, rcond=None)
    theta = beta[2]
    t, c = arm == 1, arm == 0
    adj = y - theta * x
    se = math.sqrt(adj[t].var(ddof=1) / t.sum() + adj[c].var(ddof=1) / c.sum())
    plain = math.sqrt(y[t].var(ddof=1) / t.sum() + y[c].var(ddof=1) / c.sum())
    return theta, beta[1], se, 1 - se**2 / plain**2


def test_cuped_and_breakdowns_in_the_report(session: Session, tmp_path: Path) -> None:
    b = mart_campaign.build(session, tmp_path / "mart")
    report = insights.report_dict(
        insights.evaluate(session, actor=SYSTEM, campaign_id=b.campaign.id, mart=b.mart)
    )
    cuped = report["cuped"]
    assert cuped["reason"] is None and cuped["verdict"] in {"significant", "not significant"}
    assert (cuped["target"], cuped["control"]) == (600, 300)
    # 20 subscribers have no pre-period bill; the campaign month's (10,000 yuan) never counts.
    assert cuped["covered"] == 880 and cuped["pre_period_before"] == "2026-03-01"
    theta, adjusted, se, reduction = _expected_cuped(b)
    assert cuped["theta"] == pytest.approx(theta, rel=1e-6)
    assert cuped["adjusted"]["absolute"] == pytest.approx(adjusted, rel=1e-6)
    assert cuped["adjusted"]["se"] == pytest.approx(se, rel=1e-6)
    assert cuped["variance_reduction"] == pytest.approx(reduction, rel=1e-6)
    assert cuped["variance_reduction"] > 0.1  # the bill predicts the response here
    low, high = cuped["adjusted"]["ci95"]
    assert low < cuped["adjusted"]["absolute"] < high
    # The plain difference on the same rows is the headline's (nobody was dropped at send time).
    assert cuped["plain"]["absolute"] == pytest.approx(report["uplift"]["absolute"])
    assert high - low < cuped["plain"]["ci95"][1] - cuped["plain"]["ci95"][0]

    tables = {t["name"]: t for t in report["breakdowns"]["tables"]}
    assert list(tables) == ["plan_band", "activity"]
    assert report["breakdowns"]["adjustment"] == "benjamini-hochberg"
    bands = tables["plan_band"]["rows"]
    assert [r["group"] for r in bands] == ["lt59", "59to128", "ge129", "unknown"]

    def band(fee: int | None) -> str:
        if fee is None:
            return "unknown"
        return "lt59" if fee < 59 else ("59to128" if fee < 129 else "ge129")

    counted = Counter((band(f), c) for f, c in zip(b.fee, b.cell, strict=True))
    responded = Counter(
        (band(f), c) for f, c, y in zip(b.fee, b.cell, b.responded, strict=True) if y
    )
    for row in bands:
        for cell in ("target", "control"):
            assert row[cell]["contacts"] == counted[(row["group"], cell)]
            assert row[cell]["responses"] == responded[(row["group"], cell)]
    # The first ten subscribers (all targets) have no profile: no controls, not enough data.
    unknown = bands[-1]
    assert unknown["target"]["contacts"] == 10 and unknown["control"]["contacts"] == 0
    assert unknown["verdict"] == "not enough data" and unknown["uplift"]["p_value"] is None
    raw = [r["uplift"]["p_value"] for r in bands]
    assert [r["uplift"]["p_value_adjusted"] for r in bands] == pytest.approx(
        multiplicity.benjamini_hochberg(raw)
    )
    for row in bands[:-1]:
        assert row["uplift"]["badge_reads"] == "adjusted"
        assert row["significant"] == (row["uplift"]["p_value_adjusted"] < 0.05)
    assert [r["group"] for r in tables["activity"]["rows"]] == [
        "responsive",
        "active",
        "low_active",
        "silent",
        "unknown",
    ]


def test_not_enough_data_says_why_and_gives_no_number(session: Session, tmp_path: Path) -> None:
    b = mart_campaign.build(session, tmp_path / "mart", targets=80, controls=40)
    report = insights.report_dict(
        insights.evaluate(session, actor=SYSTEM, campaign_id=b.campaign.id, mart=b.mart)
    )
    assert report["cuped"]["verdict"] == "not enough data"
    assert report["cuped"]["reason"] == "tiny_cell"
    assert "adjusted" not in report["cuped"] and "variance_reduction" not in report["cuped"]

    # No usage in the mart: no pre-period to adjust by.
    (tmp_path / "mart" / "usage_monthly.parquet").unlink()
    again = insights.report_dict(
        insights.evaluate(session, actor=SYSTEM, campaign_id=b.campaign.id, mart=b.mart)
    )
    assert again["cuped"]["reason"] == "no_pre_period"

    # A mart whose history does not hold the campaign, and an evaluation without a mart.
    empty = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=b.campaign.id, mart=Mart(tmp_path / "other")
        )
    )
    assert empty["cuped"]["reason"] == "not_in_mart"
    assert empty["cuped"]["verdict"] == "not enough data" and "adjusted" not in empty["cuped"]
    assert empty["breakdowns"]["tables"] == [] and empty["breakdowns"]["reason"] == "not_in_mart"
    plain = insights.report_dict(
        insights.evaluate(session, actor=SYSTEM, campaign_id=b.campaign.id)
    )
    assert plain["cuped"]["reason"] == "no_mart" and plain["breakdowns"]["reason"] == "no_mart"


def test_the_api_gives_cuped_and_breakdowns(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    with web_sessions() as s:
        b = mart_campaign.build(s, settings.mart_dir)
        s.commit()
        key = make_api_key(s, scopes=["campaigns:read"])
    got = client.get(
        f"/v1/campaigns/{b.campaign.id}/evaluation", headers={"Authorization": f"Bearer {key}"}
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["cuped"]["reason"] is None
    assert 0 < body["cuped"]["variance_reduction"] < 1
    assert body["cuped"]["adjusted"]["ci95"][0] < body["cuped"]["adjusted"]["ci95"][1]
    names = [t["name"] for t in body["breakdowns"]["tables"]]
    assert names == ["plan_band", "activity"]
    row = body["breakdowns"]["tables"][0]["rows"][0]
    assert {"p_value", "p_value_adjusted", "adjustment"} <= set(row["uplift"])
