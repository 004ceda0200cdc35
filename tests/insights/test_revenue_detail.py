"""The ledger's spend detail per cell (spenders, sum of squared spend per contact) and what the
report makes of it: an interval where each cell has enough spenders, "sample too small" where not.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact, CampaignResponse
from perkflow.campaigns.repository import cell_counts
from perkflow.insights import service as insights
from perkflow.org.rules import SYSTEM
from tests.insights.test_service import T0, _campaign, _run_campaign, _wave


def _contact(session: Session, campaign_id: int, wave_id: int, sid: int, **kw: object) -> int:
    contact = CampaignContact(
        campaign_id=campaign_id,
        wave_id=wave_id,
        subscriber_id=sid,
        variant="A",
        channel="sms",
        province_code="GD",
        contacted_at=T0,
        **kw,
    )
    session.add(contact)
    session.flush()
    return contact.id


def _respond(
    session: Session, campaign_id: int, contact_id: int, sid: int, fen: int, k: int
) -> None:
    session.add(
        CampaignResponse(
            campaign_id=campaign_id,
            contact_id=contact_id,
            subscriber_id=sid,
            cell="target",
            variant="A",
            kind="claim",
            value_fen=fen,
            responded_at=T0 + timedelta(hours=k),
            source="ledger",
            idempotency_key=f"r:{campaign_id}:{sid}:{k}",
        )
    )


def test_spend_is_summed_per_contact_then_squared(session: Session) -> None:
    campaign = _campaign(session)
    wave = _wave(session, campaign, "test")
    # Contact 1 (delivered) spends 3 + 4 yuan in two responses: one spender of 7 yuan, 49 yuan².
    one = _contact(session, campaign.id, wave.id, 1, cell="target", status="delivered")
    _respond(session, campaign.id, one, 1, 300, 1)
    _respond(session, campaign.id, one, 1, 400, 2)
    # Contact 2 (suppressed at send time for a later opt-out: still assigned) spends 2 yuan.
    two = _contact(
        session, campaign.id, wave.id, 2, cell="target", status="suppressed", reason="opted_out"
    )
    _respond(session, campaign.id, two, 2, 200, 3)
    # Contact 3 responds without spending: a responder, not a spender.
    three = _contact(session, campaign.id, wave.id, 3, cell="target", status="delivered")
    _respond(session, campaign.id, three, 3, 0, 4)
    _contact(session, campaign.id, wave.id, 4, cell="target", status="delivered")
    session.flush()
    [row] = cell_counts(session, campaign_id=campaign.id)
    assert (row.contacts, row.responders, row.revenue_fen) == (4, 3, 900)
    assert row.spenders == 2 and row.revenue_sq_fen2 == 700**2 + 200**2
    assert row.treated == 3 and row.treated_spenders == 1
    assert row.treated_revenue_sq_fen2 == 700**2


def test_a_small_campaign_says_its_sample_is_too_small_for_a_revenue_interval(
    session: Session,
) -> None:
    campaign = _run_campaign(session)
    report = insights.report_dict(insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id))
    # 9 spenders against 2: the spend detail is there, the spenders too few for any interval.
    assert report["incremental"]["revenue_ci95"] is None
    assert report["incremental"]["revenue_interval"] == "few_spenders"
    assert report["incremental"]["revenue_fen"] == 9_000 - 2_000 * 3
