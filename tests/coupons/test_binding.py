"""Binding covers coupons: churn voids the unredeemed ones, suspension pauses them, and a clerk
is refused either with the reason (409)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon
from perkflow.coupons.rules import Refusal
from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

GD = [("13812340001", "GD", "GD01"), ("13812340002", "GD", "GD01")]


def _claim_code(session: Session, vault: Vault, batch_id: int, sid: int, key: str) -> str:
    coupons.claim_coupon(
        session,
        actor=coupons.subscriber_actor(sid),
        vault=vault,
        batch_id=batch_id,
        subscriber_id=sid,
        idempotency_key=key,
        channel="h5",
        device_id="dev-1",
        zone=ZONE,
    )
    session.commit()
    mine = coupons.wallet(
        session, actor=coupons.subscriber_actor(sid), vault=vault, subscriber_id=sid
    )
    return next(i.code for i in mine if i.coupon.batch_id == batch_id)


def _move(session: Session, sid: int, status: Status) -> grants.StatusChanged:
    changed = grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=status, reason="network", source="test"
    )
    session.commit()
    return changed


def _clerk(session: Session) -> Actor:
    user = make_staff(session, username="gz.clerk", role=Role.CLERK, region="GD01S1")
    return org.actor_for_staff(session, user=user, ip="127.0.0.1")


def _refusal(session: Session, clerk: Actor, vault: Vault, code: str) -> Refusal:
    with pytest.raises(coupons.Refused) as err:
        coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8000)
    session.rollback()
    assert err.value.status_code == 409
    return err.value.reason


def test_churn_voids_unredeemed_coupons_and_the_clerk_is_refused(
    session: Session, vault: Vault
) -> None:
    a, b = make_subscribers(session, vault, GD)
    first, second = make_batch(session), make_batch(session)
    used = _claim_code(session, vault, first.id, a, "bind-1")
    kept = _claim_code(session, vault, second.id, a, "bind-2")
    other = _claim_code(session, vault, first.id, b, "bind-3")
    clerk = _clerk(session)
    coupons.redeem_coupon(session, actor=clerk, vault=vault, code=used, order_fen=8000)
    session.commit()
    changed = _move(session, a, Status.CHURNED)
    assert changed.coupon_binding is not None and len(changed.coupon_binding.voided) == 1
    by_status = sorted(
        tuple(r) for r in session.execute(select(Coupon.subscriber_id, Coupon.status))
    )
    assert by_status == sorted([(a, "redeemed"), (a, "void"), (b, "claimed")])
    assert _refusal(session, clerk, vault, kept) == Refusal.VOID
    card = coupons.look_up_coupon(session, actor=clerk, vault=vault, code=kept)
    assert card.refusal is not None and card.refusal[0] == Refusal.VOID
    # Another subscriber's coupon is untouched.
    coupons.redeem_coupon(session, actor=clerk, vault=vault, code=other, order_fen=8000)
    session.commit()
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "coupon.binding")).one()
    assert entry.target_id == str(a) and entry.details["to"] == "void"


def test_suspension_pauses_and_reactivation_resumes(session: Session, vault: Vault) -> None:
    [a, _] = make_subscribers(session, vault, GD)
    code = _claim_code(session, vault, make_batch(session).id, a, "bind-4")
    clerk = _clerk(session)
    assert _move(session, a, Status.SUSPENDED).coupon_binding.paused  # type: ignore[union-attr]
    assert _refusal(session, clerk, vault, code) == Refusal.PAUSED
    assert _move(session, a, Status.ACTIVE).coupon_binding.resumed  # type: ignore[union-attr]
    done = coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8000)
    session.commit()
    assert done.discount_fen == 1000
    # Churn after suspension voids the paused coupon too.
    code = _claim_code(session, vault, make_batch(session).id, a, "bind-5")
    _move(session, a, Status.SUSPENDED)
    _move(session, a, Status.CHURNED)
    assert _refusal(session, clerk, vault, code) == Refusal.VOID


def test_clerk_page_and_api_refuse_a_churned_subscribers_coupon(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [a, _] = make_subscribers(s, vault, GD)
        make_staff(s, username="gz.clerk", role=Role.CLERK, region="GD01S1")
        code = _claim_code(s, vault, make_batch(s).id, a, "bind-6")
        _move(s, a, Status.CHURNED)
    sign_in(client, "gz.clerk")
    token = csrf_of(client.get("/clerk").text)
    page = client.post(
        "/clerk/redeem",
        data={"csrf_token": token, "code": code, "order_yuan": "60"},
        headers={"accept-language": "zh-CN"},
    )
    assert page.status_code == 409 and 'data-reason="void"' in page.text
    assert "用户已离网，此券已作废" in page.text
    api = client.post(
        "/v1/redemptions", headers={"x-csrf-token": token}, json={"code": code, "order_fen": 6000}
    )
    assert api.status_code == 409, api.text
    error = api.json()["error"]
    assert error["code"] == "redemption_refused" and error["details"]["reason"] == "void"
    assert "left the network" in error["message"]


def test_a_redemption_reversed_after_churn_leaves_the_coupon_void(
    session: Session, vault: Vault
) -> None:
    [a, _] = make_subscribers(session, vault, GD)
    code = _claim_code(session, vault, make_batch(session).id, a, "bind-7")
    clerk = _clerk(session)
    done = coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8000)
    session.commit()
    _move(session, a, Status.CHURNED)
    coupons.reverse_redemption(session, actor=clerk, redemption_id=done.id, reason="wrong till")
    session.commit()
    assert session.scalar(select(Coupon.status).where(Coupon.subscriber_id == a)) == "void"
    assert _refusal(session, clerk, vault, code) == Refusal.VOID


def test_a_suspended_subscriber_sees_the_coupon_paused_without_its_qr(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [a, _] = make_subscribers(s, vault, GD)
        code = _claim_code(s, vault, make_batch(s).id, a, "bind-7")
        coupon_id = s.scalars(select(Coupon.id).where(Coupon.subscriber_id == a)).one()
        _move(s, a, Status.SUSPENDED)
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=GD[0][0])
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303
    zh = {"accept-language": "zh-CN"}
    assert "号码停机期间暂停使用" in client.get("/h5/wallet", headers=zh).text
    page = client.get(f"/h5/wallet/{coupon_id}", headers=zh).text
    assert 'id="coupon-status">号码停机期间暂停使用<' in page
    assert 'id="coupon-qr"' not in page and code in page
