"""Coupon pages and API through the app (SQLite): H5 claim and wallet, clerk counter, console."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons.rules import CodeSource
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_staff, make_subscribers
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


def _claim_form(html: str, batch_id: int) -> dict[str, str]:
    key = re.search(
        rf'action="/h5/coupons/{batch_id}/claim".*?name="idempotency_key" value="([^"]+)"',
        html,
        re.S,
    )
    assert key, "no claim form"
    return {"csrf_token": csrf_of(html), "idempotency_key": key.group(1)}


def test_h5_claim_shows_qr_and_a_second_claim_is_refused(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, PHONES)
        batch = make_batch(s, name_zh="满50减10", flash_sale=True, stock_total=5)
    _enter_h5(client, web_sessions, vault, PHONES[0][0])
    page = client.get("/h5/coupons", headers={"accept-language": "zh-CN"})
    assert page.status_code == 200 and "领券中心" in page.text and "剩余5/5张" in page.text
    assert "pf_device" in page.cookies
    form = _claim_form(page.text, batch.id)
    r = client.post(f"/h5/coupons/{batch.id}/claim", data=form, follow_redirects=False)
    assert r.status_code == 303 and "/h5/wallet/" in r.headers["location"]
    item = client.get(r.headers["location"])
    assert "<svg" in item.text and 'id="coupon-code"' in item.text
    # The same form posted again (a double tap) is the same claim.
    again = client.post(f"/h5/coupons/{batch.id}/claim", data=form, follow_redirects=False)
    assert again.headers["location"] == r.headers["location"]
    page = client.get("/h5/coupons")
    assert "已领取" in page.text or "Claimed" in page.text
    wallet = client.get("/h5/wallet")
    assert wallet.text.count('class="offer wallet-item') == 1


def test_h5_sold_out_is_clear(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        ids = make_subscribers(s, vault, PHONES)
        batch = make_batch(s, stock_total=1)
        from perkflow.coupons import service as coupons

        coupons.claim_coupon(
            s,
            actor=SYSTEM,
            vault=vault,
            batch_id=batch.id,
            subscriber_id=ids[1],
            idempotency_key="taken-first",
            channel="api",
            device_id=None,
            zone="Asia/Shanghai",
        )
        s.commit()
    _enter_h5(client, web_sessions, vault, PHONES[0][0])
    page = client.get("/h5/coupons", headers={"accept-language": "en"})
    assert "Sold out" in page.text


def test_clerk_redeems_once_and_can_reverse(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, PHONES)
        make_staff(s, username="gz.clerk", role=Role.CLERK, region="GD01S1")
        batch = make_batch(s)
    _enter_h5(client, web_sessions, vault, PHONES[0][0])
    page = client.get("/h5/coupons")
    r = client.post(f"/h5/coupons/{batch.id}/claim", data=_claim_form(page.text, batch.id))
    code = re.search(r'id="coupon-code">([^<]+)<', r.text)
    assert code
    client.cookies.clear()
    sign_in(client, "gz.clerk")
    home = client.get("/console")
    assert 'id="nav-clerk"' in home.text
    card = client.get(f"/clerk/lookup?code={code.group(1)}", headers={"accept-language": "zh-CN"})
    assert card.status_code == 200 and "138****5678" in card.text
    token = csrf_of(card.text)
    ok = client.post(
        "/clerk/redeem", data={"csrf_token": token, "code": code.group(1), "order_yuan": "60"}
    )
    assert ok.status_code == 200 and 'id="result"' in ok.text and "¥10.00" in ok.text
    twice = client.post(
        "/clerk/redeem", data={"csrf_token": token, "code": code.group(1), "order_yuan": "60"}
    )
    assert twice.status_code == 409 and 'data-reason="already_redeemed"' in twice.text
    rid = re.search(r'action="/clerk/redemptions/(\d+)/reverse"', twice.text)
    assert rid
    back = client.post(
        f"/clerk/redemptions/{rid.group(1)}/reverse", data={"csrf_token": token, "reason": "wrong"}
    )
    assert back.status_code == 200
    unknown = client.get("/clerk/lookup?code=NOSUCHCODE1")
    assert unknown.status_code == 404 and 'data-reason="not_found"' in unknown.text
    soon = datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(minutes=1)
    now = soon.strftime("%Y-%m-%d %H:%M")
    offline = client.post(
        "/clerk/offline",
        data={
            "csrf_token": token,
            "lines": f"A1, {code.group(1)}, 60, {now}\nA2, {code.group(1)}, 60, {now}",
        },
    )
    assert offline.status_code == 200
    assert offline.text.count('class="ok"') == 1 and offline.text.count('class="refused"') == 1


def test_console_batch_editor_and_pages(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="an", role=Role.ANALYST, region="CN")
    sign_in(client, "admin")
    form = client.get("/console/coupons/new")
    token = csrf_of(form.text)
    fields = {
        "csrf_token": token,
        "code": "d11-gd",
        "name_zh": "双十一满100减20",
        "name_en": "Double 11: 20 off 100",
        "value_kind": "amount",
        "amount_yuan": "20",
        "min_spend_yuan": "100",
        "validity_kind": "days",
        "valid_days": "7",
        "stock_total": "5000",
        "flash_sale": "on",
        "limit_total": "1",
        "code_source": "pattern",
        "code_charset": "alnum",
        "code_prefix": "DE",
        "code_length": "8",
        "reversal_minutes": "30",
    }
    bad = client.post("/console/coupons/new", data={**fields, "amount_yuan": "twenty"})
    assert bad.status_code == 422 and "amount_yuan" in bad.text
    r = client.post("/console/coupons/new", data=fields, follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    detail = client.get(url)
    assert detail.status_code == 200 and 'id="chart-activity"' in detail.text
    assert client.get(url + "/activity.json").json()["remaining"] == 5000
    activate = client.post(url + "/status", data={"csrf_token": token, "status": "active"})
    assert activate.status_code == 409  # no codes yet
    gen = client.post(url + "/codes/generate", data={"csrf_token": token}, follow_redirects=False)
    assert gen.status_code == 303
    deadline = time.monotonic() + 30
    while "5,000</strong>" not in client.get(url + "/jobs").text:
        assert time.monotonic() < deadline, "code job did not finish"
        time.sleep(0.2)
    ok = client.post(
        url + "/status", data={"csrf_token": token, "status": "active"}, follow_redirects=False
    )
    assert ok.status_code == 303
    listing = client.get("/console/coupons")
    assert "d11-gd" in listing.text
    client.cookies.clear()
    sign_in(client, "an")
    assert client.get("/console/coupons").status_code == 403


def test_api_claim_replay_sold_out_and_rate_limit(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        ids = make_subscribers(s, vault, PHONES)
        batch = make_batch(s, stock_total=1, code_source=CodeSource.AUTO)
        key = make_api_key(s, scopes=["coupons:claim", "coupons:read"])
    auth = {"authorization": f"Bearer {key}", "x-device-id": "device-0001"}
    url = f"/v1/coupon-batches/{batch.id}/claims"
    first = client.post(
        url, json={"subscriber_id": ids[0], "idempotency_key": "api-key-001"}, headers=auth
    )
    assert first.status_code == 201, first.text
    replay = client.post(
        url, json={"subscriber_id": ids[0], "idempotency_key": "api-key-001"}, headers=auth
    )
    assert replay.status_code == 200 and replay.json()["coupon_id"] == first.json()["coupon_id"]
    sold = client.post(
        url, json={"subscriber_id": ids[1], "idempotency_key": "api-key-002"}, headers=auth
    )
    assert sold.status_code == 409 and sold.json()["error"]["code"] == "sold_out"
    codes = [
        client.post(
            url,
            json={"subscriber_id": ids[1], "idempotency_key": f"api-key-1{i:02d}"},
            headers=auth,
        ).status_code
        for i in range(6)
    ]
    assert 429 in codes
    wallet = client.get(f"/v1/subscribers/{ids[0]}/coupons", headers=auth)
    assert wallet.status_code == 200 and len(wallet.json()) == 1
    stock = client.get(f"/v1/coupon-batches/{batch.id}/stock", headers=auth)
    assert stock.status_code == 200 and stock.json()["remaining"] == 0
