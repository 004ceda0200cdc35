"""The claim lane answers exactly what the claim route answers, and passes on what it can't."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import claim_lane
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.settings import Settings
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_subscribers

_phones = iter(range(1000, 9999))


def _client(settings: Settings, engine: Engine, *, lane: bool) -> TestClient:
    app = create_app(
        settings.model_copy(update={"database_url": str(engine.url), "claim_fast_lane": lane}),
        engine=engine,
    )
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def lane_and_route(
    settings: Settings, web_engine: Engine
) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        _client(settings, web_engine, lane=True) as lane,
        _client(settings, web_engine, lane=False) as route,
    ):
        yield lane, route


def _script(
    sessions: sessionmaker[Session], vault: Vault
) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every kind of answer, for a fresh set of subscribers and a batch of 2 units."""
    with sessions() as s:
        subs = make_subscribers(
            s, vault, [(f"1320000{next(_phones)}", "GD", "GD01") for _ in range(4)]
        )
        batch = make_batch(s, stock_total=2, limit_total=1)
        key = make_api_key(s, scopes=["coupons:claim"])
        read_only = make_api_key(s, scopes=["coupons:read"])
    url = f"/v1/coupon-batches/{batch.id}/claims"
    auth = {"authorization": f"Bearer {key}"}

    def body(sub: int, idem: str) -> dict[str, Any]:
        return {"subscriber_id": sub, "idempotency_key": idem}

    return [
        (url, body(subs[0], "first-claim"), auth),  # 201
        (url, body(subs[0], "first-claim"), auth),  # 200, replayed
        (url, body(subs[0], "second-claim"), auth),  # 409 limit
        (url, body(subs[1], "first-claim") | {"extra": 1}, auth),  # 422 from the schema
        (url, body(subs[1], "short"), auth),  # 422 idempotency_key too short
        (url, body(subs[1], "first-claim"), {}),  # 401 no key
        (url, body(subs[1], "first-claim"), {"authorization": "Bearer pk_nope"}),  # 401
        (url, body(subs[1], "first-claim"), {"authorization": f"Bearer {read_only}"}),  # 403
        (url, body(subs[1], "first-claim"), auth | {"x-device-id": "d" * 65}),  # 422 device
        (url, body(99_999_999, "first-claim"), auth),  # 404 subscriber
        ("/v1/coupon-batches/999999/claims", body(subs[1], "first-claim"), auth),  # 404 batch
        (url, body(subs[1], "first-claim"), auth | {"x-device-id": "phone-1"}),  # 201
        (url, body(subs[2], "first-claim"), auth),  # 409 sold out
    ]


def _answer(response: Any) -> tuple[Any, ...]:
    data = response.json()
    error = data.get("error", {}) if isinstance(data, dict) else {}
    return (
        response.status_code,
        error.get("code"),
        error.get("field"),
        data.get("replayed") if isinstance(data, dict) else None,
        sorted(k for k in data if isinstance(data, dict)),
        response.headers.get("content-type"),
        response.headers.get("x-frame-options"),
        response.headers.get("x-content-type-options"),
        response.headers.get("referrer-policy"),
        response.headers.get("content-security-policy"),
        response.headers.get("content-length"),
    )


def test_the_lane_and_the_route_give_the_same_answers(
    lane_and_route: tuple[TestClient, TestClient],
    web_sessions: sessionmaker[Session],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lane, route = lane_and_route
    answered_by_lane: list[int] = []
    answer = claim_lane.ClaimLane._answer

    async def counting(self: Any, scope: Any, batch_id: int, body: bytes, send: Any) -> bool:
        sent: list[int] = []

        async def watching(message: Any) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])
            await send(message)

        answered = await answer(self, scope, batch_id, body, watching)
        if answered:
            answered_by_lane.extend(sent)
        return answered

    monkeypatch.setattr(claim_lane.ClaimLane, "_answer", counting)
    via_lane = [
        _answer(lane.post(u, json=b, headers=h)) for u, b, h in _script(web_sessions, vault)
    ]
    assert answered_by_lane, "the lane answered nothing"
    lane_count = len(answered_by_lane)
    via_route = [
        _answer(route.post(u, json=b, headers=h)) for u, b, h in _script(web_sessions, vault)
    ]
    assert len(answered_by_lane) == lane_count, "the app without the lane used it"

    assert via_lane == via_route
    assert [a[0] for a in via_lane] == [
        201,
        200,
        409,
        422,
        422,
        401,
        401,
        403,
        422,
        404,
        404,
        201,
        409,
    ]
    # The lane answered the ordinary calls (a known key, a valid body and header), the route
    # the rest: no key, an unknown key, a body or header that does not validate.
    assert sorted(answered_by_lane) == sorted([201, 200, 409, 403, 404, 404, 201, 409])


def test_a_large_or_chunked_body_is_passed_on_whole(
    lane_and_route: tuple[TestClient, TestClient],
    web_sessions: sessionmaker[Session],
    vault: Vault,
) -> None:
    lane, _ = lane_and_route
    url, body, headers = _script(web_sessions, vault)[0]
    padded = dict(body, idempotency_key="k" * 120, note="x" * 5000)
    r = lane.post(url, json=padded, headers=headers)
    # Read past the lane's bound and handed to the route, which sees all of it.
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "note"
