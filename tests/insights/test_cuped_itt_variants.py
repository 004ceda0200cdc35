"""CUPED and the breakdowns read intent to treat and per variant, each against its own controls.

A target dropped at send time is in the mart's history and counts in its cell, as in the
headline; a campaign whose variants are chosen by ``match`` gets one CUPED figure and one set of
breakdown rows per variant, each against the control rows that would have got that variant. The
expected figures are computed here from the subscribers' own rows with numpy.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session

from perkflow.audience import marts
from perkflow.campaigns.models import Campaign, CampaignContact, CampaignResponse, CampaignWave
from perkflow.insights import mart_cells, pre_period
from perkflow.insights import service as insights
from perkflow.insights.stats import cuped, multiplicity
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
PRE_MONTHS = (date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1))
LEVELS = ("responsive", "active", "low_active", "silent")


@dataclass(frozen=True)
class Sub:
    """One subscriber of a built campaign and what they got."""

    cell: str
    variant: str | None
    bill: float
    fee: int
    responded: bool
    status: str = ""  # "" → delivered (target) or held (control)
    reason: str | None = None


def _status(s: Sub) -> str:
    return s.status or ("held" if s.cell == "control" else "delivered")


def _write_mart_inputs(mart: Mart, subs: list[Sub]) -> None:
    """Pre-period bills and a profile for every subscriber (ids 1..n)."""
    ids, months, bills = [], [], []
    for i, s in enumerate(subs, start=1):
        for k, month in enumerate(PRE_MONTHS):
            ids.append(i)
            months.append(month)
            bills.append(s.bill + (k - 1) * 2.0)
    mart.write(
        "usage_monthly",
        pa.table(
            {
                "subscriber_id": pa.array(ids, pa.int64()),
                "month": pa.array(months, pa.date32()),
                "data_mb": pa.array([1.0] * len(ids), pa.float32()),
                "voice_min": pa.array([1.0] * len(ids), pa.float32()),
                "bill_yuan": pa.array(bills, pa.float64()),
            }
        ),
    )
    mart.write(
        marts.PROFILE,
        pa.table(
            {
                "subscriber_id": pa.array(range(1, len(subs) + 1), pa.int64()),
                "province_code": pa.array(["GD"] * len(subs)).dictionary_encode(),
                "plan_fee_yuan": pa.array([s.fee for s in subs], pa.int32()),
                "activity_level": pa.array(
                    [LEVELS[i % len(LEVELS)] for i in range(len(subs))]
                ).dictionary_encode(),
            }
        ),
    )


def _ledger(
    session: Session, mart_root: Path, subs: list[Sub], variants: list[str], *, tested: int = 0
) -> Campaign:
    """A finished campaign with these subscribers in the ledger, synced to the mart.

    The first ``tested`` subscribers are in a test wave, the rest in the rollout wave.
    """
    now = datetime(2026, 3, 1, tzinfo=UTC)
    campaign = Campaign(
        name="Two variants by plan fee",
        kind="batch",
        status="finished",
        goal={"kind": "claim", "window_days": 14},
        offer={"kind": "none"},
        variants=[{"key": v, "channel": "sms"} for v in variants],
        schedule={},
        throttle={},
        control_share_bp=3_333,
        salt="s",
        created_by="test",
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind="rollout",
        share_bp=10_000,
        status="done",
        created_by="test",
        created_at=T0,
    )
    session.add(wave)
    test_wave = CampaignWave(
        campaign_id=campaign.id,
        kind="test",
        share_bp=2_000,
        status="done",
        created_by="test",
        created_at=T0,
    )
    if tested:
        session.add(test_wave)
    session.flush()
    contacts = [
        CampaignContact(
            campaign_id=campaign.id,
            wave_id=test_wave.id if i <= tested else wave.id,
            subscriber_id=i,
            cell=s.cell,
            variant=s.variant,
            channel="sms",
            province_code="GD",
            status=_status(s),
            reason=s.reason,
            contacted_at=T0,
        )
        for i, s in enumerate(subs, start=1)
    ]
    session.add_all(contacts)
    session.flush()
    session.add_all(
        CampaignResponse(
            campaign_id=campaign.id,
            contact_id=c.id,
            subscriber_id=c.subscriber_id,
            cell=s.cell,
            variant=s.variant,
            kind="claim",
            value_fen=0,
            responded_at=T0 + timedelta(days=1),
            source="ledger",
            idempotency_key=f"k:{campaign.id}:{c.subscriber_id}",
        )
        for c, s in zip(contacts, subs, strict=True)
        if s.responded
    )
    session.flush()
    mart = Mart(mart_root)
    _write_mart_inputs(mart, subs)
    insights.sync_history(session, actor=SYSTEM, mart=mart)
    return campaign


def _expected(subs: list[Sub]) -> tuple[float, float]:
    """(adjusted uplift, its se) of these rows by least squares, as CUPED computes them."""
    x = np.array([s.bill for s in subs])
    y = np.array([float(s.responded) for s in subs])
    arm = np.array([s.cell == "target" for s in subs], dtype=float)
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(x)), arm, x]), y, rcond=None)
    adj = y - beta[2] * x
    t, c = arm == 1, arm == 0
    return beta[1], math.sqrt(adj[t].var(ddof=1) / t.sum() + adj[c].var(ddof=1) / c.sum())


def _one_variant(seed: int = 3) -> list[Sub]:
    rng = np.random.default_rng(seed)
    subs = []
    for i in range(600):
        bill = float(rng.lognormal(4.3, 0.5))
        p = 1 / (1 + math.exp(-(-2.2 + 1.6 * (math.log(bill) - 4.3) / 0.5)))
        cell = "target" if i < 400 else "control"
        subs.append(Sub(cell, "A", bill, 99, bool(rng.random() < p + (0.05 if i < 400 else 0))))
    return subs


def test_a_target_suppressed_at_send_time_counts_in_cuped(session: Session, tmp_path: Path) -> None:
    subs = _one_variant()
    # 40 targets dropped at send time (an opt-out since the list was built) who all responded:
    # assigned, so they stay in the target cell (intent to treat).
    subs = [
        Sub(s.cell, s.variant, s.bill, s.fee, True, status="suppressed", reason="opted_out")
        if i < 40
        else s
        for i, s in enumerate(subs)
    ]
    # A row no variant matched was never in the experiment: the headline and CUPED leave it out.
    stray = [Sub("target", None, 80.0, 99, True, status="suppressed", reason="no_variant")]
    campaign = _ledger(session, tmp_path / "mart", subs + stray, ["A"])
    report = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=Mart(tmp_path / "mart")
        )
    )
    cu = report["cuped"]
    assert (cu["target"], cu["control"]) == (400, 200)
    assert cu["itt"] is True and cu["reason"] is None
    # The same rows as the headline's cells: the plain difference is the headline's.
    assert cu["plain"]["absolute"] == pytest.approx(report["uplift"]["absolute"])
    adjusted, se = _expected(subs)
    assert cu["adjusted"]["absolute"] == pytest.approx(adjusted, rel=1e-6)
    assert cu["adjusted"]["se"] == pytest.approx(se, rel=1e-6)
    # Leaving the dropped targets out would read another figure.
    per_protocol, _ = _expected(subs[40:])
    assert abs(cu["adjusted"]["absolute"] - per_protocol) > 0.01
    (only,) = cu["variants"]
    assert only["variant"] == "A" and only["own_control"] is True
    assert only["adjusted"]["absolute"] == pytest.approx(adjusted, rel=1e-6)
    # The history keeps what became of each row, so treated-on-treated can be told apart.
    rows = mart_cells._contacts(Mart(tmp_path / "mart")).to_pyarrow().to_pylist()
    assert Counter((r["status"], r["reason"]) for r in rows) == {
        ("suppressed", "opted_out"): 40,
        ("delivered", None): 360,
        ("held", None): 200,
    }


def _by_plan_fee(seed: int, n: int = 1_800) -> list[Sub]:
    """Variant A for a plan fee of 100 yuan or more (``match``), B below; no true effect.

    A's subscribers respond far more often whatever they are sent: a variant compared with the
    whole control would look significant. A third of each variant's subscribers are controls.
    """
    rng = np.random.default_rng(seed)
    subs = []
    for i in range(n):
        fee = (39, 59, 99, 129, 199)[int(rng.integers(5))]
        bill = float(fee * rng.lognormal(0.0, 0.3))
        p = (0.30 if fee >= 100 else 0.08) * min(bill / fee, 2.0)
        subs.append(
            Sub(
                "control" if i % 3 == 0 else "target",
                "A" if fee >= 100 else "B",
                bill,
                fee,
                bool(rng.random() < p),
            )
        )
    return subs


def test_two_variants_by_match_each_against_its_own_controls(
    session: Session, tmp_path: Path
) -> None:
    subs = _by_plan_fee(11)
    campaign = _ledger(session, tmp_path / "mart", subs, ["A", "B"])
    report = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=Mart(tmp_path / "mart")
        )
    )
    variants = {v["variant"]: v for v in report["cuped"]["variants"]}
    assert list(variants) == ["A", "B"]
    headline = {v["variant"]: v for v in report["variants"]}
    for key, v in variants.items():
        mine = [s for s in subs if s.variant == key]
        assert v["own_control"] is True and v["reason"] is None
        assert v["target"] == sum(s.cell == "target" for s in mine)
        assert v["control"] == sum(s.cell == "control" for s in mine)
        adjusted, se = _expected(mine)
        assert v["adjusted"]["absolute"] == pytest.approx(adjusted, rel=1e-6)
        assert v["adjusted"]["se"] == pytest.approx(se, rel=1e-6)
        # No true effect: the variant's own comparison finds none.
        assert abs(v["adjusted"]["absolute"]) < 3 * v["adjusted"]["se"]
        # The plain difference on the same rows is the headline variant row's.
        assert v["plain"]["absolute"] == pytest.approx(headline[key]["uplift"]["absolute"])
    assert report["cuped"]["variants_adjustment"] == "holm"
    raw = [variants[k]["adjusted"]["p_value"] for k in ("A", "B")]
    assert [variants[k]["adjusted"]["p_value_adjusted"] for k in ("A", "B")] == pytest.approx(
        multiplicity.holm(raw)
    )


def _mart_only(root: Path, subs: list[Sub], key: str) -> Mart:
    """The campaign's history written straight to the mart (no ledger), for quick repetitions."""
    mart = Mart(root)
    _write_mart_inputs(mart, subs)
    marts.append_contacts(
        mart,
        marts.rows_table(
            [
                {
                    "subscriber_id": i,
                    "campaign_id": key,
                    "channel": "sms",
                    "cell": s.cell,
                    "contacted_at": T0,
                    "variant": s.variant,
                    "wave_id": 1,
                    "status": _status(s),
                }
                for i, s in enumerate(subs, start=1)
            ],
            marts.CONTACT_HISTORY_SCHEMA,
        ),
    )
    marts.append_responses(
        mart,
        marts.rows_table(
            [
                {
                    "subscriber_id": i,
                    "campaign_id": key,
                    "channel": "sms",
                    "kind": "claim",
                    "responded_at": T0 + timedelta(days=1),
                    "value_fen": 0,
                }
                for i, s in enumerate(subs, start=1)
                if s.responded
            ],
            marts.RESPONSE_HISTORY_SCHEMA,
        ),
    )
    return mart


