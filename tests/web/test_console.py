"""Console pages through HTTP: sign-in, CSRF, scope, masking, language."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.kit.crypto import Vault
from perkflow.org.models import LoginAttempt
from perkflow.org.rules import Role
from perkflow.subscribers.models import StatusEvent, Subscriber
from tests.factories import make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

GD = ("13812345678", "GD", "GD01")
ZJ = ("13912345678", "ZJ", "ZJ01")


def _setup(web_sessions: sessionmaker[Session], vault: Vault) -> list[int]:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="clerk", role=Role.CLERK, region="GD01S1")
        return make_subscribers(s, vault, [GD, ZJ])


def test_console_needs_sign_in(client: TestClient) -> None:
    r = client.get("/console/subscribers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_wrong_password_is_refused_and_recorded(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login", data={"username": "admin", "password": "nope-nope-1", "csrf_token": token}
    )
    assert r.status_code == 401
    assert client.get("/console", follow_redirects=False).status_code == 303
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(LoginAttempt)) == 1


def test_login_without_csrf_token_is_refused(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    client.get("/login")
    r = client.post("/login", data={"username": "admin", "password": "correct-horse-42"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert client.get("/console", follow_redirects=False).status_code == 303


def test_repeated_failures_lock_the_sign_in(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    token = csrf_of(client.get("/login").text)
    codes = [
        client.post(
            "/login", data={"username": "admin", "password": f"wrong-{i}-pass", "csrf_token": token}
        ).status_code
        for i in range(6)
    ]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    r = client.post(
        "/login",
        data={"username": "admin", "password": "correct-horse-42", "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 429


def test_dashboard_shows_figures_of_the_scope(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    sign_in(client, "gd")
    page = client.get("/console").text
    assert 'id="total">1<' in page and "广东省" in page and "浙江省" not in page


def test_marketer_cannot_open_another_province(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _, zj_id = _setup(web_sessions, vault)
    sign_in(client, "gd")
    assert client.get("/console/regions/GD").status_code == 200
    r = client.get("/console/regions/ZJ")
    assert r.status_code == 403 and "ZJ" in r.text
    assert client.get(f"/console/subscribers/{zj_id}").status_code == 403


def test_subscriber_list_masks_phones(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    sign_in(client, "admin")
    page = client.get("/console/subscribers").text
    assert "138****5678" in page and "13812345678" not in page
    # The number is posted, never put in a URL (access logs, history, referrers).
    assert 'method="post" action="/console/subscribers/search"' in page
    token = csrf_of(page)
    search = {"phone": "13912345678", "csrf_token": token}
    found = client.post("/console/subscribers/search", data=search).text
    assert "139****5678" in found and "138****5678" not in found
    bad = client.post("/console/subscribers/search", data={"phone": "12", "csrf_token": token})
    assert bad.status_code == 422 and "phone" in bad.text
    forged = client.post("/console/subscribers/search", data={"phone": "13912345678"})
    assert forged.status_code == 403


def test_status_change_from_console_needs_csrf(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    gd_id, _ = _setup(web_sessions, vault)
    sign_in(client, "gd")
    page = client.get(f"/console/subscribers/{gd_id}").text
    r = client.post(
        f"/console/subscribers/{gd_id}/status",
        data={"status": "suspended", "reason": "fraud", "csrf_token": "forged"},
    )
    assert r.status_code == 403
    with web_sessions() as s:
        sub = s.get(Subscriber, gd_id)
        assert sub is not None and sub.status == "active"
    r = client.post(
        f"/console/subscribers/{gd_id}/status",
        data={"status": "suspended", "reason": "fraud", "csrf_token": csrf_of(page)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with web_sessions() as s:
        sub = s.get(Subscriber, gd_id)
        assert sub is not None and sub.status == "suspended"
        assert s.scalar(select(func.count()).select_from(StatusEvent)) == 1


def test_bad_status_from_console_names_the_field_and_changes_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    gd_id, _ = _setup(web_sessions, vault)
    sign_in(client, "gd")
    token = csrf_of(client.get(f"/console/subscribers/{gd_id}").text)
    r = client.post(
        f"/console/subscribers/{gd_id}/status",
        data={"status": "active", "reason": "x", "csrf_token": token},
    )
    assert r.status_code == 409 and "status" in r.text
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(StatusEvent)) == 0


def test_clerk_sees_their_store_not_subscribers(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    sign_in(client, "clerk")
    assert "GD01S1" in client.get("/console").text
    assert client.get("/console/subscribers").status_code == 403
    assert client.get("/console/audit").status_code == 403


def test_audit_page_lists_writes_for_hq_admin(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    sign_in(client, "admin")
    page = client.get("/console/audit").text
    assert "staff.create" in page


def test_language_follows_browser_then_cookie(client: TestClient) -> None:
    assert "登录" in client.get("/login", headers={"accept-language": "zh-CN,zh;q=0.9"}).text
    assert "Sign in to" in client.get("/login", headers={"accept-language": "en-US,en"}).text
    client.get("/lang/en")
    assert "Sign in to" in client.get("/login", headers={"accept-language": "zh-CN"}).text


def test_sign_in_does_not_redirect_off_site(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _setup(web_sessions, vault)
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={
            "username": "admin",
            "password": "correct-horse-42",
            "csrf_token": token,
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/console"
