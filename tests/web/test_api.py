"""JSON API: API keys, validation errors naming the field, one-click links, scope."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.subscribers.models import StatusEvent
from tests.factories import make_api_key, make_subscribers

GD = ("13812345678", "GD", "GD01")


def _key(web_sessions: sessionmaker[Session], *scopes: str) -> dict[str, str]:
    with web_sessions() as s:
        return {"authorization": f"Bearer {make_api_key(s, scopes=list(scopes))}"}


def test_api_without_key_is_401(client: TestClient) -> None:
    r = client.get("/v1/subscribers")
    assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
    r = client.get("/v1/subscribers", headers={"authorization": "Bearer pk_ch_nope"})
    assert r.status_code == 401


def test_status_change_through_the_api(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [GD])
    headers = _key(web_sessions, "subscribers:status")
    r = client.post(
        f"/v1/subscribers/{sid}/status",
        headers=headers,
        json={"status": "suspended", "reason": "unpaid"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["to_status"] == "suspended"
    with web_sessions() as s:
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "subscriber.change_status"))
        entry = audit.one()
        assert entry.actor_kind == "api_key" and entry.ip == "testclient"


def test_malformed_body_is_422_naming_the_field_and_changes_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [GD])
    headers = _key(web_sessions, "subscribers:status")
    r = client.post(
        f"/v1/subscribers/{sid}/status", headers=headers, json={"status": "asleep", "reason": "x"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "status"
    r = client.post(f"/v1/subscribers/{sid}/status", headers=headers, json={"status": "churned"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
    r = client.post(
        f"/v1/subscribers/{sid}/status",
        headers=headers,
        json={"status": "churned", "reason": "x", "extra": 1},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "extra"
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(StatusEvent)) == 0


def test_key_without_scope_is_403(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [GD])
    r = client.post(
        f"/v1/subscribers/{sid}/status",
        headers=_key(web_sessions, "h5:link"),
        json={"status": "suspended", "reason": "x"},
    )
    assert r.status_code == 403


def test_one_click_link_signs_in_and_expires(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, [GD])
    headers = _key(web_sessions, "h5:link")
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        r = client.post("/v1/h5-links", headers=headers, json={"phone": GD[0]})
        assert r.status_code == 200, r.text
        url = r.json()["url"].replace("http://127.0.0.1", "")
        page = client.get(url)
        assert page.status_code == 200 and "138****5678" in page.text
        assert "13812345678" not in page.text
        client.cookies.clear()
        frozen.advance(minutes=16)
        expired = client.get(url)
        assert expired.status_code == 401
        assert client.get("/h5").status_code == 401
    finally:
        clock.set_clock(None)


def test_one_click_link_for_unknown_or_bad_phone(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    headers = _key(web_sessions, "h5:link")
    r = client.post("/v1/h5-links", headers=headers, json={"phone": "13800000000"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "phone"
    r = client.post("/v1/h5-links", headers=headers, json={"phone": "not-a-phone"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "phone"


def test_openapi_documents_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/subscribers/{subscriber_id}/status" in paths and "/v1/h5-links" in paths