def test_per_variant_cuped_is_not_biased_by_a_plan_fee_split(tmp_path: Path) -> None:
    """Seeded: with no true effect, each variant's CUPED figure centres on zero and rarely rejects;
    the plain comparison of A's targets with the whole control would reject nearly always."""
    seeds = range(16)
    estimates: dict[str, list[float]] = {"A": [], "B": []}
    rejected = Counter[str]()
    confounded = 0
    for seed in seeds:
        mart = _mart_only(tmp_path / f"m{seed}", _by_plan_fee(100 + seed, n=1_200), "c1")
        reading = pre_period.read(mart, campaign_id=1)
        for v in reading.variants:
            assert v.own_control and v.result is not None, v
            estimates[str(v.variant)].append(v.result.adjusted)
            rejected[str(v.variant)] += v.result.p_value < 0.05
        sums = mart_cells.cuped_sums(mart, 1, before=date(2026, 3, 1))
        whole = {
            k: sum(sums[(v, "control")][k] for v in ("A", "B")) for k in sums[("A", "control")]
        }
        shared = cuped.adjust(
            pre_period._moments(sums[("A", "target")]), pre_period._moments(whole)
        )
        assert isinstance(shared, cuped.Cuped)
        confounded += abs(shared.plain / shared.plain_se) > 1.96
    for key in ("A", "B"):
        assert abs(float(np.mean(estimates[key]))) < 0.015, estimates[key]
        assert rejected[key] <= 3, rejected  # 5% of 16 plus Monte Carlo error
    assert confounded >= 14  # A's targets against every control: the fee, not the message


