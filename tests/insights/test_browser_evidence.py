"""The evaluation page in headless Chromium shows its evidence: planned sample, sequential
verdict, adjusted p-values, and "not enough data" for a variant whose control cell is empty."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy.orm import Session

from perkflow.campaigns.models import Campaign
from perkflow.db import make_engine, make_session_factory
from perkflow.main import create_app
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.insights.test_service import _campaign, _contacts, _wave
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


def _with_an_empty_cell(session: Session) -> Campaign:
    campaign = _campaign(session)
    test = _wave(session, campaign, "test")
    _contacts(session, campaign, test, cell="target", variant="A", province="GD", n=200,
              responders=60, first_id=1)  # fmt: skip
    _contacts(session, campaign, test, cell="control", variant="A", province="GD", n=100,
              responders=10, first_id=1_000)  # fmt: skip
    # Variant C's own control cell is empty: there is nothing to compare it with.
    _contacts(session, campaign, test, cell="target", variant="C", province="GD", n=30,
              responders=6, first_id=2_000)  # fmt: skip
    return campaign


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[str, int]]:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    with make_session_factory(engine)() as s:
        campaign_id = _with_an_empty_cell(s).id
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    yield server.url, campaign_id
    server.stop()
    engine.dispose()


def test_the_evaluation_page_shows_its_evidence(live: tuple[str, int]) -> None:
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
        # The planned sample and the progress to it.
        expect(page.locator("#planned-sample")).to_be_visible()
        expect(page.locator("#planned-control")).to_have_text("100")
        needed = int(page.locator("#planned-needed").inner_text().replace(",", ""))
        assert needed > 100
        expect(page.locator("#planned-progress")).to_have_text(f"{100 / needed:.0%}")
        expect(page.locator("#p-preliminary")).to_be_visible()
        # The sequential verdict, the one the rollout gate reads.
        expect(page.locator("#sequential-verdict")).to_be_visible()
        verdict = page.locator("#sequential-verdict")
        assert verdict.get_attribute("data-rejects") in ("yes", "no")
        assert verdict.inner_text().strip() in ("effect shown", "no effect shown yet")
        expect(page.locator("#sequential-p")).not_to_have_text("—")
        # Adjusted p-values beside the raw ones, and which one the badge reads.
        expect(page.locator("#variants-adjustment")).to_contain_text("adjusted p-value")
        a = page.locator('#variants tr[data-variant="A"] .adjusted-p')
        expect(a).to_be_visible()
        assert a.inner_text().strip() != "—"
        # Variant C has no control rows: not enough data, no p-value, no "significant".
        c = page.locator('#variants tr[data-variant="C"]')
        expect(c.locator(".not-enough-data")).to_have_text("not enough data")
        expect(c.locator(".adjusted-p")).to_have_text("—")
        expect(c.locator(".badge.sig")).to_have_count(0)
        assert errors == []
        browser.close()
