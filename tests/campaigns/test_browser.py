"""A campaign in headless Chromium: create, approve, test wave, its evaluation, roll out."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import CampaignContact
from perkflow.db import make_engine, make_session_factory
from perkflow.kit import clock
from perkflow.main import create_app
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from tests.campaigns.helpers import everyone, write_profile
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@dataclass
class Live:
    url: str
    sessions: sessionmaker[Session]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("campaigns-live")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    sessions = make_session_factory(engine)
    mart = Mart(settings.mart_dir)
    write_profile(mart, 200)  # odd ids in GD on 129 yuan, even ids in ZJ on 59 yuan
    with sessions() as s:
        everyone(s, mart)
        make_staff(s, username="gd.marketer", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="hq.approver", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    yield Live(url=server.url, sessions=sessions)
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def signed_in(browser: Browser, live: Live, username: str, locale: str) -> Page:
    page = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{live.url}/login?next=/console/campaigns")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/console/campaigns")
    return page


def record_test_wave_responses(sessions: sessionmaker[Session], campaign_id: int) -> None:
    """Most of the target cell claims, a few of the control: a clear effect to read."""
    at = clock.now() + timedelta(minutes=5)
    with sessions() as s:
        rows = s.scalars(
            select(CampaignContact)
            .where(CampaignContact.campaign_id == campaign_id)
            .order_by(CampaignContact.id)
        ).all()
        for i, c in enumerate(rows):
            if (c.cell == "target" and i % 5) or (c.cell == "control" and i % 5 == 0):
                campaigns.record_response(
                    s,
                    actor=SYSTEM,
                    subscriber_id=c.subscriber_id,
                    kind="claim",
                    occurred_at=at,
                    idempotency_key=f"browser-{c.id}",
                    source="test",
                )
        s.commit()


def test_create_approve_test_wave_evaluation_and_rollout(browser: Browser, live: Live) -> None:
    # A province marketer builds the campaign in the wizard and submits it.
    marketer = signed_in(browser, live, "gd.marketer", "en-US")
    marketer.click("#nav-campaigns")
    marketer.click("#new-campaign")
    marketer.fill("#f-name", "Video month for big plans")
    marketer.select_option("#f-segment", label="Everyone (National)")
    expect(marketer.locator("#segment-size-count")).to_have_text("100")  # GD's half, live
    # Controls enough that the test wave's cells are never too small to read (about 25 of 50).
    marketer.fill("#f-control", "50")
    marketer.fill("#f-test", "50")
    marketer.fill("#f-budget", "800")
    rows = marketer.locator(".variant-row")
    expect(rows).to_have_count(2)
    marketer.click("#add-variant")
    expect(rows).to_have_count(3)  # an untouched extra row is ignored on save
    first, second = rows.nth(0), rows.nth(1)
    first.locator("[name=v_subject]").fill("{{ offer_name }}")
    first.locator("[name=v_body]").fill("Your {{ plan_fee_yuan }}-yuan plan earns a gift")
    first.locator("[name=v_match_column]").select_option("plan_fee_yuan")
    first.locator("[name=v_match_op]").select_option(">=")
    first.locator("[name=v_match_value]").fill("100")
    second.locator("[name=v_subject]").fill("Hello")
    second.locator("[name=v_body]").fill("A gift for {{ nickname }}")
    marketer.click("#save-campaign")
    expect(marketer.locator("#save-errors")).to_contain_text("variants[1].body")
    expect(marketer.locator("#f-name")).to_have_value("Video month for big plans")
    marketer.locator(".variant-row").nth(1).locator("[name=v_body]").fill("A gift for you")
    marketer.click("#save-campaign")
    expect(marketer.locator("#campaign-status")).to_have_attribute("data-status", "draft")
    expect(marketer.locator("#variant-A")).to_contain_text("{{ plan_fee_yuan }}")
    campaign_id = int(marketer.url.rstrip("/").rsplit("/", 1)[1])
    marketer.click("#submit-campaign")
    expect(marketer.locator("#awaiting-approval")).to_be_visible()

    # HQ approves it from the approval queue (in Chinese).
    approver = signed_in(browser, live, "hq.approver", "zh-CN")
    approver.click("#approval-queue-link")
    expect(approver.locator("h1")).to_contain_text("审批队列")
    approver.locator(f"#approval-{campaign_id} input[name=note]").first.fill("同意试点")
    approver.click(f"#approve-{campaign_id}")
    expect(approver.locator("#queue-empty")).to_be_visible()
    approver.context.close()

    # The marketer starts the test wave and dispatches it from the monitor.
    marketer.reload()
    marketer.click("#start-campaign")
    expect(marketer.locator("#wave-test")).to_be_visible()
    marketer.click("#dispatch-now")
    expect(marketer.locator("#dispatch-started")).to_be_visible()
    expect(marketer.locator("#wave-test")).to_have_attribute(
        "data-wave-status", "done", timeout=15_000
    )
    assert int(marketer.locator("#test-delivered").inner_text().replace(",", "")) > 0
    assert int(marketer.locator("#test-held").inner_text().replace(",", "")) > 0

    # Responses come in; the test wave's evaluation stands beside the Roll out button.
    record_test_wave_responses(live.sessions, campaign_id)
    marketer.click("#campaign-link")
    evaluation, rollout = marketer.locator("#test-evaluation"), marketer.locator("#rollout")
    expect(evaluation.locator("#test-cell-target")).to_be_visible()
    expect(evaluation.locator("#test-verdict")).to_have_text("significant")
    assert evaluation.locator("#test-p").inner_text() != "—"
    left, right = evaluation.bounding_box(), rollout.bounding_box()
    assert left and right and left["x"] < right["x"] and abs(left["y"] - right["y"]) < 40
    marketer.click("#test-evaluation-link")  # the full report, then back to decide
    expect(marketer.locator("#cell-target")).to_be_visible()
    marketer.go_back()
    marketer.fill("#rollout-note", "Test wave uplift is significant; rolling out")
    marketer.check("#rollout-confirm")
    # The response window is still open, so the gate refuses unless overridden on the record.
    marketer.check("#rollout-against-evidence")
    marketer.click("#rollout-campaign")

    # The monitor shows the rollout wave; dispatching it finishes the campaign.
    expect(marketer.locator("#wave-rollout")).to_be_visible()
    marketer.click("#dispatch-now")
    expect(marketer.locator("#monitor-status")).to_have_attribute(
        "data-status", "finished", timeout=15_000
    )
    assert int(marketer.locator("#rollout-delivered").inner_text().replace(",", "")) > 0
    marketer.click("#campaign-link")
    expect(marketer.locator("#audit-trail")).to_contain_text("Test wave uplift is significant")
    expect(marketer.locator("#audit-trail")).to_contain_text("同意试点")
    marketer.context.close()
