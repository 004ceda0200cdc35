"""Access matrix: every route of the app, asked by every kind of caller, answers as the table says.

The table is keyed by (method, path template) and the test is generated from the app's route
list, so a new route without a row fails. A cell says who may pass, not the business outcome:
`A` allowed (any answer that is not a refusal: 2xx, 3xx not to sign-in, 400, 409, 422 from the
service), `U` unauthenticated (401, or a redirect to /login), `F` forbidden (403), `N` not found
(404: the id is unknown, or scope hides it). A 5xx is always wrong, and so is a body that the
edge refuses (422 before the handler ran): the row's body must reach the permission check.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.coupons import service as coupons
from perkflow.db import make_engine, make_session_factory
from perkflow.envelopes import service as envelopes
from perkflow.envelopes.rules import ProgramKind, ProgramStatus
from perkflow.envelopes.schemas import ProgramSpec, TierSpec
from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import API_SCOPES, SYSTEM, Actor, Role
from perkflow.settings import Settings
from tests.campaigns.helpers import spec, staff, write_profile
from tests.conftest import TEST_SECRET
from tests.coupons.factories import make_batch
from tests.factories import make_benefit, make_partner, make_staff, make_subscribers
from tests.web.helpers import sign_in

ROLES = ("hq", "gd", "analyst", "clerk", "partner", "channel", "anon")
ZONE = "Asia/Shanghai"
ZJ_MARKETER = staff(Role.PROVINCE_MARKETER, "CN/ZJ", "zj")
ZJ_CLERK = Actor(
    kind="staff", id="zjclerk", name="zjclerk", role=Role.CLERK, scope_path="CN/ZJ/ZJ01/ZJ01S1"
)
ZJ_PHONE = "13700000001"
MISSING = 987654  # an id no object has: rows whose object is not seeded use it
PARTNER_SCOPES = ["catalog:read", "grants:read", "coupons:redeem"]
CHANNEL_SCOPES = sorted(API_SCOPES - {"coupons:redeem"})


@dataclass
class World:
    """The app, one client per role and the ids that fill path parameters."""

    app: FastAPI
    clients: dict[str, TestClient]
    tokens: dict[str, str]
    params: dict[str, str]
    bodies: dict[tuple[str, str], Any]
    forms: dict[tuple[str, str], dict[str, Any]]


def _seed(session: Session, mart: Mart, vault: Vault) -> tuple[dict[str, str], dict[str, Any]]:
    """Staff of every role, two keys and one object of each kind in ZJ."""
    for username, role, region in (
        ("admin", Role.HQ_ADMIN, "CN"),
        ("gd", Role.PROVINCE_MARKETER, "GD"),
        ("analyst", Role.ANALYST, "CN"),
        ("clerk", Role.CLERK, "ZJ01S1"),
    ):
        make_staff(session, username=username, role=role, region=region)
    partner = make_partner(session, code="tencent-video")
    _, partner_key = org.create_api_key(
        session,
        actor=SYSTEM,
        name="partner",
        owner_kind="partner",
        owner_ref=partner.code,
        scopes=PARTNER_SCOPES,
    )
    _, channel_key = org.create_api_key(
        session, actor=SYSTEM, name="channel", owner_kind="channel", scopes=CHANNEL_SCOPES
    )
    benefit = make_benefit(session, partner=partner)
    (sub_id,) = make_subscribers(session, vault, [(ZJ_PHONE, "ZJ", "ZJ01")])
    write_profile(mart, 40)
    issued = grants.issue_grant(
        session,
        actor=SYSTEM,
        subscriber_id=sub_id,
        benefit_id=benefit.id,
        source="api",
        idempotency_key="matrix-grant",
        zone=ZONE,
    )
    batch = make_batch(session, owner_region="ZJ", limit_total=5, min_spend_fen=0)
    claimed = [
        coupons.claim_coupon(
            session,
            actor=SYSTEM,
            vault=vault,
            batch_id=batch.id,
            subscriber_id=sub_id,
            idempotency_key=f"matrix-{n}",
            channel="api",
            device_id=None,
            zone=ZONE,
        )
        for n in range(2)
    ]
    codes = {
        i.coupon.id: i.code
        for i in coupons.wallet(session, actor=SYSTEM, vault=vault, subscriber_id=sub_id)
    }
    redemption = coupons.redeem_coupon(
        session, actor=ZJ_CLERK, vault=vault, code=codes[claimed[0].coupon.id], order_fen=9000
    )
    program = envelopes.create_program(
        session,
        actor=SYSTEM,
        spec=ProgramSpec(
            code="zj-lottery",
            name_zh="抽红包",
            name_en="Lucky draw",
            kind=ProgramKind.LOTTERY,
            owner_region="ZJ",
            budget_fen=100_000,
            limit_per_subscriber=100,
            tiers=[TierSpec(tier=1, name_zh="一等奖", name_en="Tier 1", prize_fen=1, weight_ppm=1)],
            seed="seed-for-matrix-01",
        ),
    )
    envelopes.set_program_status(
        session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
    )
    audience.set_universal_control(session, actor=SYSTEM, share_bp=0, rotation_days=90)
    segment = audience.create_segment(
        session, mart=mart, actor=ZJ_MARKETER, name="ZJ everyone", raw={}
    )
    target_list = audience.build_target_list(
        session,
        mart=mart,
        actor=ZJ_MARKETER,
        vault=vault,
        segment_id=segment.id,
        channel="in_app",
        control_share_bp=1000,
    )
    campaign = campaigns.create_campaign(
        session, actor=ZJ_MARKETER, mart=mart, raw=spec(segment.id, name="ZJ video month")
    )
    session.commit()
    ids = {
        "subscriber_id": str(sub_id),
        "benefit_id": str(benefit.id),
        "partner_id": str(partner.id),
        "partner_code": partner.code,
        "grant_id": str(issued.grant.id),
        "batch_id": str(batch.id),
        "coupon_id": str(claimed[1].coupon.id),
        "redemption_id": str(redemption.id),
        "program_id": str(program.id),
        "segment_id": str(segment.id),
        "target_list_id": str(target_list.id),
        "campaign_id": str(campaign.id),
        "code": "ZJ",
        "job_id": str(MISSING),
        "message_id": str(MISSING),
        "template_id": str(MISSING),
        "item_id": str(MISSING),
        "bill_ref": "matrix-bill",
        "token": "not-a-token",
    }
    facts = {
        "partner_key": partner_key,
        "channel_key": channel_key,
        "free_code": codes[claimed[1].coupon.id],
        "segment_id": segment.id,
        "subscriber_id": sub_id,
        "benefit_id": benefit.id,
        "batch_id": batch.id,
        "grant_id": issued.grant.id,
    }
    return ids, facts


def _mark_edge_refusals(app: FastAPI) -> None:
    """Tag a 422 from request validation, so the test can tell it from the service's."""
    original = app.exception_handlers[RequestValidationError]

    async def tagged(request: Request, exc: Exception) -> Any:
        response = await original(request, exc)
        response.headers["x-matrix-edge"] = "1"
        return response

    app.exception_handlers[RequestValidationError] = tagged


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("matrix")
    shutil.copyfile(sqlite_template, root / "ledger.sqlite3")
    url = f"sqlite:///{root / 'ledger.sqlite3'}"
    settings = Settings(home=root / "home", secret_key=TEST_SECRET, database_url=url)
    engine = make_engine(url)
    vault = Vault(settings.master_secret)
    with make_session_factory(engine)() as session:
        params, facts = _seed(session, Mart(settings.mart_dir), vault)
    app = create_app(settings, engine=engine)
    _mark_edge_refusals(app)
    clients: dict[str, TestClient] = {}
    tokens: dict[str, str] = {}
    with TestClient(app, base_url="http://127.0.0.1") as main:
        for role, username in (
            ("hq", "admin"),
            ("gd", "gd"),
            ("analyst", "analyst"),
            ("clerk", "clerk"),
        ):
            c = TestClient(app, base_url="http://127.0.0.1")
            sign_in(c, username)
            page = c.get("/clerk" if role == "clerk" else "/console")
            found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
            assert found, f"no CSRF token for {role}"
            tokens[role] = found.group(1)
            clients[role] = c
        for role in ("partner", "channel"):
            c = TestClient(app, base_url="http://127.0.0.1")
            c.headers["authorization"] = f"Bearer {facts[role + '_key']}"
            clients[role] = c
        clients["anon"] = TestClient(app, base_url="http://127.0.0.1")
        yield World(
            app=app,
            clients=clients,
            tokens=tokens,
            params=params,
            bodies=_bodies(app, facts),
            forms=_forms(facts),
        )
        main.close()
    engine.dispose()


