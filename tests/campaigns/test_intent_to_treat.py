"""Every assigned target stays in the evaluation whatever happened at send time; caps are random."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from statistics import mean

import pytest
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.insights import service as insights
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.audience.helpers import profile
from tests.campaigns.helpers import (
    HQ,
    NOW,
    contacts,
    dispatcher,
    everyone,
    run,
    spec,
    started,
    write_profile,
)
from tests.factories import make_subscribers


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _assigned(session: Session, campaign_id: int) -> dict[str, int]:
    rows = contacts(session, campaign_id)
    return {
        cell: sum(r.cell == cell and r.reason != "no_variant" for r in rows)
        for cell in ("target", "control")
    }


def _check_itt(session: Session, campaign_id: int, *, reason: str) -> None:
    rows = contacts(session, campaign_id)
    dropped = [r for r in rows if r.cell == "target" and r.status == "suppressed"]
    assert dropped and {r.reason for r in dropped} == {reason}
    ev = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign_id)
    assigned = _assigned(session, campaign_id)
    assert ev.overall.target.contacts == assigned["target"]
    assert ev.overall.control.contacts == assigned["control"]
    sent = sum(r.cell == "target" and r.status in ("sent", "delivered") for r in rows)
    assert ev.treated is not None and ev.treated.target.contacts == sent
    assert ev.treated.control == ev.overall.control
    assert sum(g.comparison.target.contacts for g in ev.variants) == assigned["target"]
    # The mart's history export carries the same rows (intent to treat), with what became of them.
    exported = [
        r
        for r in campaigns.history_contacts(session, actor=SYSTEM, after_id=0, limit=100_000)
        if r.campaign_id == campaign_id
    ]
    assert {cell: sum(r.cell == cell for r in exported) for cell in assigned} == assigned
    assert {r.id: r.reason for r in exported if r.status == "suppressed"} == {
        r.id: r.reason for r in dropped
    }
    by_id = {r.id: r for r in rows}
    assert all(
        (r.variant, r.wave_id) == (by_id[r.id].variant, by_id[r.id].wave_id) for r in exported
    )


def test_the_stock_cap_keeps_its_dropped_targets_in_the_evaluation(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault, settings: Settings
) -> None:
    write_profile(mart, 40)
    seg = everyone(session, mart)
    c = started(session, mart, vault, spec(seg, stock_cap=5))
    run(sessions, dispatcher(vault, settings), mart)
    _check_itt(session, c.id, reason="cap_reached")


def test_an_opt_out_after_the_list_keeps_the_target_in_the_evaluation(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault, settings: Settings
) -> None:
    ids = make_subscribers(session, vault, [(f"1390000{i:04d}", "GD", "GD01") for i in range(40)])
    profile(mart, [{"subscriber_id": i, "province_code": "GD", "plan_fee_yuan": 129} for i in ids])
    seg = everyone(session, mart)
    c = started(session, mart, vault, spec(seg))
    d = dispatcher(vault, settings)
    campaigns.pause_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    run(sessions, d, mart)  # plans the wave, sends nothing while paused
    target = next(r.subscriber_id for r in contacts(session, c.id) if r.cell == "target")
    audience.add_to_contact_list(session, actor=HQ, subscriber_id=target, channel="all")
    campaigns.resume_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    run(sessions, d, mart)
    _check_itt(session, c.id, reason="opted_out")


def test_an_early_finish_keeps_the_unsent_targets_in_the_evaluation(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault, settings: Settings
) -> None:
    write_profile(mart, 40)
    seg = everyone(session, mart)
    c = started(session, mart, vault, spec(seg))
    campaigns.pause_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    run(sessions, dispatcher(vault, settings), mart)
    campaigns.finish_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    _check_itt(session, c.id, reason="finished")
    # A suppressed target's response still counts for its cell, from when it would have gone out.
    row = next(r for r in contacts(session, c.id) if r.cell == "target")
    assert row.contacted_at is not None
    resp = campaigns.record_response(
        session,
        actor=SYSTEM,
        subscriber_id=row.subscriber_id,
        kind="claim",
        occurred_at=NOW + timedelta(days=1),
        value_fen=0,
        idempotency_key="itt-1",
        source="api",
    )
    assert resp is not None
    session.commit()
    ev = insights.evaluate(session, actor=SYSTEM, campaign_id=c.id)
    assert ev.overall.target.responders == 1


def test_the_schedules_end_keeps_its_dropped_targets_in_the_evaluation(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
    frozen: clock.FrozenClock,
) -> None:
    write_profile(mart, 40)
    seg = everyone(session, mart)
    ends = (NOW + timedelta(hours=1)).isoformat()
    c = started(session, mart, vault, spec(seg, schedule={"ends_at": ends}))
    campaigns.pause_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    d = dispatcher(vault, settings)
    run(sessions, d, mart)
    campaigns.resume_campaign(session, actor=HQ, campaign_id=c.id)
    session.commit()
    frozen.advance(hours=2)  # the schedule has ended before anything went out
    run(sessions, d, mart)
    _check_itt(session, c.id, reason="schedule_ended")


def test_a_cap_keeps_a_random_sample_not_the_lowest_ids(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault, settings: Settings
) -> None:
    write_profile(mart, 200)
    seg = everyone(session, mart)
    d = dispatcher(vault, settings)
    kept_ranks: list[float] = []
    for i in range(4):
        c = started(session, mart, vault, spec(seg, name=f"Capped {i}", stock_cap=20))
        run(sessions, d, mart)
        rows = [r for r in contacts(session, c.id) if r.cell == "target"]
        ids = sorted(r.subscriber_id for r in rows)
        sent = sorted(r.subscriber_id for r in rows if r.status == "delivered")
        assert len(sent) == 20
        assert sent != ids[:20]  # not the lowest ids
        rank = {sid: k / (len(ids) - 1) for k, sid in enumerate(ids)}
        kept_ranks += [rank[s] for s in sent]
    # 80 kept targets: uniform ranks average 0.5 (sd of the mean ≈ 0.032); id order gives ≈ 0.05.
    assert 0.38 < mean(kept_ranks) < 0.62
    low_half = sum(r < 0.5 for r in kept_ranks)
    assert 25 <= low_half <= 55


def test_the_dispatch_order_is_a_reproducible_shuffle() -> None:
    import pyarrow as pa

    from perkflow.campaigns import tasks
    from perkflow.campaigns.models import Campaign, CampaignWave

    rows = pa.table({"subscriber_id": list(range(1, 1_001))})
    c, w = Campaign(salt="abc"), CampaignWave(id=7)
    first = tasks.dispatch_order(rows, c, w)["subscriber_id"].to_pylist()
    assert first == tasks.dispatch_order(rows, c, w)["subscriber_id"].to_pylist()
    assert sorted(first) == list(range(1, 1_001)) and first[:10] != list(range(1, 11))
    other = tasks.dispatch_order(rows, Campaign(salt="xyz"), w)["subscriber_id"].to_pylist()
    assert other != first
