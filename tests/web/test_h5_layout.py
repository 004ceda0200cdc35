"""The H5 benefit center over HTTP: one layout with a tab bar, a right unread count, claim links,
and how to use each kind of benefit."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.rules import Category, FulfilmentKind
from perkflow.channels import service as channels
from perkflow.grants import service as grants
from perkflow.grants.models import Grant
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from tests.factories import make_benefit, make_partner, make_subscribers
from tests.grants.helpers import ZONE, add_card_codes
from tests.web.helpers import csrf_of

PHONE = "13712345678"
# Every page of the signed-in H5 (GET), and the tab each one marks.
PAGES = {
    "/h5": "home",
    "/h5/member": "home",
    "/h5/benefits": "benefits",
    "/h5/coupons": "coupons",
    "/h5/envelopes": "coupons",
    "/h5/wallet": "wallet",
    "/h5/inbox": "inbox",
}
TABS = {
    "home": "/h5",
    "benefits": "/h5/benefits",
    "coupons": "/h5/coupons",
    "wallet": "/h5/wallet",
    "inbox": "/h5/inbox",
}


@dataclass
class Subscriber:
    id: int
    grants: dict[str, int]
    code: str


def _sign_in(client: TestClient, sessions: sessionmaker[Session], vault: Vault) -> Subscriber:
    """A subscriber holding one grant of each kind (and a failed one), signed in on `client`."""
    with sessions() as s:
        [sid] = make_subscribers(s, vault, [(PHONE, "GD", "GD01")])
        made: dict[str, int] = {}
        code = ""
        for name, kind, category in [
            ("card", FulfilmentKind.CARD_CODE, Category.MUSIC),
            ("recharge", FulfilmentKind.DIRECT_RECHARGE, Category.VIDEO),
            ("pending", FulfilmentKind.DIRECT_RECHARGE, Category.CLOUD_STORAGE),
            ("coupon", FulfilmentKind.COUPON, Category.FOOD_DRINK),
            ("service", FulfilmentKind.SERVICE, Category.TELECOM),
            ("failed", FulfilmentKind.DIRECT_RECHARGE, Category.TELECOM),
        ]:
            benefit = make_benefit(
                s,
                partner=make_partner(s, code=f"partner-{name}"),
                code=f"b-{name}",
                kind=kind,
                category=category,
            )
            if kind == FulfilmentKind.CARD_CODE:
                [code] = add_card_codes(s, vault, benefit=benefit, n=1)
            made[name] = grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit.id,
                source="campaign",
                idempotency_key=f"h5-{name}",
                zone=ZONE,
            ).grant.id
        # The partner's answers, as the outbox worker would record them.
        s.execute(
            update(Grant)
            .where(Grant.id == made["recharge"])
            .values(status="fulfilled", partner_order_id="TX-778899", fulfilled_at=clock.now())
        )
        s.execute(
            update(Grant)
            .where(Grant.id == made["failed"])
            .values(status="failed", failure_reason="partner refused")
        )
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE)
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303
    return Subscriber(id=sid, grants=made, code=code)


@pytest.fixture
def me(client: TestClient, web_sessions: sessionmaker[Session], vault: Vault) -> Subscriber:
    return _sign_in(client, web_sessions, vault)


def _links(html: str) -> set[str]:
    return {h.split("#")[0] for h in re.findall(r'href="(/h5[^"]*)"', html)}


class TestLayout:
    @pytest.mark.parametrize(("path", "tab"), sorted(PAGES.items()))
    def test_every_page_has_the_tab_bar_with_its_tab_marked(
        self, client: TestClient, me: Subscriber, path: str, tab: str
    ) -> None:
        page = client.get(path)
        assert page.status_code == 200
        assert '<link rel="stylesheet" href="/static/h5.css">' in page.text
        bar = re.search(r'<nav class="tabbar" id="h5-tabs".*?</nav>', page.text, re.S)
        assert bar, f"{path} has no tab bar"
        hrefs = re.findall(r'<a href="([^"]+)" id="tab-(\w+)"', bar.group(0))
        assert [(k, h) for h, k in hrefs] == list(TABS.items())
        current = re.findall(r'id="tab-(\w+)" class="tab on" aria-current="page"', bar.group(0))
        assert current == [tab]
        # Each tab has its icon drawn inline (no icon font).
        assert bar.group(0).count("<svg") == len(TABS)

    def test_every_page_is_two_taps_from_any_page(self, client: TestClient, me: Subscriber) -> None:
        pages = {p: _links(client.get(p).text) for p in PAGES}
        for start, first in pages.items():
            reach = set(first)
            for p in first & set(pages):
                reach |= pages[p]
            assert set(PAGES) <= reach, (start, set(PAGES) - reach)

    def test_the_stylesheet_and_script_are_served_from_self(self, client: TestClient) -> None:
        css = client.get("/static/h5.css")
        assert css.status_code == 200 and ".tabbar" in css.text
        assert "safe-area-inset-bottom" in css.text
        assert client.get("/static/h5.js").status_code == 200


class TestInbox:
    def test_marking_read_updates_the_unread_line_and_badge(
        self, client: TestClient, web_sessions: sessionmaker[Session], me: Subscriber
    ) -> None:
        with web_sessions() as s:
            first = channels.post_system_message(s, subscriber_id=me.id, title="A", body="a")
            channels.post_system_message(s, subscriber_id=me.id, title="B", body="b")
            s.commit()
            first_id = first.id
        page = client.get("/h5/inbox", headers={"accept-language": "zh-CN"})
        assert "2 条未读" in page.text
        # A page that "back" could show from the cache would show the old count.
        assert page.headers["cache-control"] == "no-store"
        r = client.post(
            f"/h5/inbox/{first_id}/read",
            headers={
                "hx-request": "true",
                "x-csrf-token": csrf_of(page.text),
                "accept-language": "zh-CN",
            },
        )
        assert r.status_code == 200 and r.headers["hx-trigger"] == "inbox-read"
        # The "n unread" line comes with the item, swapped out of band: no reload needed.
        line = re.search(
            r'<p class="muted" id="inbox-unread" hx-swap-oob="true">([^<]*)</p>', r.text
        )
        assert line and line.group(1) == "1 条未读"
        badge = client.get("/h5/inbox/badge")
        assert 'id="inbox-unread-count">1<' in badge.text
        assert badge.headers["cache-control"] == "no-store"
        again = client.get("/h5/inbox", headers={"accept-language": "zh-CN"})
        assert "1 条未读" in again.text and "2 条未读" not in again.text

    def test_a_claim_message_carries_its_link_as_a_button(
        self, client: TestClient, web_sessions: sessionmaker[Session], me: Subscriber
    ) -> None:
        with web_sessions() as s:
            m = channels.post_system_message(
                s, subscriber_id=me.id, title="领券", body="点击领取", link="/h5/coupons#offer-7"
            )
            plain = channels.post_system_message(s, subscriber_id=me.id, title="通知", body="好")
            s.commit()
            ids = (m.id, plain.id)
        page = client.get("/h5/inbox", headers={"accept-language": "zh-CN"})
        assert (
            f'<a class="btn claim" href="/h5/coupons#offer-7" id="inbox-link-{ids[0]}">去领取</a>'
            in page.text
        )
        assert f'id="inbox-link-{ids[1]}"' not in page.text


def _usage(html: str, grant_id: int) -> str:
    found = re.search(
        rf'<div class="usage[^"]*" id="usage-{grant_id}".*?</div>\s*</li>', html, re.S
    )
    assert found, f"grant {grant_id} has no usage block"
    return found.group(0)


class TestHowToUse:
    def test_each_kind_says_how_to_use_it(self, client: TestClient, me: Subscriber) -> None:
        page = client.get("/h5/benefits", headers={"accept-language": "en"})
        assert page.status_code == 200
        g = me.grants
        card = _usage(page.text, g["card"])
        # Masked until tapped: the reveal is a POST (audited), the code is not on the page yet.
        assert me.code not in page.text and f'id="reveal-{g["card"]}"' in card
        assert "Partner Card" in card and "Redeem a code" in card

        recharge = _usage(page.text, g["recharge"])
        assert "137****5678" in recharge and PHONE not in page.text
        assert "TX-778899" in recharge and "sign in with this phone number" in recharge

        pending = _usage(page.text, g["pending"])
        assert "Being delivered by Partner Pending" in pending and "137****5678" in pending

        coupon = _usage(page.text, g["coupon"])
        code = re.search(r'id="coupon-code-\d+">(CP-[A-Za-z0-9_-]+)<', coupon)
        assert code and "<svg" in coupon and "data-copy-from" in coupon
        assert "show the QR code at their counter" in coupon and "Partner Coupon" in coupon

        service = _usage(page.text, g["service"])
        assert f"WO-{g['service']:08d}" in service and "call you within 2 working days" in service

        failed = _usage(page.text, g["failed"])
        assert f"quote benefit number {g['failed']}" in failed

    def test_a_revealed_card_code_has_a_copy_button(
        self, client: TestClient, me: Subscriber
    ) -> None:
        page = client.get("/h5/benefits")
        r = client.post(
            f"/h5/benefits/{me.grants['card']}/reveal", data={"csrf_token": csrf_of(page.text)}
        )
        card = _usage(r.text, me.grants["card"])
        assert f'id="card-code-{me.grants["card"]}">{me.code}<' in card
        assert f'data-copy-from="card-code-{me.grants["card"]}"' in card

    def test_the_instructions_are_in_chinese_too(self, client: TestClient, me: Subscriber) -> None:
        page = client.get("/h5/benefits", headers={"accept-language": "zh-CN"})
        service = _usage(page.text, me.grants["service"])
        assert "工单号" in service and "2 个工作日内" in service
        assert "充值号码" in _usage(page.text, me.grants["pending"])
        assert "到账号码" in _usage(page.text, me.grants["recharge"])
        assert "券码" in _usage(page.text, me.grants["coupon"])