# Field values a generated body takes by name, so that it names the seeded objects.
def _known(facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "subscriber_id": facts["subscriber_id"],
        "benefit_id": facts["benefit_id"],
        "segment_id": facts["segment_id"],
        "batch_id": facts["batch_id"],
        "phone": ZJ_PHONE,
        "idempotency_key": "matrix-key",
    }


def example(schema: dict[str, Any], defs: dict[str, Any], known: dict[str, Any], name: str) -> Any:
    """A small instance of a JSON schema: required fields only, the lowest values allowed."""
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[1]], defs, known, name)
    if name in known:
        return known[name]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return example(options[0], defs, known, name) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: example(props[k], defs, known, k) for k in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}), defs, known, name)] * schema.get("minItems", 0)
    if kind in ("integer", "number"):
        value = max(1, schema.get("minimum", 1))
        value = min(value, schema.get("maximum", value))
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return "2026-11-02T10:00:00+08:00"
        if schema.get("format") == "date":
            return "2026-11-02"
        return "matrix" + "x" * max(0, schema.get("minLength", 0) - 6)
    return {}


def _bodies(app: FastAPI, facts: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """A JSON body for each API route that takes one, from the OpenAPI document."""
    document = app.openapi()
    defs = document.get("components", {}).get("schemas", {})
    known = _known(facts)
    bodies: dict[tuple[str, str], Any] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                bodies[(method.upper(), path)] = example(schema, defs, known, "")
    bodies.update(_fixed_bodies(facts))
    return bodies


def _forms(facts: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Form fields of console posts that declare them (the CSRF token is added per role)."""
    return {
        ("POST", "/login"): {"username": "nobody", "password": "wrong-password-1"},
        ("POST", "/clerk/offline"): {"lines": "matrix"},
        ("POST", "/clerk/redeem"): {"code": facts["free_code"], "order_yuan": "90"},
        ("POST", "/console/benefits/{benefit_id}/status"): {"status": "listed"},
        ("POST", "/console/coupons/{batch_id}/status"): {"status": "active"},
        ("POST", "/console/envelopes/{program_id}/status"): {"status": "active"},
        ("POST", "/console/subscribers/{subscriber_id}/status"): {"status": "active"},
        ("POST", "/console/campaigns/{campaign_id}/rollout"): {"note": "matrix", "confirm": "yes"},
        ("POST", "/console/coupons/{batch_id}/edit"): BATCH_FORM,
        ("POST", "/console/coupons/new"): BATCH_FORM,
    }


BATCH_FORM = {
    "code": "matrix-batch",
    "name_zh": "满减",
    "name_en": "Money off",
    "value_kind": "amount",
    "amount_yuan": "1",
    "validity_kind": "days",
    "valid_days": "30",
    "stock_total": "10",
    "limit_total": "1",
    "code_source": "auto",
    "code_charset": "alnum",
    "code_length": "10",
}


# Uploads: a one-line file is enough to reach the handler.
FILES = {
    ("POST", "/console/benefits/{benefit_id}/codes"),
    ("POST", "/console/coupons/{batch_id}/codes/import"),
}
QUERIES = {("GET", "/v1/grants"): "subscriber_id"}


def _fixed_bodies(facts: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Bodies the schema alone cannot make valid enough to reach the permission check."""
    return {
        ("POST", "/v1/redemptions"): {"code": facts["free_code"], "order_fen": 9000},
        ("POST", "/v1/coupon-batches/{batch_id}/status"): {"status": "paused"},
        ("POST", "/v1/campaigns/{campaign_id}/rollout"): {"note": "matrix"},
        ("POST", "/v1/partners/{partner_code}/callbacks"): {
            "callback_id": "matrix-1",
            "grant_id": facts["grant_id"],
            "status": "fulfilled",
        },
    }


SKIP = {("GET", "/static")}  # a mount, not a route

# Routes asked last: they end the caller's session.
LAST = {("POST", "/logout"), ("POST", "/h5/logout")}


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app answers, HEAD aside."""
    found: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.routes):
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD" and route.path is not None:
                found.append((method, route.path))
    return [r for r in found if r not in SKIP]


def classify(response: Response) -> str:
    """The cell a response falls in."""
    status = response.status_code
    if status >= 500:
        return f"!{status}"
    if status == 422 and response.headers.get("x-matrix-edge"):
        return "V"
    if status == 401:
        return "U"
    if status in (302, 303, 307) and response.headers.get("location", "").startswith("/login"):
        return "U"
    if status == 403:
        return "F"
    if status == 404:
        return "N"
    return "A"


def ask(world: World, role: str, method: str, template: str) -> Response:
    """One request of a role to a route with real ids and a body that reaches the handler."""
    path = template
    for name, value in world.params.items():
        path = path.replace("{" + name + "}", value)
    client = world.clients[role]
    headers: dict[str, str] = {}
    token = world.tokens.get(role)
    if token:
        headers["x-csrf-token"] = token
    kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
    if method in ("POST", "PUT", "PATCH"):
        if path.startswith("/v1/"):
            headers["idempotency-key"] = f"matrix-{role}-{method}-{template}"[:120]
            kwargs["json"] = world.bodies.get((method, template), {})
        else:
            form = dict(world.forms.get((method, template), {}))
            if token:
                form["csrf_token"] = token
            kwargs["data"] = form
            if (method, template) in FILES:
                kwargs["files"] = {"file": ("codes.csv", b"MATRIXCODE0001\n", "text/csv")}
    if (method, template) in QUERIES:
        name = QUERIES[(method, template)]
        kwargs["params"] = {name: world.params[name]}
    return client.request(method, path, **kwargs)


# Role order: hq, gd, analyst, clerk, partner, channel, anon.
# Objects are in ZJ (gd is another province's marketer; clerk works in a ZJ store);
# the catalog (benefits, partners) is national.
TABLE: dict[tuple[str, str], str] = {
    ("GET", "/"): "AAAAAAA",
    ("GET", "/clerk"): "FFFAUUU",
    ("GET", "/clerk/lookup"): "FFFAUUU",
    ("GET", "/clerk/offline"): "FFFAUUU",
    ("POST", "/clerk/offline"): "FFFAFFF",
    ("POST", "/clerk/redeem"): "FFFAFFF",
    ("POST", "/clerk/redemptions/{redemption_id}/reverse"): "FFFAFFF",
    ("GET", "/console"): "AAAAUUU",
    ("GET", "/console/audit"): "AFFFUUU",
    ("GET", "/console/benefits"): "AAAFUUU",
    ("POST", "/console/benefits"): "AFFFFFF",
    ("GET", "/console/benefits/new"): "AFFFUUU",
    ("GET", "/console/benefits/{benefit_id}"): "AAAFUUU",
    ("POST", "/console/benefits/{benefit_id}"): "AFFFFFF",
    ("GET", "/console/benefits/{benefit_id}/codes"): "AAAFUUU",
    ("POST", "/console/benefits/{benefit_id}/codes"): "AFFFFFF",
    (
        "GET",
        "/console/benefits/{benefit_id}/codes/imports/{job_id}",
    ): "NNNNUUU",  # only its starter follows an import
    ("GET", "/console/benefits/{benefit_id}/grants-per-day.json"): "AAAFUUU",
    ("POST", "/console/benefits/{benefit_id}/status"): "AFFFFFF",
    ("GET", "/console/campaigns"): "AAAFUUU",
    ("GET", "/console/campaigns/approvals"): "AFFFUUU",
    ("GET", "/console/campaigns/new"): "AAFFUUU",
    ("POST", "/console/campaigns/new"): "AAFFFFF",
    ("GET", "/console/campaigns/segment-size"): "AAFFUUU",
    ("GET", "/console/campaigns/wizard/variant"): "AAFFUUU",  # was open to every role
    ("GET", "/console/campaigns/{campaign_id}"): "AFAFUUU",
    ("POST", "/console/campaigns/{campaign_id}/approve"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/dispatch"): "AFFFFFF",
    ("GET", "/console/campaigns/{campaign_id}/edit"): "AFFFUUU",
    ("POST", "/console/campaigns/{campaign_id}/edit"): "AFFFFFF",
    ("GET", "/console/campaigns/{campaign_id}/evaluation"): "AFAFUUU",
    ("GET", "/console/insights/programme"): "AAAFUUU",
    ("POST", "/console/campaigns/{campaign_id}/finish"): "AFFFFFF",
    ("GET", "/console/campaigns/{campaign_id}/monitor"): "AFAFUUU",
    ("GET", "/console/campaigns/{campaign_id}/monitor/live"): "AFAFUUU",
    ("POST", "/console/campaigns/{campaign_id}/pause"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/reject"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/resume"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/rollout"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/start"): "AFFFFFF",
    ("POST", "/console/campaigns/{campaign_id}/submit"): "AFFFFFF",
    ("GET", "/console/coupons"): "AAFFUUU",
    ("GET", "/console/coupons/new"): "AAFFUUU",
    ("POST", "/console/coupons/new"): "AAFFFFF",
    ("GET", "/console/coupons/{batch_id}"): "AFFFUUU",
    ("GET", "/console/coupons/{batch_id}/activity.json"): "AFFFUUU",
    ("POST", "/console/coupons/{batch_id}/codes/generate"): "AFFFFFF",
    ("POST", "/console/coupons/{batch_id}/codes/import"): "AFFFFFF",
    ("GET", "/console/coupons/{batch_id}/edit"): "AFFFUUU",
    ("POST", "/console/coupons/{batch_id}/edit"): "AFFFFFF",
    ("GET", "/console/coupons/{batch_id}/jobs"): "AFFFUUU",
    ("POST", "/console/coupons/{batch_id}/status"): "AFFFFFF",
    ("POST", "/console/coupons/{batch_id}/stock-additions"): "AFFFFFF",
    ("GET", "/console/envelopes"): "AAFFUUU",
    ("POST", "/console/envelopes/new"): "AAFFFFF",
    ("GET", "/console/envelopes/{program_id}"): "AFFFUUU",
    ("POST", "/console/envelopes/{program_id}/status"): "AFFFFFF",
    ("GET", "/console/extractions"): "AFAFUUU",
    ("POST", "/console/extractions"): "AFAFFFF",
    ("POST", "/console/extractions/{template_id}/run"): "NFNFFFF",
    ("GET", "/console/grants"): "AAAFUUU",
    ("POST", "/console/grants/search"): "AAAFFFF",
    ("GET", "/console/grants/dead-letters"): "AFFFUUU",
    ("POST", "/console/grants/dead-letters/{message_id}/redrive"): "NFFFFFF",
    ("GET", "/console/membership"): "AFAFUUU",
    ("GET", "/console/membership/rules"): "AFAFUUU",
    ("POST", "/console/membership/rules"): "AFFFFFF",
    ("POST", "/console/membership/rules/preview"): "AFFFFFF",
    ("GET", "/console/partners"): "AAAFUUU",
    ("POST", "/console/partners"): "AFFFFFF",
    ("GET", "/console/partners/new"): "AFFFUUU",
    ("GET", "/console/partners/{partner_id}"): "AAAFUUU",
    ("POST", "/console/partners/{partner_id}"): "AFFFFFF",
    ("GET", "/console/regions/{code}"): "AFAFUUU",
    ("GET", "/console/segments"): "AAAFUUU",
    ("POST", "/console/segments"): "AAFFFFF",
    ("GET", "/console/segments/builder/row"): "AAFFUUU",
    ("GET", "/console/segments/new"): "AAFFUUU",
    ("POST", "/console/segments/preview"): "AAAFFFF",
    ("GET", "/console/segments/{segment_id}"): "AFAFUUU",
    ("POST", "/console/segments/{segment_id}"): "AFFFFFF",
    ("POST", "/console/segments/{segment_id}/target-lists"): "AFFFFFF",
    ("GET", "/console/subscribers"): "AAAFUUU",
    ("POST", "/console/subscribers/search"): "AAAFFFF",
    ("GET", "/console/subscribers/{subscriber_id}"): "AFAFUUU",
    ("POST", "/console/subscribers/{subscriber_id}/status"): "AFFFFFF",
    ("GET", "/console/target-lists"): "AAAFUUU",
    ("GET", "/console/target-lists/{target_list_id}"): "AFAFUUU",
    ("GET", "/docs"): "AAAAAAA",
    ("GET", "/docs/oauth2-redirect"): "AAAAAAA",
    ("GET", "/h5"): "UUUUUUU",
    ("GET", "/h5/benefits"): "UUUUUUU",
    ("POST", "/h5/benefits/{grant_id}/reveal"): "UUUUFFF",
    ("GET", "/h5/coupons"): "UUUUUUU",
    ("POST", "/h5/coupons/{batch_id}/claim"): "UUUUFFF",
    ("GET", "/h5/enter"): "UUUUUUU",
    ("GET", "/h5/envelopes"): "UUUUUUU",
    ("GET", "/h5/envelopes/help/{token}"): "UUUUUUU",
    ("POST", "/h5/envelopes/help/{token}"): "UUUUFFF",
    ("POST", "/h5/envelopes/{program_id}/draw"): "UUUUFFF",
    ("POST", "/h5/envelopes/{program_id}/share"): "UUUUFFF",
    ("GET", "/h5/inbox"): "UUUUUUU",
    ("GET", "/h5/inbox/badge"): "UUUUUUU",
    ("POST", "/h5/inbox/{message_id}/read"): "UUUUFFF",
    ("POST", "/h5/logout"): "AAAAFFF",
    ("GET", "/h5/member"): "UUUUUUU",
    ("POST", "/h5/member/picks/{item_id}"): "UUUUFFF",
    ("GET", "/h5/wallet"): "UUUUUUU",
    ("GET", "/h5/wallet/{coupon_id}"): "UUUUUUU",
    ("GET", "/healthz"): "AAAAAAA",
    ("GET", "/lang/{code}"): "AAAAAAA",
    ("GET", "/login"): "AAAAAAA",
    ("GET", "/metrics"): "FFFFFFF",  # loopback scrapers or the metrics token only (test_metrics)
    ("POST", "/login"): "UUUUFFF",  # a wrong password: 401 (CSRF first for those without a session)
    ("POST", "/logout"): "UUUUFFF",  # allowed: the answer is the redirect to /login
    ("GET", "/openapi.json"): "AAAAAAA",
    ("GET", "/v1/audit"): "AFFFFFU",
    ("GET", "/v1/benefits"): "AAAFAAU",
    ("POST", "/v1/benefits"): "AFFFFFU",
    ("GET", "/v1/benefits/{benefit_id}"): "AAAFAAU",
    ("PATCH", "/v1/benefits/{benefit_id}"): "AFFFFFU",
    ("GET", "/v1/benefits/{benefit_id}/card-code-lots"): "AAAFAAU",
    ("POST", "/v1/benefits/{benefit_id}/status"): "AFFFFFU",
    ("POST", "/v1/campaigns"): "AAFFFFU",
    ("GET", "/v1/campaigns/{campaign_id}"): "AFAFFAU",
    ("POST", "/v1/campaigns/{campaign_id}/approve"): "FFFFFFU",
    ("GET", "/v1/campaigns/{campaign_id}/evaluation"): "AFAFFAU",
    ("GET", "/v1/insights/programme"): "AAAFFAU",
    ("POST", "/v1/campaigns/{campaign_id}/finish"): "AFFFFFU",
    ("POST", "/v1/campaigns/{campaign_id}/pause"): "AFFFFFU",
    ("GET", "/v1/campaigns/{campaign_id}/progress"): "AFAFFAU",
    ("POST", "/v1/campaigns/{campaign_id}/reject"): "AFFFFFU",
    ("POST", "/v1/campaigns/{campaign_id}/resume"): "AFFFFFU",
    ("POST", "/v1/campaigns/{campaign_id}/rollout"): "AFFFFFU",
    ("POST", "/v1/campaigns/{campaign_id}/start"): "AFFFFFU",
    ("POST", "/v1/campaigns/{campaign_id}/submit"): "AFFFFFU",
    ("GET", "/v1/contact-lists"): "AAAFFAU",
    ("POST", "/v1/contact-lists"): "AFFFFAU",
    ("DELETE", "/v1/contact-lists/{subscriber_id}"): "NFFFFNU",
    ("GET", "/v1/contact-policy"): "AAAFFFU",
    ("PUT", "/v1/contact-policy"): "AFFFFFU",
    ("GET", "/v1/coupon-batches"): "AAFFFAU",  # coupons:read
    ("POST", "/v1/coupon-batches"): "AAFFFFU",
    ("GET", "/v1/coupon-batches/{batch_id}"): "AFFFFAU",  # was open to any key or role
    ("POST", "/v1/coupon-batches/{batch_id}/claims"): "FFFFFAU",
    ("POST", "/v1/coupon-batches/{batch_id}/status"): "AFFFFFU",
    ("GET", "/v1/coupon-batches/{batch_id}/stock"): "AFFFFAU",
    ("POST", "/v1/coupon-batches/{batch_id}/stock-additions"): "AFFFFFU",
    ("POST", "/v1/envelope-programs/{program_id}/draws"): "FFFFFAU",
    ("POST", "/v1/events"): "AFFFFAU",
    ("GET", "/v1/extraction-templates"): "AFAFFFU",
    ("POST", "/v1/extraction-templates"): "AFAFFFU",
    ("GET", "/v1/grants"): "AFAFAAU",
    ("POST", "/v1/grants"): "AFFFFAU",
    ("GET", "/v1/grants/{grant_id}"): "AFAFAAU",
    ("POST", "/v1/h5-links"): "FFFFFAU",  # a channel's scope (h5:link); staff may not
    ("GET", "/v1/members/{subscriber_id}"): "AFAFFAU",
    ("POST", "/v1/members/{subscriber_id}/bills"): "AFFFFAU",
    ("POST", "/v1/members/{subscriber_id}/bills/{bill_ref}/reversal"): "NFFFFNU",
    ("POST", "/v1/members/{subscriber_id}/plan"): "AFFFFAU",
    ("POST", "/v1/members/{subscriber_id}/prepayments"): "AFFFFAU",
    ("GET", "/v1/partners"): "AAAFAAU",
    ("POST", "/v1/partners"): "AFFFFFU",
    (
        "POST",
        "/v1/partners/{partner_code}/callbacks",
    ): "UUUUUUU",  # signed by the partner's secret, no key
    ("GET", "/v1/partners/{partner_id}"): "AAAFAAU",
    ("PATCH", "/v1/partners/{partner_id}"): "AFFFFFU",
    ("GET", "/v1/points/liability"): "AFAFFAU",
    ("POST", "/v1/redemptions"): "FFFAAFU",
    ("POST", "/v1/redemptions/offline"): "FFFAAFU",
    ("POST", "/v1/redemptions/{redemption_id}/reverse"): "FFFAFFU",
    ("GET", "/v1/regions"): "AAAAAAU",
    ("POST", "/v1/responses"): "AFFFFAU",
    ("GET", "/v1/segments"): "AAAFFFU",
    ("POST", "/v1/segments"): "AAFFFFU",
    ("POST", "/v1/segments/count"): "AAAFFFU",
    ("POST", "/v1/segments/preview"): "AAAFFFU",
    ("GET", "/v1/segments/{segment_id}"): "AFAFFFU",
    ("GET", "/v1/segments/{segment_id}/versions"): "AFAFFFU",
    ("POST", "/v1/segments/{segment_id}/versions"): "AFFFFFU",
    ("GET", "/v1/subscribers"): "AAAFFAU",  # subscribers:read
    ("POST", "/v1/subscribers/search"): "AAAFFAU",
    ("GET", "/v1/subscribers/{subscriber_id}"): "AFAFFAU",
    (
        "GET",
        "/v1/subscribers/{subscriber_id}/coupons",
    ): "FFFFFAU",  # clear codes: the channel's alone
    ("GET", "/v1/subscribers/{subscriber_id}/events"): "AFAFFAU",
    ("POST", "/v1/subscribers/{subscriber_id}/status"): "AFFFFAU",
    ("GET", "/v1/target-lists"): "AAAFFFU",
    ("POST", "/v1/target-lists"): "AFFFFFU",
    ("GET", "/v1/target-lists/{target_list_id}"): "AFAFFFU",
    ("GET", "/v1/target-lists/{target_list_id}/rows"): "AFAFFFU",
    ("GET", "/v1/tiers"): "AFAFFAU",
    ("PUT", "/v1/tiers"): "AFFFFFU",
    ("POST", "/v1/tiers/preview"): "AFFFFFU",
    ("GET", "/v1/universal-control"): "AAAFFFU",
    ("PUT", "/v1/universal-control"): "AFFFFFU",
}


def test_every_route_has_a_row(world: World) -> None:
    routes = set(app_routes(world.app))
    assert routes - TABLE.keys() == set(), "routes without a row in the access matrix"
    assert TABLE.keys() - routes == set(), "rows for routes the app no longer has"


def test_every_role_gets_the_expected_answer(world: World) -> None:
    routes = sorted(app_routes(world.app), key=lambda r: (r in LAST, r))
    wrong = []
    for method, template in routes:
        row = TABLE.get((method, template), "?" * len(ROLES))
        for role, expected in zip(ROLES, row, strict=True):
            r = ask(world, role, method, template)
            got = classify(r)
            if got != expected:
                body = r.text[:160].replace("\n", " ")
                wrong.append(f"{method} {template} as {role}: {expected}, got {got} {body!r}")
    assert not wrong, f"{len(wrong)} unexpected answers:\n" + "\n".join(wrong)
