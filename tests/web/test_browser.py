"""The console and H5 pages in real headless Chromium, driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff, make_subscribers
from tests.live import LiveServer

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium not found: `make test` installs Debian's chromium")


@dataclass
class Live:
    url: str
    phone: str
    link: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("live-home")
    shutil.copyfile(sqlite_template, home / "ledger.sqlite3")
    settings = Settings(home=home, secret_key=TEST_SECRET)
    engine = make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_subscribers(
            s,
            vault,
            [
                ("13812345678", "GD", "GD01"),
                ("13912345678", "ZJ", "ZJ01"),
                ("18912345678", "GD", "GD02"),
            ],
        )
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone="13812345678")
        s.commit()
    server = LiveServer(create_app(settings, engine=engine))
    url = server.url
    yield Live(url=url, phone="13812345678", link=f"{url}/h5/enter?t={signed}")
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


def _sign_in(page: Page, live: Live, username: str) -> None:
    page.goto(f"{live.url}/console")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/console")


def test_sign_in_see_chart_and_switch_language(page: Page, live: Live) -> None:
    _sign_in(page, live, "admin")
    expect(page.locator("h1")).to_contain_text("今日运营")
    expect(page.locator("h2.section")).to_contain_text("用户")
    expect(page.locator("#total")).to_have_text("3")
    chart = page.locator("#chart-province")
    expect(chart).to_have_attribute("data-rendered", "1")
    # ECharts draws onto a canvas inside the chart element.
    assert chart.locator("canvas").count() >= 1
    page.click("#lang-en")
    expect(page.locator("h1")).to_contain_text("Today's operations")
    expect(page.locator("h2.section")).to_contain_text("Subscribers")
    expect(page.locator("nav")).to_contain_text("Audit log")


def test_echarts_is_fetched_only_by_a_page_with_a_chart(page: Page, live: Live) -> None:
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(f"{live.url}/login")
    page.wait_for_load_state("load")
    assert f"{live.url}/static/vendor/htmx.min.js" in fetched
    assert not [u for u in fetched if "echarts" in u]
    _sign_in(page, live, "admin")  # the dashboard has charts
    expect(page.locator("#chart-province")).to_have_attribute("data-rendered", "1")
    assert [u for u in fetched if u.endswith("/static/vendor/echarts.min.js")] == [
        f"{live.url}/static/vendor/echarts.min.js"
    ]


def test_province_marketer_gets_403_for_another_province(page: Page, live: Live) -> None:
    _sign_in(page, live, "gd")
    expect(page.locator("#total")).to_have_text("2")
    response = page.goto(f"{live.url}/console/regions/ZJ")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("无权访问")
    response = page.goto(f"{live.url}/console/regions/GD")
    assert response is not None and response.status == 200


def test_wrong_password_shows_an_error(page: Page, live: Live) -> None:
    page.goto(f"{live.url}/login")
    page.fill("#username", "admin")
    page.fill("#password", "not-the-password-1")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("用户名或密码错误")


def test_subscriber_opens_h5_through_one_click_link(browser: Browser, live: Live) -> None:
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = context.new_page()
    page.goto(live.link)
    expect(page.locator("#my-phone")).to_have_text("138****5678")
    expect(page.locator(".hero")).to_contain_text("广东省")
    context.close()
