"""Headless Chromium on a phone-width screen: the H5 tab bar, nothing overlapping or scrolling
sideways, every tab opening its page, and the unread count following a mark-read in place."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy.engine import Engine

from perkflow.catalog.rules import Category, FulfilmentKind
from perkflow.channels import service as channels
from perkflow.db import make_engine, make_session_factory
from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.coupons.factories import make_batch
from tests.factories import make_benefit, make_partner, make_subscribers
from tests.grants.helpers import ZONE, add_card_codes
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser

PHONE = "13712345678"
TABS = {
    "home": "/h5",
    "benefits": "/h5/benefits",
    "coupons": "/h5/coupons",
    "wallet": "/h5/wallet",
    "inbox": "/h5/inbox",
}
PAGES = [*TABS.values(), "/h5/member", "/h5/envelopes"]
WIDTHS = [390, 320]
LOCALES = ["zh-CN", "en"]


@dataclass
class Live:
    url: str
    engine: Engine
    vault: Vault

    def link(self) -> str:
        """A fresh one-click link (each works once)."""
        with make_session_factory(self.engine)() as s:
            _, signed = subscribers.issue_login_token(
                s, actor=SYSTEM, vault=self.vault, phone=PHONE
            )
            s.commit()
        return f"{self.url}/h5/enter?t={signed}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("h5-live-home")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        [sid] = make_subscribers(s, vault, [(PHONE, "GD", "GD01")])
        for name, kind, category in [
            ("card", FulfilmentKind.CARD_CODE, Category.MUSIC),
            ("coupon", FulfilmentKind.COUPON, Category.FOOD_DRINK),
            ("service", FulfilmentKind.SERVICE, Category.TELECOM),
        ]:
            benefit = make_benefit(
                s,
                partner=make_partner(s, code=f"partner-{name}"),
                code=f"b-{name}",
                kind=kind,
                category=category,
            )
            if kind == FulfilmentKind.CARD_CODE:
                add_card_codes(s, vault, benefit=benefit, n=1)
            grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit.id,
                source="campaign",
                idempotency_key=f"h5-{name}",
                zone=ZONE,
            )
        batch = make_batch(s)
        for i in range(3):
            channels.post_system_message(
                s,
                subscriber_id=sid,
                title=f"满50减10 · {i}",
                body="广东专享：满50减10券，点击领取。",
                link=f"/h5/coupons#offer-{batch.id}",
            )
        s.commit()
    server = LiveServer(create_app(settings, engine=engine))
    yield Live(url=server.url, engine=engine, vault=vault)
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _phone(browser: Browser, live: Live, *, width: int, locale: str) -> Page:
    context = browser.new_context(
        locale=locale, viewport={"width": width, "height": 740}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.goto(live.link())
    page.wait_for_url(f"{live.url}/h5")
    return page


# Boxes of the elements matched, whether each one's label is clipped, and on how many lines its
# text is laid out (the distinct tops of the text's line boxes: 2 means it broke).
_BOXES = """(sel) => [...document.querySelectorAll(sel)].map(e => {
  const r = e.getBoundingClientRect();
  const label = e.querySelector('.tab-label') || e;
  const range = document.createRange();
  range.selectNodeContents(label);
  const rects = [...range.getClientRects()].filter(q => q.width > 0);
  const tops = new Set(rects.map(q => Math.round(q.top)));
  const t = range.getBoundingClientRect();
  return {x: r.left, y: r.top, w: r.width, h: r.height, text: e.textContent.trim(),
          fits: label.scrollWidth <= label.clientWidth + 1, lines: tops.size,
          tx: t.left, ty: t.top, tw: t.width, th: t.height};
})"""
# Texts side by side closer than this read as one word ("我的账户会员中心").
MIN_GAP_PX = 6


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] - 0.5
        and b["x"] < a["x"] + a["w"] - 0.5
        and a["y"] < b["y"] + b["h"] - 0.5
        and b["y"] < a["y"] + a["h"] - 0.5
    )


def _assert_apart(page: Page, selector: str) -> None:
    boxes = page.evaluate(_BOXES, selector)
    assert boxes, f"nothing matches {selector} on {page.url}"
    for i, a in enumerate(boxes):
        assert a["fits"] and a["lines"] == 1, (page.url, a)
        for b in boxes[i + 1 :]:
            assert not _overlaps(a, b), (page.url, a, b)
            same_row = a["ty"] < b["ty"] + b["th"] and b["ty"] < a["ty"] + a["th"]
            if same_row:
                gap = max(b["tx"] - (a["tx"] + a["tw"]), a["tx"] - (b["tx"] + b["tw"]))
                assert gap >= MIN_GAP_PX, (page.url, a["text"], b["text"], gap)


def _assert_no_sideways_scroll(page: Page) -> None:
    wide, inner = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert wide <= inner, f"{page.url}: {wide}px wide on a {inner}px screen"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_tab_bar_opens_every_tab_and_nothing_overlaps(
    browser: Browser, live: Live, width: int, locale: str
) -> None:
    page = _phone(browser, live, width=width, locale=locale)
    for key, path in TABS.items():
        bar = page.locator("#h5-tabs")
        expect(bar).to_be_visible()
        # Fixed at the bottom of the screen, across its whole width.
        box = bar.bounding_box()
        assert box is not None
        assert abs(box["y"] + box["height"] - 740) <= 1 and abs(box["width"] - width) <= 1
        page.click(f"#tab-{key}")
        page.wait_for_url(f"{live.url}{path}")
        expect(page.locator(f"#tab-{key}")).to_have_attribute("aria-current", "page")
        _assert_apart(page, "#h5-tabs .tab")
        _assert_no_sideways_scroll(page)
    page.context.close()


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_scrolls_sideways_and_its_links_stay_apart(
    browser: Browser, live: Live, width: int, locale: str
) -> None:
    page = _phone(browser, live, width=width, locale=locale)
    _assert_apart(page, "#h5-shortcuts a")
    for path in PAGES:
        page.goto(f"{live.url}{path}")
        _assert_no_sideways_scroll(page)
        if page.locator(".subnav a").count():
            _assert_apart(page, ".subnav a")
        # The last line of the page is not hidden under the tab bar.
        page.evaluate("() => window.scrollTo(0, document.scrollingElement.scrollHeight)")
        last = page.locator("main .langs").bounding_box()
        bar = page.locator("#h5-tabs").bounding_box()
        assert last is not None and bar is not None
        assert last["y"] + last["height"] <= bar["y"] + 1, path
    page.context.close()


def test_marking_read_updates_the_count_in_place(browser: Browser, live: Live) -> None:
    page = _phone(browser, live, width=390, locale="zh-CN")
    page.click("#tab-inbox")
    page.wait_for_url(f"{live.url}/h5/inbox")
    unread = page.locator("#inbox-unread")
    before = int(unread.inner_text().split()[0])
    assert before >= 1
    expect(page.locator("#h5-tabs #inbox-unread-count")).to_have_text(str(before))
    # A mark on this document: a reload would start a new one without it.
    page.evaluate("() => { window.stayed = true; }")
    page.locator("[id^=read-]").first.click()
    # No reload: the line and the tab's badge follow the click.
    expect(unread).to_have_text(f"{before - 1} 条未读")
    assert page.evaluate("() => window.stayed === true")
    if before > 1:
        expect(page.locator("#h5-tabs #inbox-unread-count")).to_have_text(str(before - 1))
    else:
        expect(page.locator("#h5-tabs #inbox-unread-count")).to_have_count(0)
    # The claim message's button opens the claim center at its offer.
    page.locator("a.btn.claim").first.click()
    page.wait_for_url(f"{live.url}/h5/coupons#offer-*")
    expect(page.locator("#tab-coupons")).to_have_attribute("aria-current", "page")
    page.context.close()


def test_a_card_code_is_masked_until_tapped(browser: Browser, live: Live) -> None:
    page = _phone(browser, live, width=320, locale="zh-CN")
    page.click("#tab-benefits")
    page.wait_for_url(f"{live.url}/h5/benefits")
    card = page.locator(".usage-card_code")
    expect(card).to_contain_text("••••")
    card.locator("button[id^=reveal-]").click()
    expect(page.locator(".usage-card_code .secret").first).not_to_contain_text("••••")
    expect(page.locator(".usage-card_code button[data-copy-from]")).to_be_visible()
    expect(page.locator(".usage-service")).to_contain_text("2 个工作日内")
    _assert_no_sideways_scroll(page)
    page.context.close()