def test_breakdown_rows_per_variant_against_their_own_controls(
    session: Session, tmp_path: Path
) -> None:
    subs = _by_plan_fee(5, n=1_200)
    campaign = _ledger(session, tmp_path / "mart", subs, ["A", "B"])
    report = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=Mart(tmp_path / "mart")
        )
    )
    tables = {t["name"]: t for t in report["breakdowns"]["tables"]}
    bands = tables["plan_band"]["rows"]

    def band(fee: int) -> str:
        return "lt59" if fee < 59 else ("59to128" if fee < 129 else "ge129")

    # A holds the 129 and 199 yuan plans (ge129), B the rest; a variant's empty bands are no rows.
    assert [(r["variant"], r["group"]) for r in bands] == [
        ("A", "ge129"),
        ("B", "lt59"),
        ("B", "59to128"),
    ]
    counted = Counter((s.variant, band(s.fee), s.cell) for s in subs)
    responded = Counter((s.variant, band(s.fee), s.cell) for s in subs if s.responded)
    for row in bands:
        assert row["own_control"] is True
        for cell in ("target", "control"):
            key = (row["variant"], row["group"], cell)
            assert row[cell]["contacts"] == counted[key]
            assert row[cell]["responses"] == responded[key]
    # Benjamini–Hochberg over the breakdown's rows, every variant's together.
    raw = [r["uplift"]["p_value"] for r in bands]
    assert [r["uplift"]["p_value_adjusted"] for r in bands] == pytest.approx(
        multiplicity.benjamini_hochberg(raw)
    )
    activity = tables["activity"]["rows"]
    assert {r["variant"] for r in activity} == {"A", "B"}
    assert sum(r["target"]["contacts"] for r in activity) == sum(s.cell == "target" for s in subs)


