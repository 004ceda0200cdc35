"""Catalog JSON API: scopes, a partner key's view, staff writes, errors that change nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.models import Benefit, Partner
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from tests.catalog.helpers import add_benefit, add_partner
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in


def _key(
    web_sessions: sessionmaker[Session], scopes: list[str], partner: str | None = None
) -> dict[str, str]:
    with web_sessions() as s:
        _, plaintext = org.create_api_key(
            s,
            actor=SYSTEM,
            name="k",
            owner_kind="partner" if partner else "channel",
            scopes=scopes,
            owner_ref=partner,
        )
        s.commit()
    return {"authorization": f"Bearer {plaintext}"}


def _setup(web_sessions: sessionmaker[Session], vault: Vault) -> dict[str, int]:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        add_partner(
            s,
            vault,
            "tv",
            connector_kind="http",
            connector_url="https://tv.example",
            connector_secret="shh-secret",
        )
        add_partner(s, vault, "music")
        tv = add_benefit(s, code="tv-month", stock=5)
        music = add_benefit(s, code="music-month", partner_code="music")
        return {"tv": tv.id, "music": music.id}


def _staff_headers(client: TestClient, username: str) -> dict[str, str]:
    sign_in(client, username)
    return {"x-csrf-token": csrf_of(client.get("/console/benefits").text)}


def test_keys_need_the_catalog_scope_and_partners_see_their_own(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    assert client.get("/v1/benefits").status_code == 401
    assert client.get("/v1/benefits", headers=_key(web_sessions, ["h5:link"])).status_code == 403
    channel = _key(web_sessions, ["catalog:read"])
    body = client.get("/v1/benefits", headers=channel).json()
    assert body["total"] == 2 and {b["partner_code"] for b in body["items"]} == {"tv", "music"}
    tv = _key(web_sessions, ["catalog:read"], partner="tv")
    body = client.get("/v1/benefits", headers=tv).json()
    assert [b["code"] for b in body["items"]] == ["tv-month"]
    item = body["items"][0]
    assert (item["sale_price_fen"], item["stock_remaining"], item["status"]) == (1500, 5, "draft")
    assert client.get(f"/v1/benefits/{ids['music']}", headers=tv).status_code == 404
    assert client.get(f"/v1/benefits/{ids['tv']}", headers=tv).status_code == 200
    partners = client.get("/v1/partners", headers=tv).json()
    assert [p["code"] for p in partners] == ["tv"] and partners[0]["has_connector_secret"]
    assert "shh-secret" not in client.get("/v1/partners", headers=channel).text


def test_keys_cannot_write_the_catalog(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    tv = _key(web_sessions, ["catalog:read"], partner="tv")
    r = client.patch(f"/v1/benefits/{ids['tv']}", headers=tv, json={"sale_price_fen": 1})
    assert r.status_code == 403
    r = client.post(f"/v1/benefits/{ids['tv']}/status", headers=tv, json={"status": "listed"})
    assert r.status_code == 403
    with web_sessions() as s:
        assert s.get(Benefit, ids["tv"]).sale_price_fen == 1500  # type: ignore[union-attr]


def test_hq_admin_creates_updates_and_lists_through_the_api(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    headers = _staff_headers(client, "admin")
    r = client.post(
        "/v1/partners",
        headers=headers,
        json={"code": "cloud", "name": "Cloud", "settlement_terms": {"cycle": "quarterly"}},
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/v1/benefits",
        headers=headers,
        json={
            "code": "cloud-200g",
            "partner_code": "cloud",
            "name_zh": "云盘200G",
            "name_en": "Cloud 200 GB",
            "category": "cloud_storage",
            "fulfilment_kind": "card_code",
            "face_value_fen": 1000,
            "cost_price_fen": 500,
            "sale_price_fen": 800,
            "validity_kind": "fixed",
            "valid_until": "2030-06-30",
            "limit_per_month": 1,
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["status"], created["stock_total"], created["low_stock"]) == ("draft", 0, True)
    r = client.patch(f"/v1/benefits/{ids['tv']}", headers=headers, json={"stock": 9})
    assert r.status_code == 200 and r.json()["stock_remaining"] == 9
    r = client.post(
        f"/v1/benefits/{created['id']}/status", headers=headers, json={"status": "listed"}
    )
    assert r.status_code == 200 and r.json()["status"] == "listed"
    r = client.get("/v1/benefits", params={"status": "listed", "low_stock": "true"})
    assert [b["code"] for b in r.json()["items"]] == ["cloud-200g"]
    assert client.get(f"/v1/benefits/{created['id']}/card-code-lots").json() == []
    with web_sessions() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor_name == "admin"))
        assert sorted(actions) == [
            "benefit.create",
            "benefit.status",
            "benefit.update",
            "partner.create",
        ]


def test_bad_requests_are_422_or_403_naming_the_field_and_change_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    ids = _setup(web_sessions, vault)
    with web_sessions() as s:
        audit_before = s.scalar(select(func.count()).select_from(AuditEntry))
    headers = _staff_headers(client, "admin")
    base = {
        "code": "x-1",
        "partner_code": "tv",
        "name_zh": "x",
        "name_en": "x",
        "category": "video",
        "fulfilment_kind": "coupon",
        "face_value_fen": 100,
        "cost_price_fen": 50,
        "sale_price_fen": 80,
        "validity_kind": "days",
        "valid_days": 7,
    }
    cases = [
        ({**base, "category": "toys"}, "category"),
        ({**base, "face_value_fen": "a lot"}, "face_value_fen"),
        ({**base, "cost_price_fen": 500}, "cost_price_fen"),
        ({**base, "valid_days": None}, "valid_days"),
        ({**base, "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        r = client.post("/v1/benefits", headers=headers, json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (field, r.text)
    r = client.patch(f"/v1/benefits/{ids['tv']}", headers=headers, json={"limit_total": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit_total"
    r = client.post("/v1/partners", headers=headers, json={"code": "tv", "name": "again"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "code"
    client.post("/logout", data={"csrf_token": headers["x-csrf-token"]})
    marketer = _staff_headers(client, "gd")
    r = client.post("/v1/benefits", headers=marketer, json=base)
    assert r.status_code == 403
    assert client.get("/v1/benefits", headers=marketer).json()["total"] == 2
    r = client.post("/v1/benefits", json=base)  # signed in, but no CSRF token
    assert r.status_code == 403
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(Benefit)) == 2
        assert s.scalar(select(func.count()).select_from(Partner)) == 2
        assert s.get(Benefit, ids["tv"]).limit_total is None  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == audit_before


def test_the_catalog_is_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/benefits", "/v1/benefits/{benefit_id}", "/v1/partners"} <= set(paths)
    assert "/console/benefits" not in paths
