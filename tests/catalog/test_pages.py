"""Catalog console pages through HTTP: list, editor, status, code import, partners, access."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog import pages as catalog_pages
from perkflow.catalog.models import Benefit, CardCode, Partner
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.org.rules import Role
from tests.catalog.helpers import add_benefit, add_partner
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in

FORM = {
    "name_zh": "视频月卡",
    "name_en": "Video, 1 month",
    "category": "video",
    "face_value": "25.00",
    "cost_price": "12",
    "sale_price": "15.5",
    "validity_kind": "days",
    "valid_days": "30",
    "valid_from": "",
    "valid_until": "",
    "stock": "100",
    "low_stock_threshold": "10",
    "limit_per_month": "1",
    "limit_total": "",
    "revocable": "on",
}


def _setup(web_sessions: sessionmaker[Session], vault: Vault) -> dict[str, int]:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        partner = add_partner(s, vault, "tv")
        direct = add_benefit(s, code="tv-month", stock=8, low_stock_threshold=10)
        codes = add_benefit(s, code="tv-codes", fulfilment_kind="card_code")
        return {"partner": partner.id, "direct": direct.id, "codes": codes.id}


def _audit_count(web_sessions: sessionmaker[Session]) -> int:
    with web_sessions() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry)) or 0


def _post(client: TestClient, url: str, data: dict[str, Any], **kw: Any) -> Any:
    # One token per signed-in session: read it once from a page, then reuse it.
    token = client.__dict__.get("_csrf") or csrf_of(client.get("/console/partners").text)
    client.__dict__["_csrf"] = token
    return client.post(url, data={**data, "csrf_token": token}, follow_redirects=False, **kw)


def test_catalog_list_filters_and_shows_the_low_stock_banner(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "gd")
    page = client.get("/console/benefits")
    assert page.status_code == 200
    assert 'id="nav-catalog"' in page.text and "tv-month" in page.text and "tv-codes" in page.text
    assert 'id="new-benefit"' not in page.text  # provinces read, they do not edit
    assert 'id="low-stock-alert"' not in page.text  # drafts raise no alert
    with web_sessions() as s:
        benefit = s.get(Benefit, ids["direct"])
        assert benefit is not None
        benefit.status = "listed"
        s.commit()
    page = client.get("/console/benefits?category=video&status=listed")
    assert 'id="low-stock-alert"' in page.text and "tv-codes" not in page.text.split("<tbody>")[1]
    assert "8 / 8" in page.text
    page = client.get("/console/benefits?low=true")
    assert ">2<" in page.text.split('id="total"')[1][:10]  # the empty code pool is low too


def test_clerks_do_not_see_the_catalog(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    with web_sessions() as s:
        make_staff(s, username="clerk", role=Role.CLERK, region="GD01S1")
    sign_in(client, "clerk")
    assert client.get("/console/benefits").status_code == 403
    assert 'id="nav-catalog"' not in client.get("/console").text


def test_admin_creates_a_benefit_through_the_form(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    sign_in(client, "admin")
    assert client.get("/console/benefits/new").status_code == 200
    data = {**FORM, "code": "tv-year", "partner_code": "tv", "fulfilment_kind": "direct_recharge"}
    r = _post(client, "/console/benefits", data)
    assert r.status_code == 303, r.text
    with web_sessions() as s:
        b = s.scalar(select(Benefit).where(Benefit.code == "tv-year"))
        assert b is not None
        assert (b.face_value_fen, b.cost_price_fen, b.sale_price_fen) == (2500, 1200, 1550)
        assert (b.stock_total, b.low_stock_threshold, b.limit_per_month, b.limit_total) == (
            100,
            10,
            1,
            None,
        )
        assert b.status == "draft" and b.revocable
    editor = client.get(r.headers["location"])
    assert editor.status_code == 200 and 'value="15.50"' in editor.text
    assert 'data-chart-url="/console/benefits/' in editor.text


def test_a_bad_form_is_422_naming_the_field_and_changes_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    before = _audit_count(web_sessions)
    data = {**FORM, "code": "tv-bad", "partner_code": "tv", "fulfilment_kind": "direct_recharge"}
    r = _post(client, "/console/benefits", {**data, "cost_price": "30"})
    assert r.status_code == 422 and "cost_price_fen" in r.text
    assert 'name="code" id="code" value="tv-bad"' in r.text  # what was typed stays
    r = _post(client, "/console/benefits", {**data, "sale_price": "1.234"})
    assert r.status_code == 422 and "sale_price_fen" in r.text
    r = _post(client, f"/console/benefits/{ids['direct']}", {**FORM, "stock": "-1"})
    assert r.status_code == 422 and 'id="form-error"' in r.text and "stock" in r.text
    r = _post(client, f"/console/benefits/{ids['direct']}", {**FORM, "valid_days": "many"})
    assert r.status_code == 422 and "valid_days" in r.text
    with web_sessions() as s:
        assert s.scalar(select(Benefit).where(Benefit.code == "tv-bad")) is None
        assert s.get(Benefit, ids["direct"]).stock_total == 8  # type: ignore[union-attr]
    assert _audit_count(web_sessions) == before


def test_admin_edits_and_lists_a_benefit(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    r = _post(client, f"/console/benefits/{ids['direct']}", {**FORM, "sale_price": "14.00"})
    assert r.status_code == 303, r.text
    r = _post(client, f"/console/benefits/{ids['direct']}/status", {"status": "listed"})
    assert r.status_code == 303
    page = client.get(f"/console/benefits/{ids['direct']}")
    assert 'id="to-delisted"' in page.text and "¥14.00" in page.text
    r = _post(client, f"/console/benefits/{ids['direct']}/status", {"status": "draft"})
    assert r.status_code == 409 and "cannot go from listed to draft" in r.text
    with web_sessions() as s:
        b = s.get(Benefit, ids["direct"])
        assert b is not None and (b.status, b.sale_price_fen, b.stock_total) == (
            "listed",
            1400,
            100,
        )


def test_province_marketer_gets_403_on_every_write_and_nothing_changes(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "gd")
    before = _audit_count(web_sessions)
    editor = client.get(f"/console/benefits/{ids['direct']}")
    assert editor.status_code == 200 and 'id="save"' not in editor.text
    assert client.get("/console/benefits/new").status_code == 403
    for url, data in [
        (f"/console/benefits/{ids['direct']}", {**FORM, "sale_price": "1"}),
        (f"/console/benefits/{ids['direct']}/status", {"status": "listed"}),
        ("/console/partners", {"code": "evil", "name": "Evil"}),
    ]:
        assert _post(client, url, data).status_code == 403
    r = _post(
        client,
        f"/console/benefits/{ids['codes']}/codes",
        {"unit_cost": "1"},
        files={"file": ("c.csv", b"X-1\n", "text/csv")},
    )
    assert r.status_code == 403
    assert _audit_count(web_sessions) == before
    with web_sessions() as s:
        b = s.get(Benefit, ids["direct"])
        assert b is not None and (b.status, b.sale_price_fen) == ("draft", 1500)
        assert s.scalar(select(func.count()).select_from(CardCode)) == 0


def test_forms_without_csrf_token_are_refused(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    r = client.post(f"/console/benefits/{ids['direct']}/status", data={"status": "listed"})
    assert r.status_code == 403 and "CSRF" in r.text


def test_code_pool_import_shows_the_lot_and_raises_stock(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    url = f"/console/benefits/{ids['codes']}/codes"
    assert 'id="import-form"' in client.get(url).text
    csv_bytes = "\ufeffcode,pin,expiry\nTV-1,1111,2099-12-31\nTV-2\nTV-1\n".encode()
    r = _post(client, url, {"unit_cost": "9.50"}, files={"file": ("tv.csv", csv_bytes, "text/csv")})
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"])
    assert 'id="import-result"' in page.text and "tv.csv" in page.text and "¥9.50" in page.text
    assert "2 / 2" in page.text
    with web_sessions() as s:
        assert s.get(Benefit, ids["codes"]).stock_remaining == 2  # type: ignore[union-attr]


def test_a_bad_code_file_lists_its_lines_and_imports_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    url = f"/console/benefits/{ids['codes']}/codes"
    bad = b"TV-1\nTV 2\nTV-3,,2099-13-01\n"
    r = _post(client, url, {"unit_cost": "9"}, files={"file": ("bad.csv", bad, "text/csv")})
    assert r.status_code == 422
    assert 'id="bad-lines"' in r.text and '<td class="num">2</td>' in r.text
    assert '<td class="num">3</td>' in r.text
    not_utf8 = "TV-1\n卡密\n".encode("gbk")
    r = _post(client, url, {"unit_cost": "9"}, files={"file": ("gbk.csv", not_utf8, "text/csv")})
    assert r.status_code == 422 and "UTF-8" in r.text
    r = _post(client, url, {"unit_cost": "abc"}, files={"file": ("a.csv", b"TV-1\n", "text/csv")})
    assert r.status_code == 422 and "unit_cost_fen" in r.text
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(CardCode)) == 0
        assert s.get(Benefit, ids["codes"]).stock_total == 0  # type: ignore[union-attr]


def test_partner_pages_create_and_edit_with_an_encrypted_secret(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    assert "tv" in client.get("/console/partners").text
    form = {
        "code": "music",
        "name": "Music Co",
        "contact_name": "Li",
        "contact_email": "li@music.example",
        "contact_phone": "",
        "cycle": "monthly",
        "statement_day": "5",
        "payment_days": "30",
        "connector_kind": "http",
        "connector_url": "https://music.example/perkflow",
        "connector_secret": "",
        "connector_timeout_ms": "2000",
        "connector_max_attempts": "4",
        "supports_revoke": "on",
    }
    r = _post(client, "/console/partners", form)
    assert r.status_code == 422 and "connector_secret" in r.text
    r = _post(client, "/console/partners", {**form, "connector_secret": "top-secret-1"})
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"])
    assert "top-secret-1" not in page.text and "Music Co" in page.text
    r = _post(client, f"/console/partners/{ids['partner']}", {**form, "statement_day": "40"})
    assert r.status_code == 422 and "statement_day" in r.text
    with web_sessions() as s:
        music = s.scalar(select(Partner).where(Partner.code == "music"))
        assert music is not None and music.connector_max_attempts == 4 and music.supports_revoke
        assert vault.pii.decrypt(music.connector_secret_enc or b"", b"partner:music") == (
            "top-secret-1"
        )
        tv = s.get(Partner, ids["partner"])
        assert tv is not None and tv.settlement_terms["statement_day"] == 5


def test_pages_speak_chinese_by_default(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    sign_in(client, "admin")
    page = client.get(f"/console/benefits/{ids['codes']}/codes")
    assert "卡密库" in page.text and "导入" in page.text
    assert "权益目录" in client.get("/console/benefits").text


def test_a_large_file_imports_in_the_background_with_progress(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _setup(web_sessions, vault)
    monkeypatch.setattr(catalog_pages, "INLINE_IMPORT_MAX_BYTES", 10)
    sign_in(client, "admin")
    url = f"/console/benefits/{ids['codes']}/codes"
    body = "".join(f"BG-{i:05d},{i:04d}\n" for i in range(300)).encode()
    r = _post(client, url, {"unit_cost": "2"}, files={"file": ("big.csv", body, "text/csv")})
    assert r.status_code == 303 and "?job=" in r.headers["location"]
    job_id = r.headers["location"].split("?job=")[1]
    progress_url = f"{url}/imports/{job_id}"
    deadline = time.monotonic() + 20
    while True:
        polled = client.get(progress_url)
        if "hx-redirect" in polled.headers:
            break
        assert polled.status_code == 200 and 'id="import-job-progress"' in polled.text
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.05)
    page = client.get(polled.headers["hx-redirect"])
    assert 'id="import-result"' in page.text and "300 / 300" in page.text
    # Someone else cannot follow (or learn of) the job.
    with web_sessions() as s:
        make_staff(s, username="admin2", role=Role.HQ_ADMIN, region="CN")
    client.cookies.clear()
    sign_in(client, "admin2")
    assert client.get(progress_url).status_code == 404