def test_a_history_written_before_the_variant_column_still_syncs_and_reads(
    session: Session, tmp_path: Path
) -> None:
    root = tmp_path / "mart"
    root.mkdir()
    old_schema = pa.schema(
        [
            f
            for f in marts.CONTACT_HISTORY_SCHEMA
            if f.name not in {"variant", "wave_id", "status", "reason"}
        ]
    )
    subs = _one_variant(4)
    rows = [
        {"subscriber_id": i, "campaign_id": "c777", "channel": "sms", "cell": s.cell,
         "contacted_at": T0, "target_list_id": None}
        for i, s in enumerate(subs, start=1)
    ] + [
        {"subscriber_id": 5000, "campaign_id": "C17", "channel": "sms", "cell": "target",
         "contacted_at": T0 - timedelta(days=40), "target_list_id": None}
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), root / "contact_history.parquet")
    mart = Mart(root)
    _write_mart_inputs(mart, subs)
    # Read as it is: one unnamed variant against the whole control.
    before = pre_period.read(mart, campaign_id=777)
    assert [(v.variant, v.target, v.control) for v in before.variants] == [(None, 400, 200)]
    # The sync rewrites it with the new columns and keeps the other source's row.
    campaign = _ledger(session, root, _one_variant(5)[:300], ["A"])
    stored = mart.table(marts.CONTACT_HISTORY).to_pyarrow()
    assert stored.schema.names == marts.CONTACT_HISTORY_SCHEMA.names
    by_campaign = Counter(stored["campaign_id"].to_pylist())
    assert by_campaign["C17"] == 1 and by_campaign[f"c{campaign.id}"] == 300
    mine = [r for r in stored.to_pylist() if r["campaign_id"] == f"c{campaign.id}"]
    assert {r["variant"] for r in mine} == {"A"} and all(r["wave_id"] for r in mine)
    other = next(r for r in stored.to_pylist() if r["campaign_id"] == "C17")
    assert other["variant"] is None and other["status"] is None


