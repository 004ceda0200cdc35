"""One-click H5 links: who may issue them, region scope, single use; phone lookup by POST."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.errors import Forbidden, Unauthenticated
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.models import H5LinkNonce
from tests.factories import make_api_key, make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

GD = ("13812345678", "GD", "GD01")
ZJ = ("13912345678", "ZJ", "ZJ01")


def test_staff_cannot_issue_links_for_any_province(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, [GD, ZJ])
        make_staff(s, username="gd.marketer", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    for username in ("gd.marketer", "admin"):
        client.cookies.clear()
        sign_in(client, username)
        headers = {"x-csrf-token": csrf_of(client.get("/console/subscribers").text)}
        for phone in (ZJ[0], GD[0]):
            r = client.post("/v1/h5-links", headers=headers, json={"phone": phone})
            assert r.status_code == 403, (username, phone, r.text)
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(H5LinkNonce)) == 0


def test_a_province_scoped_issuer_is_refused_outside_its_region(
    session: Session, vault: Vault
) -> None:
    make_subscribers(session, vault, [GD, ZJ])
    gd_channel = Actor(
        kind="api_key", id="9", name="gd sms", scope_path="CN/GD", api_scopes=frozenset({"h5:link"})
    )
    with pytest.raises(Forbidden, match="outside your region"):
        subscribers.issue_login_token(session, actor=gd_channel, vault=vault, phone=ZJ[0])
    sid, _ = subscribers.issue_login_token(session, actor=gd_channel, vault=vault, phone=GD[0])
    assert sid > 0


def test_a_link_works_once(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, [GD])
        key = make_api_key(s, scopes=["h5:link"])
    r = client.post(
        "/v1/h5-links", headers={"authorization": f"Bearer {key}"}, json={"phone": GD[0]}
    )
    assert r.status_code == 200, r.text
    url = r.json()["url"].replace("http://127.0.0.1", "")
    assert client.get(url, follow_redirects=False).status_code == 303
    assert client.get("/h5").status_code == 200
    client.cookies.clear()
    again = client.get(url)
    assert again.status_code == 401 and "already used" in again.text
    assert client.get("/h5").status_code == 401


def test_two_simultaneous_uses_sign_in_once(sessions: sessionmaker[Session], vault: Vault) -> None:
    with sessions() as s:
        make_subscribers(s, vault, [GD])
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=GD[0])
        s.commit()
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def use() -> None:
        with sessions() as s:
            start.wait()
            try:
                subscribers.redeem_login_token(s, vault=vault, signed=signed, max_age_s=900)
                s.commit()
                outcomes.append("in")
            except Unauthenticated:
                outcomes.append("refused")

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["in"] + ["refused"] * 7


def test_expired_nonces_are_pruned_when_links_are_issued(session: Session, vault: Vault) -> None:
    make_subscribers(session, vault, [GD])
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        for _ in range(3):
            subscribers.issue_login_token(session, actor=SYSTEM, vault=vault, phone=GD[0])
        frozen.advance(minutes=16)
        _, fresh = subscribers.issue_login_token(session, actor=SYSTEM, vault=vault, phone=GD[0])
        assert session.scalar(select(func.count()).select_from(H5LinkNonce)) == 1
        assert subscribers.redeem_login_token(session, vault=vault, signed=fresh, max_age_s=900)
    finally:
        clock.set_clock(None)


def test_phone_lookup_is_posted_never_in_a_url(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, [GD, ZJ])
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    sign_in(client, "admin")
    headers = {"x-csrf-token": csrf_of(client.get("/console/subscribers").text)}
    refused = client.get("/v1/subscribers", params={"phone": GD[0]})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "phone"
    assert client.get("/v1/subscribers").json()["total"] == 2
    found = client.post("/v1/subscribers/search", headers=headers, json={"phone": ZJ[0]})
    assert found.status_code == 200, found.text
    assert [i["phone"] for i in found.json()["items"]] == ["139****5678"]
    bad = client.post("/v1/subscribers/search", headers=headers, json={"phone": "12"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "phone"
    assert client.post("/v1/subscribers/search", json={"phone": ZJ[0]}).status_code == 403
    # A province marketer's search stays in the province.
    client.cookies.clear()
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/subscribers").text)
    mine = client.post(
        "/v1/subscribers/search", headers={"x-csrf-token": token}, json={"phone": ZJ[0]}
    )
    assert mine.status_code == 200 and mine.json()["items"] == []
