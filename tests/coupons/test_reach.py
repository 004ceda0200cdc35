"""A batch scoped so nobody can redeem it: a warning at create, a refusal where it is impossible."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog import service as catalog
from perkflow.catalog.schemas import PartnerCreate
from perkflow.coupons.models import CouponBatch
from perkflow.coupons.rules import (
    CouponValidity,
    ReachWarning,
    Scope,
    claim_validity_problem,
    reach_warnings,
)
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM, Role
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in

T0 = datetime(2026, 11, 11, tzinfo=UTC)
T1 = datetime(2026, 11, 20, tzinfo=UTC)


def test_a_store_scope_without_stores_leaves_nobody_or_only_partners() -> None:
    regions = Scope(region_paths=("CN/XX",))
    assert reach_warnings(scope=regions, stores_in_scope=0, unknown_partners=[]) == [
        ReachWarning(
            "scope_regions", "no_store", "no store is in the batch's scope: nobody can redeem it"
        )
    ]
    assert reach_warnings(scope=regions, stores_in_scope=3, unknown_partners=[]) == []
    both = Scope(region_paths=("CN/XX",), partners=("cafe",))
    [only] = reach_warnings(scope=both, stores_in_scope=0, unknown_partners=[])
    assert (only.field, only.kind) == ("scope_regions", "no_store")
    assert only.message == "no store is in the batch's scope: only partner merchants can redeem it"


def test_partner_merchants_that_do_not_exist_are_named() -> None:
    ghost = Scope(partners=("ghost",))
    found = reach_warnings(scope=ghost, stores_in_scope=0, unknown_partners=["ghost"])
    assert [(p.field, p.kind, p.code) for p in found] == [
        ("scope_partners", "unknown_partner", "ghost"),
        ("scope_partners", "no_partner", None),
    ]
    assert found[1].message == "no listed partner merchant exists: nobody can redeem it"
    some = Scope(partners=("cafe", "ghost"))
    [one] = reach_warnings(scope=some, stores_in_scope=0, unknown_partners=["ghost"])
    assert (one.kind, one.code, one.message) == (
        "unknown_partner",
        "ghost",
        "no partner merchant ghost: none redeems there",
    )


def test_a_validity_that_ends_before_claims_open_is_impossible() -> None:
    fixed = CouponValidity.FIXED
    assert claim_validity_problem(kind=fixed, valid_until=T0, claim_starts_at=T1)
    assert claim_validity_problem(kind=fixed, valid_until=T0, claim_starts_at=T0)
    assert claim_validity_problem(kind=fixed, valid_until=T1, claim_starts_at=T0) is None
    assert (
        claim_validity_problem(kind=CouponValidity.DAYS, valid_until=None, claim_starts_at=T1)
        is None
    )


def _body(code: str, **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "code": code,
        "name_zh": "满50减10",
        "name_en": "10 off 50",
        "amount_fen": 1000,
        "min_spend_fen": 5000,
        "stock_total": 100,
    }
    body.update(over)
    return body


def test_api_warns_about_a_merchant_scope_without_merchants_and_refuses_a_dead_window(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        catalog.create_partner(
            s,
            actor=SYSTEM,
            vault=vault,
            spec=PartnerCreate(code="cafe", name="Cafe", contact_email="ops@cafe.example"),
        )
        s.commit()
    sign_in(client, "admin")
    h = {"x-csrf-token": csrf_of(client.get("/console").text)}

    r = client.post("/v1/coupon-batches", json=_body("fine"), headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == []
    r = client.post("/v1/coupon-batches", json=_body("at-cafe", scope_partners=["cafe"]), headers=h)
    assert r.status_code == 201 and r.json()["warnings"] == []

    r = client.post(
        "/v1/coupon-batches", json=_body("at-ghost", scope_partners=["ghost"]), headers=h
    )
    assert r.status_code == 201, r.text
    warnings = r.json()["warnings"]
    assert {w["field"] for w in warnings} == {"scope_partners"}
    assert any("ghost" in w["message"] for w in warnings)
    assert any("nobody can redeem it" in w["message"] for w in warnings)
    # The console's batch page says so in the reader's language.
    page = client.get(f"/console/coupons/{r.json()['id']}", headers={"accept-language": "zh-CN"})
    assert page.status_code == 200
    assert 'id="reach-unknown_partner"' in page.text and "不存在合作商户 ghost" in page.text
    assert 'id="reach-no_partner"' in page.text

    dead = _body(
        "dead-window",
        validity_kind="fixed",
        valid_from="2026-11-01T00:00:00+08:00",
        valid_until="2026-11-10T00:00:00+08:00",
        claim_starts_at="2026-11-11T00:00:00+08:00",
    )
    r = client.post("/v1/coupon-batches", json=dead, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "valid_until"
    assert "before the claim window opens" in r.json()["error"]["message"]
    with web_sessions() as s:
        codes = set(s.scalars(select(CouponBatch.code)))
        assert "dead-window" not in codes and s.scalar(select(func.count(CouponBatch.id))) == 3