def test_cuped_and_breakdowns_read_the_rollout_wave_the_headline_reads(
    session: Session, tmp_path: Path
) -> None:
    # 200 of the 600 were in the test wave, every one of them a responder: the headline judges
    # the rollout wave alone, and CUPED and the breakdowns must read the same rows.
    subs = _one_variant()
    subs = [
        Sub(s.cell, s.variant, s.bill, s.fee, True) if i % 3 == 0 else s for i, s in enumerate(subs)
    ]
    tested = 200
    campaign = _ledger(session, tmp_path / "mart", subs, ["A"], tested=tested)
    report = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=Mart(tmp_path / "mart")
        )
    )
    rollout = subs[tested:]
    cells = Counter(s.cell for s in rollout)
    headline = report["cells"]
    assert (headline["target"]["contacts"], headline["control"]["contacts"]) == (
        cells["target"],
        cells["control"],
    )
    cu = report["cuped"]
    assert (cu["target"], cu["control"]) == (cells["target"], cells["control"])
    assert cu["waves"] == "rollout"
    tables = report["breakdowns"]["tables"]
    assert report["breakdowns"]["waves"] == "rollout"
    band = next(t for t in tables if t["name"] == "plan_band")
    assert sum(r["target"]["contacts"] for r in band["rows"]) == cells["target"]
    assert sum(r["target"]["responses"] for r in band["rows"]) == sum(
        s.responded for s in rollout if s.cell == "target"
    )
    # Naming the test wave reads the test wave's rows only.
    report = insights.report_dict(
        insights.evaluate(
            session,
            actor=SYSTEM,
            campaign_id=campaign.id,
            wave="test",
            mart=Mart(tmp_path / "mart"),
        )
    )
    first = Counter(s.cell for s in subs[:tested])
    assert (report["cuped"]["target"], report["cuped"]["control"]) == (
        first["target"],
        first["control"],
    )
    assert report["cuped"]["waves"] == "test"


def test_a_saved_segment_splits_the_campaign_into_members_and_the_rest(
    session: Session, tmp_path: Path
) -> None:
    from perkflow.audience import service as audience
    from perkflow.errors import NotFound

    base = _one_variant()
    subs = [
        Sub(s.cell, s.variant, s.bill, 129 if i % 2 else 59, s.responded)
        for i, s in enumerate(base)
    ]
    campaign = _ledger(session, tmp_path / "mart", subs, ["A"])
    mart = Mart(tmp_path / "mart")
    high = audience.create_segment(
        session,
        mart=mart,
        actor=SYSTEM,
        name="High plans",
        raw={"rule": {"column": "plan_fee_yuan", "op": ">=", "value": 100}},
    )
    report = insights.report_dict(
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=mart, segment_ids=[high.id]
        )
    )
    table = next(t for t in report["breakdowns"]["tables"] if t["name"] == "segment")
    assert table["segment"] == {"id": high.id, "name": "High plans", "version": 1}
    rows = {r["group"]: r for r in table["rows"]}
    assert list(rows) == ["member", "not_member"]
    for group, fee in (("member", 129), ("not_member", 59)):
        for cell in ("target", "control"):
            mine = [s for s in subs if s.fee == fee and s.cell == cell]
            assert rows[group][cell]["contacts"] == len(mine)
            assert rows[group][cell]["responses"] == sum(s.responded for s in mine)
    raw = [rows[g]["uplift"]["p_value"] for g in ("member", "not_member")]
    assert [
        rows[g]["uplift"]["p_value_adjusted"] for g in ("member", "not_member")
    ] == pytest.approx(multiplicity.benjamini_hochberg(raw))
    with pytest.raises(NotFound) as missing:
        insights.evaluate(
            session, actor=SYSTEM, campaign_id=campaign.id, mart=mart, segment_ids=[high.id + 99]
        )
    assert missing.value.field == "segment"
