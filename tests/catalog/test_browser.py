"""The catalog console in headless Chromium: create a benefit, list it, import a code pool."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from perkflow.catalog import pages as catalog_pages
from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.catalog.helpers import add_partner
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def catalog_live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    home = tmp_path_factory.mktemp("catalog-live")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    with make_session_factory(engine)() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        add_partner(s, Vault(settings.master_secret), "tv")
    server = LiveServer(create_app(settings, engine=engine))
    yield server.url
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def catalog_browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(catalog_browser: Browser) -> Iterator[Page]:
    context = catalog_browser.new_context(locale="zh-CN")
    pg = context.new_page()
    yield pg
    context.close()


def test_admin_creates_lists_and_fills_a_code_pool(
    page: Page, catalog_live: str, tmp_path: Path
) -> None:
    page.goto(f"{catalog_live}/console")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{catalog_live}/console")

    page.click("#nav-catalog")
    expect(page.locator("h1")).to_contain_text("权益目录")
    page.click("#new-benefit")
    page.fill("#code", "tv-codes")
    page.select_option("#fulfilment_kind", "card_code")
    page.fill("#name_zh", "视频会员月卡")
    page.fill("#name_en", "Video VIP, 1 month")
    page.fill("#face_value", "25")
    page.fill("#cost_price", "12")
    page.fill("#sale_price", "15")
    page.fill("#low_stock_threshold", "5")
    page.click("#save")
    expect(page.locator("#status")).to_have_text("草稿")
    # The grants chart loads its data itself; it ends drawn or saying there is nothing yet.
    expect(page.locator("#chart-grants[data-rendered]")).to_have_count(1)

    page.click("#to-listed")
    expect(page.locator("#status")).to_have_text("已上架")
    expect(page.locator("#low-stock-alert")).to_contain_text("视频会员月卡")

    page.click("#code-pool-link")
    expect(page.locator("#stock")).to_have_text("0 / 0")
    codes = tmp_path / "tv-codes.csv"
    codes.write_text(
        "code,pin,expiry\n" + "".join(f"TV-{i:04d},{i:04d},2099-12-31\n" for i in range(12)),
        encoding="utf-8",
    )
    page.set_input_files("#file", str(codes))
    page.fill("#unit_cost", "9.5")
    page.click("#import")
    expect(page.locator("#import-result")).to_contain_text("12")
    expect(page.locator("#stock")).to_have_text("12 / 12")
    expect(page.locator("#lots")).to_contain_text("tv-codes.csv")
    expect(page.locator("#low-stock-alert")).to_have_count(0)

    # A file above the inline size imports in the background; the page follows it and then
    # shows the outcome.
    more = tmp_path / "more.csv"
    more.write_text("".join(f"MORE-{i:04d}\n" for i in range(30)), encoding="utf-8")
    inline = catalog_pages.INLINE_IMPORT_MAX_BYTES
    catalog_pages.INLINE_IMPORT_MAX_BYTES = 0
    try:
        page.set_input_files("#file", str(more))
        page.fill("#unit_cost", "9.5")
        page.click("#import")
        expect(page.locator("#import-result")).to_contain_text("30")
    finally:
        catalog_pages.INLINE_IMPORT_MAX_BYTES = inline
    expect(page.locator("#stock")).to_have_text("42 / 42")

    page.click("#nav-catalog")
    expect(page.locator("#benefit-table")).to_contain_text("42 / 42")
    expect(page.locator("#benefit-table")).to_contain_text("已上架")
