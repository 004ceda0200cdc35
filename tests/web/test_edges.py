"""The edge holds: ids past 64 bits, NUL and control characters, JSON `true`, huge bodies."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience.schemas import SegmentCreate
from perkflow.campaigns.models import SubscriberEvent
from perkflow.main import create_app
from perkflow.org.rules import API_SCOPES, Role
from perkflow.settings import Settings
from tests.factories import make_api_key, make_staff
from tests.web.helpers import sign_in

BIG = 2**63
NOW = "2026-11-01T08:00:00+08:00"


@pytest.fixture
def key(web_sessions: sessionmaker[Session]) -> str:
    with web_sessions() as s:
        return make_api_key(s, scopes=sorted(API_SCOPES))


@pytest.fixture
def any_client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """A client on the backend of `ledger_url` (SQLite and PostgreSQL)."""
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(settings.model_copy(update={"database_url": url}), engine=engine)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _id_routes(client: TestClient, prefix: str) -> list[tuple[str, str]]:
    """(method, path) of every route under `prefix` with an id in its path, ids set to 2^63."""
    found = []
    routes = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        included = getattr(route, "original_router", None)  # an included router's own routes
        routes += included.routes if included is not None else [route]
    for route in routes:
        if not isinstance(route, APIRoute) or not route.path.startswith(prefix):
            continue
        if not re.search(r"{\w+_id}", route.path):
            continue
        path = re.sub(r"{\w+_id}", str(BIG), route.path)
        path = re.sub(r"{\w+}", "x", path)
        found += [(method, path) for method in sorted(route.methods) if method != "HEAD"]
    return found


def test_every_api_id_past_64_bits_is_a_422(client: TestClient, key: str) -> None:
    routes = _id_routes(client, "/v1/")
    assert len(routes) > 30
    answers = {
        f"{m} {p}": client.request(m, p, headers={"authorization": f"Bearer {key}"}, json={})
        for m, p in routes
    }
    wrong = {k: (r.status_code, r.text[:120]) for k, r in answers.items() if r.status_code != 422}
    assert wrong == {}
    assert all(r.json()["error"]["code"] == "validation_failed" for r in answers.values())


def test_every_console_page_id_past_64_bits_is_a_422_page(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        make_staff(s, username="hq.edges", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "hq.edges")
    routes = [(m, p) for m, p in _id_routes(client, "/console/") if m == "GET"]
    assert len(routes) > 15
    wrong = {
        p: r.status_code for _, p in routes if (r := client.get(p)).status_code not in (404, 422)
    }
    assert wrong == {}


def test_query_ids_past_64_bits_and_json_true_are_refused(client: TestClient, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    assert client.get(f"/v1/grants?subscriber_id={BIG}", headers=auth).status_code == 422
    # `true` is not subscriber 1, neither through the claim lane nor the route behind it.
    r = client.post(
        "/v1/coupon-batches/1/claims",
        json={"subscriber_id": True, "idempotency_key": "true-is-not-one"},
        headers=auth,
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "subscriber_id"
    r = client.post("/v1/grants", json={"subscriber_id": True, "benefit_id": 1}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["field"] == "subscriber_id"
    r = client.post("/v1/grants", json={"subscriber_id": "1", "benefit_id": 1}, headers=auth)
    assert r.status_code == 422


def test_nul_and_control_characters_are_refused_on_both_backends(
    any_client: TestClient, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s:
        key = make_api_key(s, scopes=sorted(API_SCOPES))
    auth = {"authorization": f"Bearer {key}"}
    for name in ("a\u0000b", "bell\u0007", "new\nline"):
        r = any_client.post("/v1/segments", json={"name": name, "definition": {}}, headers=auth)
        assert r.status_code == 422 and r.json()["error"]["field"] == "name", r.text
    nested = {"name": "ok", "definition": {"rule": {"eq": "x\u0000"}}}
    r = any_client.post("/v1/segments", json=nested, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["field"] == "definition"
    r = any_client.post(
        "/v1/coupon-batches/1/claims",
        json={"subscriber_id": 1, "idempotency_key": "nul-\u0000-key"},
        headers=auth,
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "idempotency_key"
    r = any_client.post("/v1/members/1/bills/a%00b/reversal", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["field"] == "bill_ref"
    # Free text keeps its tabs and newlines; a line of text keeps none.
    assert SegmentCreate(name="ok", description="one\n\ttwo", definition={}).description


def test_a_value_the_driver_refuses_is_a_422_not_a_500(
    any_client: TestClient, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with sessions() as s:
        key = make_api_key(s, scopes=sorted(API_SCOPES))
    auth = {"authorization": f"Bearer {key}"}
    for error in (
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    ):

        def refuse(*args: object, error: Exception = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr("perkflow.grants.service.get_grant", refuse)
        r = any_client.get("/v1/grants/5", headers=auth)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_failed"


def _event(attributes: object) -> dict[str, object]:
    return {"type": "app_open", "subscriber_id": 1, "occurred_at": NOW, "attributes": attributes}


def test_bodies_over_the_limit_are_413_and_nothing_is_stored(
    client: TestClient, key: str, web_sessions: sessionmaker[Session]
) -> None:
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    big = b'{"type": "app_open", "attributes": {"a": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    r = client.post("/v1/events", content=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(64):
            yield b" " * 32768

    r = client.post("/v1/events", content=chunks(), headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    with web_sessions() as s:
        assert s.scalar(select(func.count()).select_from(SubscriberEvent)) == 0


def test_event_attributes_are_bounded_in_keys_depth_and_size(client: TestClient, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    for attributes, why in (
        ({f"k{n}": n for n in range(51)}, "more than 50 keys"),
        ({"a": {"b": {"c": {"d": 1}}}}, "nested deeper than 3"),
        ({"a": "x" * 1025}, "longer than 1024 bytes"),
        ({"a": BIG}, "64-bit"),
    ):
        r = client.post("/v1/events", json=_event(attributes), headers=auth)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "attributes" and why in r.json()["error"]["message"]


def test_anonymous_calls_are_401_before_their_body_is_read(client: TestClient) -> None:
    for body in (b"{not json", b'{"subscriber_id": true}', b""):
        r = client.post("/v1/grants", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = client.post("/v1/grants", json={}, headers={"authorization": "Bearer not-a-key"})
    assert r.status_code == 401


def test_openapi_declares_bearer_auth_errors_and_bounds(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, operations in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            answers = set(operation["responses"])
            assert {"401", "403", "404", "409", "422", "429"} <= answers, (method, path)
            if not path.endswith("/callbacks"):
                assert operation["security"] == [{"bearer": []}], (method, path)
            for parameter in operation.get("parameters", []):
                if parameter["name"].endswith("_id") and parameter["in"] == "path":
                    assert parameter["schema"]["maximum"] == 2**63 - 1, (path, parameter)
    claim = doc["components"]["schemas"]["ClaimIn"]["properties"]
    assert claim["idempotency_key"]["pattern"].startswith("^[^\\x00")
    # The values the server accepts are listed where it accepts only those.
    assert doc["components"]["schemas"]["ResponseIn"]["properties"]["kind"]["enum"] == [
        "claim",
        "redemption",
        "grant_use",
        "order",
    ]
    assert "active" in doc["components"]["schemas"]["StatusIn"]["properties"]["status"]["enum"]
