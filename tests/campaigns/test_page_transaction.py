"""A refused campaign page leaves nothing stored: the wizard's save and a lifecycle step refused
after their writes are rolled back, and the page shown again reads what is stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.errors import Conflict, ValidationFailed
from perkflow.org.models import AuditEntry
from tests.campaigns.test_pages import campaign_count, frozen, home, wizard_form  # noqa: F401
from tests.web.helpers import csrf_of, sign_in


def _audited(sessions: sessionmaker[Session], action: str) -> int:
    with sessions() as s:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return int(s.scalar(query) or 0)


def test_a_wizard_save_refused_after_the_draft_was_written_stores_nothing(
    client: TestClient,
    home: int,  # noqa: F811
    web_sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = campaigns.create_campaign

    def create_then_refuse(session: Session, **kw: Any) -> Campaign:
        real(session, **kw)  # the draft and its audit entry are flushed, not yet committed
        raise ValidationFailed("budget_fen: more than the region may spend", field="budget_fen")

    monkeypatch.setattr(campaigns, "create_campaign", create_then_refuse)
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post("/console/campaigns/new", data=wizard_form(token, home))
    assert r.status_code == 422
    assert "<code>budget_fen</code>" in r.text and 'value="Video month, GD"' in r.text
    assert campaign_count(web_sessions) == 0
    assert _audited(web_sessions, "campaign.create") == 0


def test_a_lifecycle_step_refused_after_its_write_shows_and_keeps_the_stored_state(
    client: TestClient,
    home: int,  # noqa: F811
    web_sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post("/console/campaigns/new", data=wizard_form(token, home), follow_redirects=False)
    assert r.status_code == 303
    url = r.headers["location"]
    real = campaigns.submit_campaign

    def submit_then_refuse(session: Session, **kw: Any) -> Campaign:
        real(session, **kw)  # moved to pending approval and audited, not yet committed
        raise Conflict("the campaign changed meanwhile; reload it", field="status")

    monkeypatch.setattr(campaigns, "submit_campaign", submit_then_refuse)
    r = client.post(f"{url}/submit", data={"csrf_token": token})
    assert r.status_code == 409
    assert "营销活动已被修改" in r.text  # the refusal, in the page's language
    assert 'data-status="draft"' in r.text  # the page shown again reads what is stored
    with web_sessions() as s:
        assert s.scalars(select(Campaign.status)).one() == "draft"
    assert _audited(web_sessions, "campaign.submit") == 0
