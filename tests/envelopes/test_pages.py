"""Pages of red envelopes: drawing and the share-to-unlock help link."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers
from tests.envelopes.factories import make_lottery, make_share
from tests.factories import make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

PHONES = [("13812345678", "GD", "GD01"), ("13912345678", "GD", "GD02")]


def _enter_h5(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault, phone: str
) -> None:
    with web_sessions() as s:
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=phone)
        s.commit()
    r = client.get(f"/h5/enter?t={signed}", follow_redirects=False)
    assert r.status_code == 303


def test_envelope_pages_draw_and_help_link(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, PHONES)
        make_lottery(s, budget_fen=100_000, tiers=[(1, 888, 500_000)])
        share = make_share(s, helpers=1)
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    _enter_h5(client, web_sessions, vault, PHONES[0][0])
    page = client.get("/h5/envelopes")
    token = csrf_of(page.text)
    lottery_id = re.search(r'action="/h5/envelopes/(\d+)/draw"', page.text)
    assert lottery_id
    drawn = client.post(f"/h5/envelopes/{lottery_id.group(1)}/draw", data={"csrf_token": token})
    assert drawn.status_code == 200 and 'id="draw-result"' in drawn.text
    client.post(f"/h5/envelopes/{share.id}/share", data={"csrf_token": token})
    page = client.get("/h5/envelopes")
    link = re.search(r'id="share-link" readonly value="([^"]+)"', page.text)
    assert link
    own = client.get(link.group(1))
    assert 'id="help-button"' not in own.text
    client.cookies.clear()
    _enter_h5(client, web_sessions, vault, PHONES[1][0])
    help_page = client.get(link.group(1))
    assert "138****5678" in help_page.text and 'id="help-button"' in help_page.text
    helped = client.post(link.group(1), data={"csrf_token": csrf_of(help_page.text)})
    assert helped.status_code == 200 and 'id="helped"' in helped.text
    client.cookies.clear()
    sign_in(client, "admin")
    review = client.get(f"/console/envelopes/{share.id}")
    assert review.status_code == 200 and "139****5678" in review.text
