"""Ending sessions: a copied console cookie dies with logout, a new password or a new role;
an H5 session dies with churn."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from tests.factories import PASSWORD, make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

COOKIE = "perkflow_session"
GD = ("13812345678", "GD", "GD01")


def _signed_in_copy(client: TestClient, web_sessions: sessionmaker[Session]) -> str:
    with web_sessions() as s:
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    sign_in(client, "gd")
    assert client.get("/console", follow_redirects=False).status_code == 200
    copied = client.cookies.get(COOKIE)
    assert copied
    return copied


def _assert_signed_out(client: TestClient, copied: str) -> None:
    client.cookies.clear()
    client.cookies.set(COOKIE, copied)
    page = client.get("/console", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    client.cookies.set(COOKIE, copied)
    api = client.get("/v1/subscribers")
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthenticated"


def test_a_cookie_copied_before_logout_is_signed_out(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    copied = _signed_in_copy(client, web_sessions)
    token = csrf_of(client.get("/console").text)
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    _assert_signed_out(client, copied)
    # Signing in again works, with a session of its own.
    client.cookies.clear()
    sign_in(client, "gd")
    assert client.get("/console", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("change", ["password", "role"])
def test_a_password_or_role_change_signs_every_session_out(
    client: TestClient, web_sessions: sessionmaker[Session], change: str
) -> None:
    copied = _signed_in_copy(client, web_sessions)
    with web_sessions() as s:
        if change == "password":
            org.set_password(s, actor=SYSTEM, username="gd", password=PASSWORD + "-new")
        else:
            org.set_staff_role(s, actor=SYSTEM, username="gd", role=Role.ANALYST, region_code="GD")
        s.commit()
    _assert_signed_out(client, copied)


def test_churn_ends_the_h5_session(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [GD])
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=GD[0])
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303
    assert client.get("/h5").status_code == 200
    with web_sessions() as s:
        grants.change_subscriber_status(
            s, actor=SYSTEM, subscriber_id=sid, status=Status.SUSPENDED, reason="unpaid", source="t"
        )
        s.commit()
    assert client.get("/h5").status_code == 200  # suspended: may still look
    with web_sessions() as s:
        grants.change_subscriber_status(
            s, actor=SYSTEM, subscriber_id=sid, status=Status.CHURNED, reason="left", source="t"
        )
        s.commit()
    gone = client.get("/h5")
    assert gone.status_code == 401
    assert client.get("/h5/wallet").status_code == 401
