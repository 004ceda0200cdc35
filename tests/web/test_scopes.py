"""Every API scope opens the routes that name it: a key holding only that scope may call each."""

from __future__ import annotations

from fastapi.testclient import TestClient

from perkflow.org import service as org
from perkflow.org.rules import API_SCOPES, SCOPES, SYSTEM
from tests.web.test_access_matrix import World, ask, classify, world

__all__ = ["world"]  # the access matrix's seeded app, one per module

# scope → the routes that name it. A route listed under two scopes accepts either.
ROUTES: dict[str, list[tuple[str, str]]] = {
    "subscribers:read": [
        ("GET", "/v1/subscribers"),
        ("POST", "/v1/subscribers/search"),
        ("GET", "/v1/subscribers/{subscriber_id}"),
        ("GET", "/v1/subscribers/{subscriber_id}/events"),
    ],
    "subscribers:status": [("POST", "/v1/subscribers/{subscriber_id}/status")],
    "h5:link": [("POST", "/v1/h5-links")],
    "grants:read": [("GET", "/v1/grants"), ("GET", "/v1/grants/{grant_id}")],
    "grants:write": [
        ("POST", "/v1/grants"),
        ("GET", "/v1/grants"),
        ("GET", "/v1/grants/{grant_id}"),
    ],
    "catalog:read": [
        ("GET", "/v1/benefits"),
        ("GET", "/v1/benefits/{benefit_id}"),
        ("GET", "/v1/benefits/{benefit_id}/card-code-lots"),
        ("GET", "/v1/partners"),
        ("GET", "/v1/partners/{partner_id}"),
    ],
    "optouts:write": [("GET", "/v1/contact-lists"), ("POST", "/v1/contact-lists")],
    "coupons:read": [
        ("GET", "/v1/coupon-batches"),
        ("GET", "/v1/coupon-batches/{batch_id}"),
        ("GET", "/v1/coupon-batches/{batch_id}/stock"),
    ],
    "coupons:claim": [
        ("POST", "/v1/coupon-batches/{batch_id}/claims"),
        ("POST", "/v1/envelope-programs/{program_id}/draws"),
        ("GET", "/v1/subscribers/{subscriber_id}/coupons"),
    ],
    "coupons:redeem": [("POST", "/v1/redemptions"), ("POST", "/v1/redemptions/offline")],
    "members:read": [
        ("GET", "/v1/tiers"),
        ("GET", "/v1/members/{subscriber_id}"),
        ("GET", "/v1/points/liability"),
    ],
    "members:write": [
        ("POST", "/v1/members/{subscriber_id}/bills"),
        ("POST", "/v1/members/{subscriber_id}/plan"),
        ("POST", "/v1/members/{subscriber_id}/prepayments"),
        ("GET", "/v1/tiers"),
        ("GET", "/v1/members/{subscriber_id}"),
        ("GET", "/v1/points/liability"),
    ],
    "campaigns:read": [
        ("GET", "/v1/campaigns/{campaign_id}"),
        ("GET", "/v1/campaigns/{campaign_id}/progress"),
        ("GET", "/v1/campaigns/{campaign_id}/evaluation"),
    ],
    "events:write": [("POST", "/v1/events")],
    "responses:write": [("POST", "/v1/responses")],
}
# Redeeming is a partner merchant's: those keys belong to the partner of the seeded benefit.
PARTNER_SCOPES = {"coupons:redeem"}


def _client(w: World, *, scopes: list[str], partner: bool) -> TestClient:
    with w.app.state.sessions() as session:
        _, plaintext = org.create_api_key(
            session,
            actor=SYSTEM,
            name=f"only-{'-'.join(scopes)[:40]}-{len(w.clients)}",
            owner_kind="partner" if partner else "channel",
            owner_ref=w.params["partner_code"] if partner else None,
            scopes=scopes,
        )
        session.commit()
    c = TestClient(w.app, base_url="http://127.0.0.1")
    c.headers["authorization"] = f"Bearer {plaintext}"
    return c


def test_the_table_covers_every_scope_and_only_known_routes(world: World) -> None:
    assert set(ROUTES) == set(SCOPES) == API_SCOPES
    assert all(ROUTES.values())
    routes = {(m, p) for m, p in _app_routes(world)}
    for scope, named in ROUTES.items():
        assert set(named) <= routes, scope


def _app_routes(w: World) -> list[tuple[str, str]]:
    from tests.web.test_access_matrix import app_routes

    return app_routes(w.app)


def test_a_key_holding_only_a_scope_calls_every_route_that_names_it(world: World) -> None:
    refused: list[str] = []
    for scope, routes in ROUTES.items():
        name = f"only:{scope}"
        world.clients[name] = _client(world, scopes=[scope], partner=scope in PARTNER_SCOPES)
        for method, template in routes:
            cell = classify(ask(world, name, method, template))
            if cell in ("F", "U", "V") or cell.startswith("!"):
                refused.append(f"{scope} {method} {template}: {cell}")
    assert refused == []


def test_a_key_without_the_scope_is_refused_on_those_routes(world: World) -> None:
    accepting: dict[tuple[str, str], set[str]] = {}
    for scope, routes in ROUTES.items():
        for route in routes:
            accepting.setdefault(route, set()).add(scope)
    wrong: list[str] = []
    for route, scopes in sorted(accepting.items()):
        others = sorted(API_SCOPES - scopes)
        name = f"without:{route}"
        world.clients[name] = _client(world, scopes=others, partner=bool(scopes & PARTNER_SCOPES))
        cell = classify(ask(world, name, *route))
        if cell != "F":
            wrong.append(f"{route[0]} {route[1]} without {sorted(scopes)}: {cell}")
    assert wrong == []
