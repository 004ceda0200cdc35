"""The campaign API: define and run as staff (CSRF), responses and events with API keys."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns.models import Campaign, SubscriberEvent
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.campaigns.helpers import (
    contacts,
    dispatcher,
    everyone,
    run,
    spec,
    started,
    write_profile,
)
from tests.campaigns.test_service import trigger_spec
from tests.factories import make_api_key, make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in


def _count(web_sessions: sessionmaker[Session], model: type) -> int:
    with web_sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _as(client: TestClient, username: str) -> dict[str, str]:
    client.cookies.clear()
    sign_in(client, username)
    return {"x-csrf-token": csrf_of(client.get("/console").text)}


def test_define_approve_and_start_through_the_api(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    mart = Mart(settings.mart_dir)
    write_profile(mart, 30)
    with web_sessions() as s:
        make_staff(s, username="author", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="boss", role=Role.HQ_ADMIN, region="CN")
        seg = everyone(s, mart)
    h = _as(client, "author")
    bad = spec(seg, goal={"kind": "click", "window_days": 7})
    r = client.post("/v1/campaigns", json=bad, headers=h)
    assert r.status_code == 422 and r.json()["error"]["field"] == "goal.kind"
    assert _count(web_sessions, Campaign) == 0
    r = client.post("/v1/campaigns", json=spec(seg), headers=h)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert client.post(f"/v1/campaigns/{cid}/start", headers=h).status_code == 409
    assert client.post(f"/v1/campaigns/{cid}/submit", headers=h).json()["status"] == (
        "pending_approval"
    )
    r = client.post(f"/v1/campaigns/{cid}/approve", headers=h, json={"note": "mine"})
    assert r.status_code == 403
    h = _as(client, "boss")
    r = client.post(f"/v1/campaigns/{cid}/approve", headers=h, json={"note": "fine"})
    assert r.status_code == 200 and r.json()["approved_by"] == "boss"
    r = client.post(f"/v1/campaigns/{cid}/start", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    p = client.get(f"/v1/campaigns/{cid}/progress", headers=h).json()
    assert p["waves"][0]["kind"] == "rollout" and p["waves"][0]["status"] == "planning"
    assert client.post(f"/v1/campaigns/{cid}/rollout", headers=h).status_code == 409
    assert client.post(f"/v1/campaigns/{cid}/pause", headers=h).json()["status"] == "paused"
    assert client.post(f"/v1/campaigns/{cid}/resume", headers=h).json()["status"] == "running"
    assert client.post(f"/v1/campaigns/{cid}/finish", headers=h).json()["status"] == "finished"
    # Without the CSRF header a signed-in browser changes nothing.
    assert client.post(f"/v1/campaigns/{cid}/pause").status_code == 403


def test_events_and_responses_with_api_keys(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    settings: Settings,
    vault: Vault,
) -> None:
    mart = Mart(settings.mart_dir)
    with web_sessions() as s:
        (sid,) = make_subscribers(s, vault, [("13600000001", "GD", "GD01")])
        c = started(s, mart, vault, trigger_spec(control_share=0))
        key = make_api_key(s, scopes=["events:write", "responses:write", "campaigns:read"])
        weak = make_api_key(s, scopes=["campaigns:read"])
    auth = {"Authorization": f"Bearer {key}"}
    event = {
        "type": "data_threshold",
        "subscriber_id": sid,
        "occurred_at": "2026-11-02T10:00:00+08:00",
        "attributes": {"percent": 92},
    }
    r = client.post("/v1/events", json=event, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["field"] == "idempotency_key"
    r = client.post(
        "/v1/events", json={**event, "type": "birthday"}, headers=auth | {"Idempotency-Key": "e0"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "type"
    r = client.post(
        "/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {weak}", "Idempotency-Key": "e1"},
    )
    assert r.status_code == 403
    assert _count(web_sessions, SubscriberEvent) == 0
    r = client.post("/v1/events", json=event, headers=auth | {"Idempotency-Key": "e1"})
    assert r.status_code == 200, r.text
    (t,) = r.json()["triggered"]
    assert (t["campaign_id"], t["cell"]) == (c.id, "target")
    r2 = client.post("/v1/events", json=event, headers=auth | {"Idempotency-Key": "e1"})
    assert r2.json()["replayed"] and r2.headers["Idempotent-Replayed"] == "true"
    assert _count(web_sessions, SubscriberEvent) == 1
    # A key with campaigns:read reads the campaign; it cannot change it.
    assert client.get(f"/v1/campaigns/{c.id}", headers=auth).status_code == 200
    assert client.post(f"/v1/campaigns/{c.id}/pause", headers=auth).status_code == 403

    # The queued (not yet sent) contact counts for attribution only once it is contacted.
    resp = {"subscriber_id": sid, "kind": "claim", "occurred_at": "2026-11-03T10:00:00+08:00"}
    r = client.post("/v1/responses", json=resp, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["field"] == "idempotency_key"
    r = client.post("/v1/responses", json=resp, headers=auth | {"Idempotency-Key": "o-1"})
    assert r.status_code == 200 and r.json() == {
        "recorded": False,
        "response_id": None,
        "campaign_id": None,
        "contact_id": None,
        "cell": None,
        "variant": None,
    }


def test_a_response_from_the_crm_is_attributed_once(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    settings: Settings,
    vault: Vault,
) -> None:
    mart = Mart(settings.mart_dir)
    write_profile(mart, 10)
    with web_sessions() as s:
        seg = everyone(s, mart)
        c = started(s, mart, vault, spec(seg, goal={"kind": "order", "window_days": 30}))
        key = make_api_key(s, scopes=["responses:write"])
    run(web_sessions, dispatcher(vault, settings), mart)
    with web_sessions() as s:
        row = next(r for r in contacts(s, c.id) if r.cell == "target")
        at = row.contacted_at
    assert at is not None
    body = {
        "subscriber_id": row.subscriber_id,
        "kind": "order",
        "occurred_at": at.isoformat(),
        "value_fen": 5900,
        "idempotency_key": "crm-order-77",
    }
    auth = {"Authorization": f"Bearer {key}"}
    first = client.post("/v1/responses", json=body, headers=auth).json()
    again = client.post("/v1/responses", json=body, headers=auth).json()
    assert first["recorded"] and first == again
    assert (first["campaign_id"], first["contact_id"], first["cell"]) == (c.id, row.id, "target")
