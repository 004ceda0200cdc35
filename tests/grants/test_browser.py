"""Headless Chromium: a subscriber opens "my benefits" by a one-click link and reveals a code."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright
from sqlalchemy import select

from perkflow.catalog.rules import FulfilmentKind
from perkflow.db import make_engine, make_session_factory
from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.factories import make_benefit, make_partner, make_subscribers
from tests.grants.helpers import ZONE, add_card_codes
from tests.live import LiveServer
from tests.web.test_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser


@dataclass
class Live:
    url: str
    link: str
    grant_id: int
    code: str
    ledger_url: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("grants-live-home")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        [sid] = make_subscribers(s, vault, [("13712345678", "GD", "GD01")])
        benefit = make_benefit(s, partner=make_partner(s), kind=FulfilmentKind.CARD_CODE)
        [code] = add_card_codes(s, vault, benefit=benefit, n=1)
        grant = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=sid,
            benefit_id=benefit.id,
            source="campaign",
            idempotency_key="browser-1",
            zone=ZONE,
        ).grant
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone="13712345678")
        s.commit()
    server = LiveServer(create_app(settings, engine=engine))
    url = server.url
    yield Live(
        url=url,
        link=f"{url}/h5/enter?t={signed}",
        grant_id=grant.id,
        code=code,
        ledger_url=settings.ledger_url,
    )
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_subscriber_reveals_a_card_code_in_my_benefits(browser: Browser, live: Live) -> None:
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = context.new_page()
    page.goto(live.link)
    page.click("#my-benefits-link")
    page.wait_for_url(f"{live.url}/h5/benefits")
    item = page.locator(f"#grant-{live.grant_id}")
    expect(item).to_contain_text("视频会员月卡")
    expect(item).to_contain_text("已发放")
    expect(page.locator(f"#code-{live.grant_id}")).to_have_count(0)
    page.click(f"#reveal-{live.grant_id}")
    expect(page.locator(f"#code-{live.grant_id}")).to_contain_text(live.code)
    context.close()
    engine = make_engine(live.ledger_url)
    with make_session_factory(engine)() as s:
        actions = s.scalars(select(AuditEntry.action)).all()
    engine.dispose()
    assert actions.count("grant.reveal_code") == 1
