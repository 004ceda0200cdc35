"""Evaluation from the ledger on SQLite and PostgreSQL: import, cells, variants, waves, cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perkflow.campaigns.models import Campaign, CampaignContact, CampaignResponse, CampaignWave
from perkflow.errors import Forbidden, NotFound, ValidationFailed
from perkflow.insights import rules
from perkflow.insights import service as insights
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def _history(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ledger_counts(session: Session) -> tuple[int, int, int, int]:
    return (
        session.scalar(select(func.count()).select_from(Campaign)) or 0,
        session.scalar(select(func.count()).select_from(CampaignContact)) or 0,
        session.scalar(select(func.count()).select_from(CampaignResponse)) or 0,
        session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
    )


def test_import_then_evaluate_counts_cells_and_variants(session: Session, tmp_path: Path) -> None:
    lines = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    # Target A: 30 of 100 respond, target B: 12 of 100, control: 10 of 100 (no variant).
    for i in range(100):
        lines.append(f"{i + 1},target,A,2026-03-01 10:00,{int(i < 30)},{'5.50' if i < 30 else ''}")
        lines.append(f"{i + 101},target,B,2026-03-01 10:00,{int(i < 12)},")
        lines.append(f"{i + 201},control,,2026-03-01 10:00,{int(i < 10)},{'1' if i < 10 else ''}")
    campaign = insights.import_history_csv(
        session, actor=SYSTEM, path=_history(tmp_path, lines), name="spring test", source="spring"
    )
    session.flush()
    ev = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id)
    # Spend detail: 30 spenders of 5.50 yuan (squares summed per contact), 10 of 1 yuan.
    assert ev.cells["target"] == rules.Arm(200, 42, 30 * 550, 30, 30 * 550**2)
    assert ev.cells["control"] == rules.Arm(100, 10, 10 * 100, 10, 10 * 100**2)
    assert ev.overall.absolute == pytest.approx(0.21 - 0.10)
    by_variant = {g.key: g.comparison for g in ev.variants}
    assert set(by_variant) == {"A", "B"}
    # Variants share the whole control group.
    assert (
        by_variant["A"].control
        == by_variant["B"].control
        == rules.Arm(100, 10, 1000, 10, 10 * 100**2)
    )
    assert by_variant["A"].significant and not by_variant["B"].significant
    assert by_variant["A"].incremental_responses == pytest.approx(20)
    # Revenue: 16,500 fen in target A against 10 fen per control contact.
    assert by_variant["A"].incremental_revenue_fen == 16_500 - 1_000
    assert ev.provinces == []  # imported histories have no provinces
    assert ev.cost_fen is None and ev.cost_per_incremental_fen is None  # unknown channel cost
    assert ev.timeline.days == ["2026-03-01"]

    report = insights.report_dict(ev)
    assert report["cells"]["target"] == {
        "contacts": 200,
        "responses": 42,
        "rate": 0.21,
        "revenue_fen": 16_500,
    }
    b = next(v for v in report["variants"] if v["variant"] == "B")
    assert b["verdict"] == "not significant" and b["uplift"]["p_value"] > 0.05
    assert b["cost_per_incremental_fen"] is None


def test_a_file_with_bad_lines_loads_nothing_and_names_every_line(
    session: Session, tmp_path: Path
) -> None:
    before = _ledger_counts(session)
    lines = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    lines += [f"{i},target,A,2026-03-01,1," for i in range(1, 50)]
    lines += ["50,test,A,2026-03-01,1,", "51,target,A,2026-13-01,1,", "52,control,,2026-03-01,2,"]
    lines += [f"{i},target,A,2026-03-01,1,1.234" for i in range(53, 83)]
    with pytest.raises(ValidationFailed) as err:
        insights.import_history_csv(
            session, actor=SYSTEM, path=_history(tmp_path, lines), name="broken", source="spring"
        )
    assert err.value.field == "file"
    message = err.value.message
    assert message.startswith("33 problem(s) in history.csv, nothing loaded")
    assert "line 51 [cell]" in message and "line 52 [contacted_at]" in message
    assert "line 53 [responded]" in message and "line 54 [revenue]" in message
    assert "and 13 more problem(s)" in message
    assert len(err.value.details["problems"]) == 33
    session.rollback()
    assert _ledger_counts(session) == before


def test_missing_file_is_not_found(session: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        insights.import_history_csv(
            session, actor=SYSTEM, path=tmp_path / "nope.csv", name="missing", source="spring"
        )


# ---- a campaign run in waves, with provinces, an offer cost and responses over days ------------


def _campaign(session: Session, **overrides: Any) -> Campaign:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "name": "Video VIP for data-heavy users",
        "kind": "batch",
        "status": "finished",
        "goal": {"kind": "claim", "window_days": 14},
        "offer": {"kind": "benefit", "id": 1, "category": "video", "cost_fen": 300},
        "variants": [{"key": "A", "channel": "sms"}, {"key": "B", "channel": "email"}],
        "schedule": {},
        "throttle": {},
        "control_share_bp": 2_000,
        "salt": "s",
        "created_by": "test",
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    campaign = Campaign(**values)
    session.add(campaign)
    session.flush()
    return campaign


def _wave(session: Session, campaign: Campaign, kind: str) -> CampaignWave:
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind=kind,
        share_bp=1_000 if kind == "test" else 9_000,
        status="done",
        created_by="test",
        created_at=T0,
    )
    session.add(wave)
    session.flush()
    return wave


def _contacts(
    session: Session,
    campaign: Campaign,
    wave: CampaignWave,
    *,
    cell: str,
    variant: str | None,
    province: str,
    n: int,
    responders: int,
    first_id: int,
    day: int = 0,
) -> None:
    for i in range(n):
        contact = CampaignContact(
            campaign_id=campaign.id,
            wave_id=wave.id,
            subscriber_id=first_id + i,
            cell=cell,
            variant=variant,
            channel="sms" if variant != "B" else "email",
            province_code=province,
            status="held" if cell == "control" else ("failed" if i == n - 1 else "delivered"),
            contacted_at=T0,
        )
        session.add(contact)
        session.flush()
        if i < responders:
            session.add(
                CampaignResponse(
                    campaign_id=campaign.id,
                    contact_id=contact.id,
                    subscriber_id=first_id + i,
                    cell=cell,
                    variant=variant,
                    kind="claim",
                    value_fen=1_000,
                    responded_at=T0 + timedelta(days=day + i % 3),
                    source="ledger",
                    idempotency_key=f"k:{campaign.id}:{first_id + i}",
                )
            )
    # A row no variant matched was never assigned: not part of the evaluation. (A target
    # dropped at send time is: tests/insights/test_intent_to_treat.py.)
    session.add(
        CampaignContact(
            campaign_id=campaign.id,
            wave_id=wave.id,
            subscriber_id=first_id + n,
            cell=cell,
            variant=variant,
            channel="sms",
            province_code=province,
            status="suppressed",
            reason="no_variant",
        )
    )
    session.flush()


def _run_campaign(session: Session) -> Campaign:
    campaign = _campaign(session)
    test, rollout = _wave(session, campaign, "test"), _wave(session, campaign, "rollout")
    _contacts(session, campaign, test, cell="target", variant="A", province="GD", n=40,
              responders=20, first_id=1)  # fmt: skip
    _contacts(session, campaign, test, cell="control", variant="A", province="GD", n=10,
              responders=1, first_id=100)  # fmt: skip
    _contacts(session, campaign, rollout, cell="target", variant="B", province="ZJ", n=60,
              responders=9, first_id=200)  # fmt: skip
    _contacts(session, campaign, rollout, cell="control", variant="B", province="ZJ", n=20,
              responders=2, first_id=300)  # fmt: skip
    return campaign


def _spent(contacts: int, responders: int) -> rules.Arm:
    """A cell of `_contacts`: each responder spent 10 yuan, once."""
    return rules.Arm(contacts, responders, responders * 1_000, responders, responders * 1_000**2)


def test_waves_provinces_cost_and_timeline(session: Session) -> None:
    campaign = _run_campaign(session)
    # The headline of a campaign that rolled out is its rollout wave (the confirmatory estimate);
    # the deciding test wave and every wave together are reported beside it.
    headline = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id)
    assert headline.headline_wave == "rollout"
    assert headline.cells["target"] == _spent(60, 9)
    assert headline.cells["control"] == _spent(20, 2)
    assert headline.test_wave is not None and headline.test_wave.target == _spent(40, 20)
    assert headline.pooled is not None and headline.pooled.target == _spent(100, 29)
    waves = [
        w.id
        for w in session.scalars(
            select(CampaignWave).where(CampaignWave.campaign_id == campaign.id)
        )
    ]
    ev = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id, wave_ids=waves)
    assert ev.headline_wave is None
    assert ev.cells["target"] == _spent(100, 29)
    assert ev.cells["control"] == _spent(30, 3)
    # Cost: 29 offers taken up at 3 yuan, 39 SMS sent at 5 fen (one failed), e-mails free.
    assert ev.cost_fen == 29 * 300 + 39 * 5
    assert ev.overall.significant
    assert ev.cost_per_incremental_fen == round(ev.cost_fen / ev.overall.incremental_responses)
    assert [g.key for g in ev.provinces] == ["GD", "ZJ"]
    gd = ev.provinces[0].comparison
    assert (gd.target.contacts, gd.control.contacts) == (40, 10)
    variants = {g.key: g for g in ev.variants}
    assert variants["B"].cost_fen == 9 * 300  # e-mail costs nothing to send
    # Days of first responses in Shanghai: 2, 3 and 4 March; rates are cumulative.
    assert ev.timeline.days == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert ev.timeline.responders["target"][-1] == 29
    assert ev.timeline.rates["target"][-1] == pytest.approx(0.29)
    assert ev.timeline.rates["control"] == sorted(ev.timeline.rates["control"])

    test = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id, wave="test")
    assert test.cells["target"] == _spent(40, 20)
    assert test.cells["control"] == _spent(10, 1)
    assert [g.key for g in test.provinces] == ["GD"]
    rollout = insights.report_dict(
        insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id, wave="rollout")
    )
    assert rollout["wave"] == "rollout" and rollout["cells"]["target"]["contacts"] == 60
    assert rollout["verdict"] == "not significant"
    assert rollout["cost_per_incremental_fen"] is None


def test_unknown_waves_and_campaigns_are_clear_errors(session: Session) -> None:
    campaign = _campaign(session)
    with pytest.raises(NotFound):
        insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id, wave="test")
    with pytest.raises(ValidationFailed):
        insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id, wave="later")
    with pytest.raises(NotFound):
        insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id + 999)
    # A campaign with nobody in it evaluates to plain Nones, not a crash.
    report = insights.report_dict(insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id))
    assert report["cells"]["target"]["rate"] is None and report["uplift"]["p_value"] is None
    assert report["verdict"] == "not enough data" and report["timeline"]["days"] == []


def test_keys_need_the_scope_and_provinces_see_their_own(session: Session) -> None:
    campaign = _run_campaign(session)
    key = Actor(kind="api_key", id="1", name="k", api_scopes=frozenset({"campaigns:read"}))
    assert insights.evaluate(session, actor=key, campaign_id=campaign.id).cells["target"]
    with pytest.raises(Forbidden):
        insights.evaluate(
            session,
            actor=Actor(kind="api_key", id="2", name="k", api_scopes=frozenset({"coupons:read"})),
            campaign_id=campaign.id,
        )
    marketer = Actor(
        kind="staff", id="3", name="gd", role=Role.PROVINCE_MARKETER, scope_path="CN/GD"
    )
    with pytest.raises(Forbidden):
        insights.evaluate(session, actor=marketer, campaign_id=campaign.id)
    clerk = Actor(kind="staff", id="4", name="c", role=Role.CLERK, scope_path="CN/GD/GD01/S1")
    with pytest.raises(Forbidden):
        insights.evaluate(session, actor=clerk, campaign_id=campaign.id)
