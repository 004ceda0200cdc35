"""Security headers: the Content-Security-Policy the pages work under, and `Secure` cookies."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from sqlalchemy.engine import Engine

from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import SecurityHeaders, create_app
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from perkflow.synth.service import generate_operator
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_staff
from tests.live import LiveServer
from tests.web.helpers import sign_in

TEMPLATES = Path(str(resources.files("perkflow").joinpath("web/templates")))


def _directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_every_page_and_answer_carries_the_policy(client: TestClient) -> None:
    for path in ("/login", "/console", "/h5", "/healthz", "/v1/grants/1", "/static/app.js"):
        r = client.get(path, follow_redirects=False)
        policy = _directives(r.headers["content-security-policy"])
        assert policy["script-src"] == ["'self'"], path  # no inline script, no eval
        assert policy["object-src"] == ["'none'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["base-uri"] == ["'self'"]
        assert policy["form-action"] == ["'self'"]
        assert r.headers["x-frame-options"] == "DENY"
    # Swagger UI comes from its CDN: only /docs allows it.
    docs = _directives(client.get("/docs").headers["content-security-policy"])
    assert "https://cdn.jsdelivr.net" in docs["script-src"]


def test_templates_hold_nothing_the_policy_would_refuse() -> None:
    handler = re.compile(r"<[^>]*\s(on[a-z]+|hx-on[:\w-]*)\s*=", re.IGNORECASE)
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)([^>]*)>", re.IGNORECASE)
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        assert not handler.search(text), f"{path}: an inline event handler"
        assert "javascript:" not in text, path
        for attrs in inline_script.findall(text):
            # Inline blocks are data for the page scripts, which the browser never runs.
            assert 'type="application/json"' in attrs, f"{path}: an inline script"


def _login_headers(settings: Settings, engine: Engine, *, secure: bool) -> Any:
    app = create_app(
        settings.model_copy(update={"database_url": str(engine.url), "cookie_secure": secure}),
        engine=engine,
    )
    with TestClient(app, base_url="https://127.0.0.1") as c:
        return c.get("/login").headers


def _session_cookie(settings: Settings, engine: Engine, *, secure: bool) -> str:
    return str(_login_headers(settings, engine, secure=secure)["set-cookie"])


def test_the_session_cookie_is_secure_when_served_over_https(
    settings: Settings, web_engine: Engine
) -> None:
    secure = _session_cookie(settings, web_engine, secure=True)
    plain = _session_cookie(settings, web_engine, secure=False)
    assert secure.startswith("perkflow_session=") and plain.startswith("perkflow_session=")
    flags = lambda cookie: {f.strip().lower() for f in cookie.split(";")[1:]}  # noqa: E731
    assert "secure" in flags(secure) and "httponly" in flags(secure)
    assert "samesite=lax" in flags(secure)
    assert "secure" not in flags(plain)


def test_browsers_are_told_to_keep_to_https_only_when_served_over_it(
    settings: Settings, web_engine: Engine
) -> None:
    hsts = _login_headers(settings, web_engine, secure=True).get("strict-transport-security")
    assert hsts is not None and "max-age=31536000" in hsts
    assert "strict-transport-security" not in _login_headers(settings, web_engine, secure=False)


def test_a_signed_in_console_over_http_keeps_working_by_default(
    client: TestClient, web_engine: Engine
) -> None:
    with make_session_factory(web_engine)() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "admin")
    assert client.get("/console", follow_redirects=False).status_code == 200


# ---- in Chromium ---------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
# Every violation the page sees, whatever reports it (the event also catches inline styles).
COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    home = tmp_path_factory.mktemp("csp-home")
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
            n=600,
            seed=9,
        )
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    yield server.url
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium not found: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.browser
def test_the_console_runs_under_its_policy_without_a_violation(
    browser: Browser, live_url: str
) -> None:
    context = browser.new_context(locale="zh-CN")
    context.add_init_script(COLLECT)
    page: Page = context.new_page()
    console: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text or msg.type == "error":
            console.append(msg.text)

    page.on("console", on_console)
    seen: list[str] = []

    def violations() -> list[str]:
        found = page.evaluate("window.__csp || []")
        seen.extend(found)
        return found

    page.goto(f"{live_url}/console")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_url}/console")
    assert (
        SecurityHeaders.POLICY.decode()
        in (page.request.get(f"{live_url}/console").headers["content-security-policy"])
    )
    # The dashboard's ECharts charts draw (canvas) from the data blocks.
    for chart in ("#chart-province", "#chart-status", "#chart-plan"):
        expect(page.locator(chart)).to_have_attribute("data-rendered", "1")
        assert page.locator(f"{chart} canvas").count() >= 1
    violations()

    # htmx: the segment builder's live preview is swapped in, its chart drawn; a rule is
    # removed by a script listener (it was an hx-on attribute, which needs eval).
    page.goto(f"{live_url}/console/segments/new")
    count = page.locator("#segment-count")
    expect(count).not_to_have_text("–", timeout=10_000)
    everyone = count.inner_text()
    rows = page.locator("#rules .rule")
    page.click("#add-rule")
    expect(rows).to_have_count(1)
    rule = rows.nth(0)
    rule.locator("select.rule-column").select_option("province_code")
    rule.locator("select.rule-op").select_option("in")
    rule.locator("input.rule-value").fill("GD")
    rule.locator("input.rule-value").press("Tab")
    expect(count).not_to_have_text(everyone, timeout=10_000)
    expect(page.locator("#preview-province")).to_have_attribute("data-rendered", "1")
    rule.locator(".rule-remove").click()
    expect(rows).to_have_count(0)
    expect(count).to_have_text(everyone, timeout=10_000)
    violations()

    # A region page: its charts too.
    page.goto(f"{live_url}/console/regions/GD")
    expect(page.locator("#chart-city")).to_have_attribute("data-rendered", "1")
    violations()
    context.close()
    assert seen == [] and [m for m in console if "Content Security Policy" in m] == []
