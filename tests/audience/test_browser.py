"""The segment builder in headless Chromium: build a segment by clicking, watch the count, save."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from perkflow.synth.service import generate_operator
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    home = tmp_path_factory.mktemp("audience-home")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        generate_operator(
            s,
            mart=Mart(settings.mart_dir),
            truth_dir=settings.truth_dir,
            vault=vault,
            n=3000,
            seed=5,
        )
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    yield server.url
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN")
    pg = context.new_page()
    yield pg
    context.close()


def _count(page: Page) -> int:
    return int(page.locator("#segment-count").inner_text().replace(",", ""))


def _count_other_than(page: Page, old: int) -> int:
    """The live count once it shows a number other than `old` (rows pass through invalid states
    while being filled in: the preview then shows the error and a dash)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = page.locator("#segment-count").inner_text().replace(",", "")
        if text.isdigit() and int(text) != old:
            return int(text)
        page.wait_for_timeout(100)
    raise AssertionError(f"the count stayed at {old}: {page.locator('#preview').inner_text()}")


def test_build_a_segment_by_clicking_see_the_count_change_and_save_it(
    page: Page, live_url: str
) -> None:
    page.goto(f"{live_url}/console")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_url}/console")
    page.click("#nav-segments")
    page.click("#new-segment")
    page.wait_for_url(f"{live_url}/console/segments/new")
    count = page.locator("#segment-count")
    expect(count).not_to_have_text("–", timeout=10_000)
    everyone = _count(page)
    assert 2_500 < everyone <= 3_000  # the default excludes churned and opted-out subscribers
    expect(page.locator("#preview-province")).to_have_attribute("data-rendered", "1")

    rows = page.locator("#rules .rule")
    page.click("#add-rule")
    expect(rows).to_have_count(1)
    rule = rows.nth(0)
    rule.locator("select.rule-column").select_option("province_code")
    rule.locator("select.rule-op").select_option("in")
    rule.locator("input.rule-value").fill("GD")
    rule.locator("input.rule-value").press("Tab")  # a change event: the preview follows
    guangdong = _count_other_than(page, everyone)
    assert 0 < guangdong < everyone
    # The chart of the fragment htmx swapped in is drawn too.
    expect(page.locator("#preview-province")).to_have_attribute("data-rendered", "1")
    assert page.locator("#preview-province canvas").count() >= 1

    page.click("#add-rule")
    expect(rows).to_have_count(2)  # htmx appends the row asynchronously
    second = rows.nth(1)
    second.locator("select.rule-column").select_option("plan_fee_yuan")
    second.locator("select.rule-op").select_option(">=")
    second.locator("input.rule-value").fill("99")
    second.locator("input.rule-value").press("Tab")
    narrowed = _count_other_than(page, guangdong)
    assert narrowed < guangdong

    page.fill("#segment-name", "广东高套餐")
    page.click("#save-segment")
    page.wait_for_url(f"{live_url}/console/segments/1")
    expect(page.locator("#segment-title")).to_contain_text("广东高套餐")
    expect(page.locator("#segment-title")).to_contain_text("v1")
    expect(page.locator("#versions tbody tr")).to_have_count(1)
    expect(count).to_have_text(f"{narrowed:,}", timeout=10_000)
