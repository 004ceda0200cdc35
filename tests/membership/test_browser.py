"""A subscriber opens the member center, sees the tier card and picks this month's benefit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.membership import service as membership
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.factories import make_subscribers
from tests.live import LiveServer
from tests.membership.helpers import ZONE, default_program
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser
PHONE = "13912345678"


@pytest.fixture
def link(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    home = tmp_path / "member-live"
    home.mkdir()
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        default_program(s, vault)
        [sid] = make_subscribers(s, vault, [(PHONE, "GD", "GD01")], plan_fee_fen=9900)
        membership.evaluate_member(
            s, actor=SYSTEM, subscriber_id=sid, reason="load", source="test", zone=ZONE
        )
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE)
        s.commit()
    server = LiveServer(create_app(settings, engine=engine))
    yield f"{server.url}/h5/enter?t={signed}"
    server.stop()
    engine.dispose()


def test_subscriber_sees_the_tier_card_and_picks_this_months_video_vip(link: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True
        )
        page = context.new_page()
        page.goto(link)
        page.click("#member-center-link")
        expect(page.locator("#tier-name")).to_have_text("银卡会员")
        expect(page.locator("#bundle-value")).to_contain_text("¥2,835.00")
        expect(page.locator("#how-to-upgrade")).to_contain_text("¥169")
        buttons = page.locator("#pick-video ~ ul button")
        expect(buttons).to_have_count(6)
        page.locator("#pick-video ~ ul li").nth(1).locator("button").click()
        expect(page.locator("#pick-done")).to_be_visible()
        expect(page.locator(".picks .badge")).to_have_count(1)
        expect(page.locator("#pick-video ~ ul button")).to_have_count(0)
        page.click("#pick-done a")
        # The pick is a grant like any other: it is in "my benefits" at once.
        expect(page.locator("#my-benefits li.benefit")).to_have_count(1)
        expect(page.locator("#my-benefits li.benefit .name")).to_have_text("爱奇艺月卡")
        browser.close()
