"""Grants over HTTP: the /v1 API, partner callbacks, console pages, H5 "my benefits"."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.rules import FulfilmentKind
from perkflow.grants import service as grants
from perkflow.grants.models import Grant, OutboxMessage
from perkflow.grants.rules import SIGNATURE_HEADER, Outcome, OutcomeKind, sign
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers
from tests.factories import make_api_key, make_benefit, make_partner, make_staff, make_subscribers
from tests.grants.helpers import SECRET, ZONE, add_card_codes, partner_key, phones
from tests.web.helpers import csrf_of, sign_in


def _bearer(plaintext: str) -> dict[str, str]:
    return {"authorization": f"Bearer {plaintext}"}


def _grant_count(web_sessions: sessionmaker[Session]) -> int:
    with web_sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Grant)) or 0)


def _world(web_sessions: sessionmaker[Session], vault: Vault) -> dict[str, int]:
    with web_sessions() as s:
        [gd, zj] = make_subscribers(s, vault, phones(1) + phones(1, "ZJ", "ZJ01"))
        partner = make_partner(
            s, connector_url="http://127.0.0.1:9/orders", secret=SECRET, vault=vault
        )
        direct = make_benefit(s, partner=partner, stock=5)
        card = make_benefit(s, partner=partner, code="card", kind=FulfilmentKind.CARD_CODE)
        add_card_codes(s, vault, benefit=card, n=3)
        return {"gd": gd, "zj": zj, "direct": direct.id, "card": card.id}


def test_issue_through_the_api_with_an_idempotency_key_header(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        headers = _bearer(make_api_key(s, scopes=["grants:write"]))
    body = {"subscriber_id": w["gd"], "benefit_id": w["card"], "source": "campaign-7"}
    r = client.post("/v1/grants", json=body, headers={**headers, "Idempotency-Key": "h-1"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "fulfilled" and first["idempotency_key"] == "h-1"
    r = client.post("/v1/grants", json=body, headers={**headers, "Idempotency-Key": "h-1"})
    assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true"
    assert r.json()["id"] == first["id"]
    r = client.post("/v1/grants", json={**body, "idempotency_key": "h-1"}, headers=headers)
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    assert _grant_count(web_sessions) == 1


def test_bad_requests_are_4xx_naming_the_field_and_change_nothing(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        writer = _bearer(make_api_key(s, scopes=["grants:write"]))
        reader = _bearer(make_api_key(s, scopes=["grants:read"]))
    body = {"subscriber_id": w["gd"], "benefit_id": w["direct"]}
    cases = [
        ({**body}, {}, 422, "idempotency_key"),
        ({**body, "idempotency_key": "a"}, {"Idempotency-Key": "b"}, 422, "idempotency_key"),
        ({"benefit_id": w["direct"], "idempotency_key": "k"}, {}, 422, "subscriber_id"),
        ({**body, "subscriber_id": "x", "idempotency_key": "k"}, {}, 422, "subscriber_id"),
        ({**body, "idempotency_key": "k", "colour": "red"}, {}, 422, "colour"),
        ({**body, "idempotency_key": "k" * 129}, {}, 422, "idempotency_key"),
        ({**body, "benefit_id": 99999, "idempotency_key": "k"}, {}, 404, "benefit_id"),
        ({**body, "subscriber_id": 42, "idempotency_key": "k"}, {}, 404, "subscriber_id"),
    ]
    for payload, extra, status, field in cases:
        r = client.post("/v1/grants", json=payload, headers={**writer, **extra})
        assert r.status_code == status, (payload, r.text)
        assert r.json()["error"]["field"] == field, (payload, r.text)
    r = client.post("/v1/grants", json={**body, "idempotency_key": "k"}, headers=reader)
    assert r.status_code == 403
    r = client.post("/v1/grants", json={**body, "idempotency_key": "k"})
    assert r.status_code == 401
    assert _grant_count(web_sessions) == 0
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_read_grants_and_a_partner_key_sees_only_its_own(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        other = make_partner(s, code="other-partner")
        foreign = make_benefit(s, partner=other, code="foreign", kind=FulfilmentKind.COUPON)
        mine = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=w["card"],
            source="t",
            idempotency_key="r-1",
            zone=ZONE,
        ).grant
        theirs = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=foreign.id,
            source="t",
            idempotency_key="r-2",
            zone=ZONE,
        ).grant
        s.commit()
        reader = _bearer(make_api_key(s, scopes=["grants:read"]))
        partner = _bearer(partner_key(s, partner_code="tencent-video", scopes=["grants:read"]))
        unscoped = _bearer(make_api_key(s, scopes=["subscribers:read"]))
    r = client.get(f"/v1/grants/{mine.id}", headers=reader)
    assert r.status_code == 200
    assert [e["to_status"] for e in r.json()["events"]] == ["pending", "fulfilled"]
    r = client.get(f"/v1/grants?subscriber_id={w['gd']}", headers=reader)
    assert r.json()["total"] == 2
    assert client.get(f"/v1/grants/{mine.id}", headers=partner).status_code == 200
    assert client.get(f"/v1/grants/{theirs.id}", headers=partner).status_code == 404
    r = client.get(f"/v1/grants?subscriber_id={w['gd']}", headers=partner)
    assert [g["id"] for g in r.json()["items"]] == [mine.id]
    assert client.get(f"/v1/grants/{mine.id}", headers=unscoped).status_code == 403
    r = client.get("/v1/grants", headers=reader)
    assert r.status_code == 422 and r.json()["error"]["field"] == "subscriber_id"
    spec = client.get("/openapi.json").json()
    assert (
        "/v1/grants" in spec["paths"] and "/v1/partners/{partner_code}/callbacks" in spec["paths"]
    )


def test_partner_callback_endpoint(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        grant = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=w["direct"],
            source="t",
            idempotency_key="cb",
            zone=ZONE,
        ).grant
        s.commit()
    url = "/v1/partners/tencent-video/callbacks"
    body = json.dumps(
        {"callback_id": "c-1", "grant_id": grant.id, "order_id": "T-9", "status": "fulfilled"}
    ).encode()
    now = int(clock.now().timestamp())
    good = {SIGNATURE_HEADER: sign(SECRET, body, timestamp=now), "content-type": "application/json"}
    r = client.post(
        url, content=body, headers={**good, SIGNATURE_HEADER: sign("x", body, timestamp=now)}
    )
    assert r.status_code == 401 and r.json()["error"]["field"] == "signature"
    r = client.post(url, content=b"{not json", headers=good)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    bad = json.dumps({"callback_id": "c-1", "grant_id": grant.id, "status": "maybe"}).encode()
    r = client.post(url, content=bad, headers={SIGNATURE_HEADER: sign(SECRET, bad, timestamp=now)})
    assert r.status_code == 422 and r.json()["error"]["field"] == "status"
    with web_sessions() as s:
        assert s.get(Grant, grant.id).status == "pending"  # type: ignore[union-attr]
    r = client.post(url, content=body, headers=good)
    assert r.status_code == 200 and r.json() == {
        "grant_id": grant.id,
        "outcome": "fulfilled",
        "duplicate": False,
    }
    r = client.post(url, content=body, headers=good)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    with web_sessions() as s:
        g = s.get(Grant, grant.id)
        assert g is not None and g.status == "fulfilled" and g.partner_order_id == "T-9"
        callers = s.scalars(
            select(AuditEntry.actor_kind).where(AuditEntry.action == "grant.callback")
        ).all()
        assert callers == ["partner"]


def test_status_change_through_the_api_binds_grants(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        grant = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=w["card"],
            source="t",
            idempotency_key="st",
            zone=ZONE,
        ).grant
        s.commit()
        headers = _bearer(make_api_key(s, scopes=["subscribers:status"]))
    r = client.post(
        f"/v1/subscribers/{w['gd']}/status",
        headers=headers,
        json={"status": "suspended", "reason": "unpaid"},
    )
    assert r.status_code == 200, r.text
    with web_sessions() as s:
        g = s.get(Grant, grant.id)
        assert g is not None and (g.status, g.paused_from) == ("paused", "fulfilled")


def _console(client: TestClient, web_sessions: sessionmaker[Session]) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="clerk", role=Role.CLERK, region="GD01S1")


def test_console_grant_search_by_phone_is_masked_and_scoped(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _console(client, web_sessions)
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        for key, sid in (("p-1", w["gd"]), ("p-2", w["zj"])):
            grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=w["card"],
                source="t",
                idempotency_key=key,
                zone=ZONE,
            )
        s.commit()
        gd_phone = subscribers.get_subscriber(
            s, actor=SYSTEM, vault=vault, subscriber_id=w["gd"], reveal=True
        ).phone
        zj_phone = subscribers.get_subscriber(
            s, actor=SYSTEM, vault=vault, subscriber_id=w["zj"], reveal=True
        ).phone
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/grants").text)

    def search(phone: str) -> Any:
        return client.post("/console/grants/search", data={"phone": phone, "csrf_token": token})

    r = search(gd_phone)
    assert r.status_code == 200
    assert f"{gd_phone[:3]}****{gd_phone[-4:]}" in r.text and gd_phone not in r.text
    assert 'id="grant-count">1<' in r.text and "已发放" in r.text
    assert "dead-letters-link" not in r.text
    assert search(zj_phone).status_code == 403
    r = search("12345")
    assert r.status_code == 422 and "11-digit" in r.text
    assert search("13999999999").status_code == 404
    # A number in a URL is not searched (it would land in access logs and history).
    r = client.get(f"/console/grants?phone={gd_phone}")
    assert r.status_code == 200 and 'id="grant-count"' not in r.text
    assert client.post("/console/grants/search", data={"phone": gd_phone}).status_code == 403
    assert client.get("/console/grants/dead-letters").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/console").text)})
    sign_in(client, "clerk")
    assert client.get("/console/grants").status_code == 403


def test_dead_letter_list_and_redrive(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    _console(client, web_sessions)
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        grant = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=w["direct"],
            source="t",
            idempotency_key="dl",
            zone=ZONE,
        ).grant
        s.commit()
        [mid] = grants.claim_messages(s, worker="w", now=clock.now(), lease_s=30, limit=5)
        grants.record_outcome(
            s,
            message_id=mid,
            worker="w",
            backoff_base_s=0,
            callback_wait_s=0,
            outcome=Outcome(OutcomeKind.REJECTED, error="partner refused: HTTP 400 bad sku"),
        )
        s.commit()
    sign_in(client, "admin")
    page = client.get("/console/grants/dead-letters")
    assert page.status_code == 200 and "bad sku" in page.text and 'id="dead-total">1<' in page.text
    r = client.post(f"/console/grants/dead-letters/{mid}/redrive", data={})
    assert r.status_code == 403
    with web_sessions() as s:
        assert s.get(Grant, grant.id).status == "failed"  # type: ignore[union-attr]
    token = csrf_of(page.text)
    r = client.post(
        f"/console/grants/dead-letters/{mid}/redrive",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = client.post(f"/console/grants/dead-letters/{mid}/redrive", data={"csrf_token": token})
    assert r.status_code == 409
    with web_sessions() as s:
        assert s.get(Grant, grant.id).status == "pending"  # type: ignore[union-attr]
        assert (
            s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "pending")
            )
            == 1
        )
        actions = s.scalars(select(AuditEntry.action)).all()
        assert actions.count("grant.redrive") == 1
    chart = client.get(f"/console/benefits/{w['direct']}/grants-per-day.json?days=3").json()
    assert chart["kind"] == "bar" and chart["series"][0]["data"][-1] == 1


def test_h5_my_benefits_and_card_code_reveal(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    w = _world(web_sessions, vault)
    with web_sessions() as s:
        mine = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["gd"],
            benefit_id=w["card"],
            source="t",
            idempotency_key="h5-1",
            zone=ZONE,
        ).grant
        other = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=w["zj"],
            benefit_id=w["card"],
            source="t",
            idempotency_key="h5-2",
            zone=ZONE,
        ).grant
        s.commit()
        phone = subscribers.get_subscriber(
            s, actor=SYSTEM, vault=vault, subscriber_id=w["gd"], reveal=True
        ).phone
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=phone)
        s.commit()
    assert client.get("/h5/benefits").status_code == 401
    client.get(f"/h5/enter?t={signed}")
    assert 'href="/h5/benefits"' in client.get("/h5").text
    page = client.get("/h5/benefits")
    assert page.status_code == 200 and f'id="reveal-{mine.id}"' in page.text
    assert f"grant-{other.id}" not in page.text and "CODE-" not in page.text
    token = csrf_of(page.text)
    assert client.post(f"/h5/benefits/{mine.id}/reveal", data={}).status_code == 403
    r = client.post(f"/h5/benefits/{other.id}/reveal", data={"csrf_token": token})
    assert r.status_code == 404
    r = client.post(f"/h5/benefits/{mine.id}/reveal", data={"csrf_token": token})
    assert r.status_code == 200 and "CODE-" in r.text and r.headers["cache-control"] == "no-store"
    with web_sessions() as s:
        reveals = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "grant.reveal_code")
        ).all()
        assert [(a.actor_kind, a.target_id) for a in reveals] == [("subscriber", str(mine.id))]
