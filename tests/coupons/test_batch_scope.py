"""Who may read a coupon batch over the API: permission, key scope and region, as the list."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.org.rules import Role
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_staff
from tests.web.helpers import sign_in


def _as(client: TestClient, username: str) -> TestClient:
    other = TestClient(client.app, base_url="http://127.0.0.1")
    sign_in(other, username)
    return other


def test_one_batch_is_read_only_by_those_who_may_read_batches(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        zj = make_batch(s, owner_region="ZJ").id
        gd = make_batch(s, owner_region="GD").id
        national = make_batch(s).id
        reader = make_api_key(s, scopes=["coupons:read"])
        claimer = make_api_key(s, scopes=["coupons:claim", "subscribers:read"])
        partner = make_api_key(s, scopes=["coupons:redeem"], owner="partner")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    for batch_id in (zj, gd, national):
        url = f"/v1/coupon-batches/{batch_id}"
        r = client.get(url, headers={"authorization": f"Bearer {reader}"})
        assert r.status_code == 200 and r.json()["id"] == batch_id
        for key in (claimer, partner):  # a key without coupons:read reads no batch
            r = client.get(url, headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 403, r.text
        assert (
            client.get(f"{url}/stock", headers={"authorization": f"Bearer {claimer}"}).status_code
            == 403
        )
    marketer, analyst, admin = _as(client, "gd"), _as(client, "analyst"), _as(client, "admin")
    # A province marketer reads its own and national batches, not another province's.
    assert marketer.get(f"/v1/coupon-batches/{gd}").status_code == 200
    assert marketer.get(f"/v1/coupon-batches/{national}").status_code == 200
    assert marketer.get(f"/v1/coupon-batches/{zj}").status_code == 403
    assert marketer.get(f"/v1/coupon-batches/{zj}/stock").status_code == 403
    # An analyst does not manage batches: refused one as the list is refused, stock too.
    assert analyst.get("/v1/coupon-batches").status_code == 403
    assert analyst.get(f"/v1/coupon-batches/{zj}").status_code == 403
    assert analyst.get(f"/v1/coupon-batches/{zj}/stock").status_code == 403
    # Refused before existence: an unknown id answers the same to a caller without the right.
    assert analyst.get("/v1/coupon-batches/99999").status_code == 403
    assert admin.get("/v1/coupon-batches/99999").status_code == 404
    assert admin.get(f"/v1/coupon-batches/{zj}").status_code == 200
