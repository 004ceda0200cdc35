"""Membership over HTTP: the /v1 API, the console editor and reports, the H5 member center."""

from __future__ import annotations

import html

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.models import Subscriber
from tests.factories import make_api_key, make_staff, make_subscribers
from tests.membership.helpers import ZONE, default_program, phones
from tests.web.helpers import csrf_of, sign_in


def _world(web_sessions: sessionmaker[Session], vault: Vault) -> dict[str, int]:
    with web_sessions() as s:
        default_program(s, vault)
        [gd] = make_subscribers(s, vault, phones(1), plan_fee_fen=9900)
        [zj] = make_subscribers(s, vault, phones(1, "ZJ", "ZJ01"), plan_fee_fen=5900)
        for sid in (gd, zj):
            membership.evaluate_member(
                s, actor=SYSTEM, subscriber_id=sid, reason="load", source="test", zone=ZONE
            )
        s.commit()
    return {"gd": gd, "zj": zj}


def test_operator_systems_send_prepayments_plan_changes_and_bills(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        write = {"authorization": f"Bearer {make_api_key(s, scopes=['members:write'])}"}
        read_only = {"authorization": f"Bearer {make_api_key(s, scopes=['members:read'])}"}
    r = client.get("/v1/tiers", headers=read_only)
    assert r.status_code == 200
    assert [t["code"] for t in r.json()] == ["silver", "gold", "diamond"]
    assert r.json()[0]["annual_value_fen"] == 283_500
    body = {"amount_fen": 100_000, "idempotency_key": "pay-1"}
    r = client.post(f"/v1/members/{w['zj']}/prepayments", json=body, headers=read_only)
    assert r.status_code == 403
    r = client.post(f"/v1/members/{w['zj']}/prepayments", json=body, headers=write)
    assert r.status_code == 200, r.text
    assert r.json() == {"balance_fen": 100_000, "replayed": False, "tier": "silver"}
    assert client.post(f"/v1/members/{w['zj']}/prepayments", json=body, headers=write).json()[
        "replayed"
    ]
    r = client.post(f"/v1/members/{w['gd']}/plan", json={"plan_fee_fen": 16900}, headers=write)
    assert r.status_code == 200 and r.json()["tier"] == "gold"
    bill = {"bill_ref": "2026-10", "bill_fen": 16_950}
    r = client.post(f"/v1/members/{w['gd']}/bills", json=bill, headers=write)
    assert r.status_code == 200 and r.json()["entry"]["points"] == 169 * 4
    again = client.post(f"/v1/members/{w['gd']}/bills", json=bill, headers=write)
    assert again.json()["replayed"] and again.json()["balance"] == 676
    r = client.post(f"/v1/members/{w['gd']}/bills/2026-10/reversal", headers=write)
    assert r.status_code == 200 and r.json()["balance"] == 0
    r = client.post(
        f"/v1/members/{w['gd']}/bills", json={"bill_ref": "", "bill_fen": 1}, headers=write
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "bill_ref"
    r = client.get(f"/v1/members/{w['gd']}", headers=read_only)
    assert r.status_code == 200
    kinds = [h["kind"] for h in r.json()["history"]]
    assert kinds == ["upgrade", "join"]


def test_the_editor_previews_then_saves_and_refuses_bad_rules(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _world(web_sessions, vault)
    with web_sessions() as s:
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd.m", role=Role.PROVINCE_MARKETER, region="GD")
    sign_in(client, "hq")
    page = client.get("/console/membership/rules")
    assert page.status_code == 200 and "silver" in page.text
    token = csrf_of(page.text)
    raw = page.text.split('id="program"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    program = html.unescape(raw)
    bad = program.replace("gte: 99", "gte: lots", 1)
    r = client.post(
        "/console/membership/rules",
        data={"program": bad, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 422 and "tiers[0].qualify[0].plan_fee_yuan.gte" in r.text
    r = client.post(
        "/console/membership/rules",
        data={"program": program, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    overview = client.get("/console/membership")
    assert overview.status_code == 200
    assert 'id="chart-tiers"' in overview.text and 'id="points-outstanding"' in overview.text
    r = client.post("/console/membership/rules", data={"program": program}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/console").text)})
    sign_in(client, "gd.m")
    assert client.get("/console/membership").status_code == 403


def test_h5_member_center_shows_the_tier_card_and_takes_a_pick(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        _, signed = subscribers.issue_login_token(
            s, actor=SYSTEM, vault=vault, phone=_phone_of(s, vault, w["gd"])
        )
        s.commit()
    client.get(f"/h5/enter?t={signed}")
    page = client.get("/h5/member", headers={"accept-language": "zh-CN"})
    assert page.status_code == 200
    assert "银卡会员" in page.text and "¥2,835.00" in page.text
    item = page.text.split('action="/h5/member/picks/', 1)[1].split('"', 1)[0]
    token = csrf_of(page.text)
    r = client.post(f"/h5/member/picks/{item}", data={"csrf_token": token})
    assert r.status_code == 200 and f'id="picked-{item}"' in r.text
    r = client.post(f"/h5/member/picks/{item}", data={"csrf_token": token})
    assert r.status_code == 409


def _phone_of(s: Session, vault: Vault, sid: int) -> str:
    sub = s.get(Subscriber, sid)
    assert sub is not None
    return subscribers.phone_of(vault, sub)
