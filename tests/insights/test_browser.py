"""The evaluation page in headless Chromium: both charts draw, with no script errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from perkflow.db import make_engine, make_session_factory
from perkflow.main import create_app
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.insights.test_service import _run_campaign
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[str, int]]:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    with make_session_factory(engine)() as s:
        campaign_id = _run_campaign(s).id
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    yield server.url, campaign_id
    server.stop()
    engine.dispose()


def test_both_charts_draw(live: tuple[str, int]) -> None:
    url, campaign_id = live
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(locale="en-US")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/login?next=/console/campaigns/{campaign_id}/evaluation")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/console/campaigns/{campaign_id}/evaluation")
        for chart in ("#chart-cumulative", "#chart-uplift"):
            expect(page.locator(chart)).to_have_attribute("data-rendered", "1")
            expect(page.locator(f"{chart} canvas")).to_have_count(1)
        expect(page.locator("#variants .not-significant")).to_have_count(1)
        assert errors == []
        browser.close()
