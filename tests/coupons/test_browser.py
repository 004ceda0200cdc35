"""Claim, show the QR, redeem at the counter: real Chromium against a live server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from perkflow.coupons.pages import qr_svg
from perkflow.db import make_engine, make_session_factory
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.coupons.factories import make_batch
from tests.factories import PASSWORD, make_staff, make_subscribers
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser
PHONE = "13812345678"


@dataclass
class Live:
    url: str
    link: str
    # Each one-click link works once: a second browser context enters with its own.
    second_link: str
    batch_id: int
    soon_id: int


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("coupons-live")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        make_staff(s, username="gz.clerk", role=Role.CLERK, region="GD01S1")
        make_subscribers(s, vault, [(PHONE, "GD", "GD01")])
        batch = make_batch(s, name_zh="满50减10", name_en="10 off 50", flash_sale=True)
        soon = make_batch(
            s,
            name_zh="秒杀券",
            name_en="Flash coupon",
            flash_sale=True,
            claim_starts_at=clock.now() + timedelta(seconds=4),
        )
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE)
        _, second = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE)
        s.commit()
    server = LiveServer(create_app(settings, engine=engine))
    url = server.url
    yield Live(
        url=url,
        link=f"{url}/h5/enter?t={signed}",
        second_link=f"{url}/h5/enter?t={second}",
        batch_id=batch.id,
        soon_id=soon.id,
    )
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def claimed_code(browser: Browser, live: Live) -> str:
    """A subscriber opens the H5 link, claims in the claim center and shows the QR."""
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = context.new_page()
    page.goto(live.link)
    page.click("#claim-center-link")
    expect(page.locator("h1")).to_have_text("领券中心")
    page.click(f"#claim-{live.batch_id}")
    expect(page.locator("#claimed")).to_contain_text("领取成功")
    expect(page.locator("#coupon-qr svg")).to_be_visible()
    code = page.locator("#coupon-code").inner_text().strip()
    assert len(code) == 10
    context.close()
    return code


def _clerk(browser: Browser, live: Live) -> Page:
    context = browser.new_context(locale="zh-CN", viewport={"width": 414, "height": 896})
    page = context.new_page()
    page.goto(f"{live.url}/clerk")
    page.fill("#username", "gz.clerk")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/clerk")
    return page


def test_subscriber_claims_and_shows_the_qr(claimed_code: str) -> None:
    assert claimed_code.isalnum()


def test_clerk_redeems_it_and_a_second_redemption_is_refused(
    browser: Browser, live: Live, claimed_code: str
) -> None:
    page = _clerk(browser, live)
    page.fill("#code", claimed_code.lower())
    page.click("#lookup-form button[type=submit]")
    expect(page.locator("#card-phone")).to_have_text("138****5678")
    page.fill("#order", "88")
    page.click("#confirm")
    expect(page.locator("#result")).to_contain_text("核销成功")
    expect(page.locator("#today tbody tr")).to_have_count(1)
    page.fill("#code", claimed_code)
    page.click("#lookup-form button[type=submit]")
    expect(page.locator("#result")).to_have_attribute("data-reason", "already_redeemed")
    expect(page.locator("#result")).to_contain_text("已核销")
    page.context.close()


def test_vendored_scanner_decodes_our_qr(browser: Browser, live: Live) -> None:
    page = _clerk(browser, live)
    svg = str(qr_svg("PFSCAN2345")).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    decoded = page.evaluate(
        """async (svg) => {
            const img = new Image();
            img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
            await img.decode();
            const c = document.createElement("canvas");
            c.width = img.width * 2; c.height = img.height * 2;
            const ctx = c.getContext("2d");
            ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
            ctx.drawImage(img, 0, 0, c.width, c.height);
            const data = ctx.getImageData(0, 0, c.width, c.height);
            const found = jsQR(data.data, data.width, data.height);
            return found ? found.data : null;
        }""",
        svg,
    )
    assert decoded == "PFSCAN2345"
    page.context.close()


def test_flash_sale_countdown_enables_the_button(browser: Browser, live: Live) -> None:
    context = browser.new_context(locale="en", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(live.second_link)
    page.goto(f"{live.url}/h5/coupons")
    button = page.locator(f"#claim-{live.soon_id}")
    if button.is_disabled():
        expect(button).to_have_text("Not started")
    expect(button).to_be_enabled(timeout=10_000)
    expect(button).to_have_text("Claim now")
    context.close()
