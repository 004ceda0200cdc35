"""Coupon pages own their transaction: a refused form leaves nothing stored and shows why, and a
claim attempt is counted even when the claim is refused (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon, CouponBatch, RateBucket, Redemption
from perkflow.coupons.rules import CouponStatus, Refusal
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.coupons.factories import make_batch
from tests.factories import make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

PHONE = ("13812345678", "GD", "GD01")


@pytest.fixture
def app_sessions(settings: Settings, ledger_url: str) -> Iterator[tuple[TestClient, Any]]:
    engine = make_engine(ledger_url)
    app = create_app(settings.model_copy(update={"database_url": ledger_url}), engine=engine)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, make_session_factory(engine)
    engine.dispose()


def _count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _audited(sessions: sessionmaker[Session], action: str) -> int:
    return _count(sessions, AuditEntry, AuditEntry.action == action)


def _enter_h5(client: TestClient, sessions: sessionmaker[Session], vault: Vault) -> None:
    with sessions() as s:
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE[0])
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303


def _claim(client: TestClient, batch_id: int) -> Any:
    page = client.get("/h5/coupons")
    key = re.search(
        rf'action="/h5/coupons/{batch_id}/claim".*?name="idempotency_key" value="([^"]+)"',
        page.text,
        re.S,
    )
    assert key, "no claim form"
    form = {"csrf_token": csrf_of(page.text), "idempotency_key": key.group(1)}
    return client.post(f"/h5/coupons/{batch_id}/claim", data=form, follow_redirects=False)


def _then_refuse(real: Callable[..., Any], refusal: Exception) -> Callable[..., Any]:
    """The real service call, its writes done, then a refusal (one met after writing)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise refusal

    return wrapped


def _attempts(sessions: sessionmaker[Session], sid: int) -> int:
    with sessions() as s:
        return int(
            s.scalar(select(func.sum(RateBucket.count)).where(RateBucket.key == f"s:{sid}")) or 0
        )


def test_a_refused_claim_stores_no_coupon_but_its_attempt_counts(
    app_sessions: tuple[TestClient, sessionmaker[Session]],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        (sid,) = make_subscribers(s, vault, [PHONE])
        batch = make_batch(s, stock_total=5)
    _enter_h5(client, sessions, vault)
    refusal = Conflict("the claim was refused after it was written", field="batch_id")
    monkeypatch.setattr(coupons, "claim_coupon", _then_refuse(coupons.claim_coupon, refusal))
    r = _claim(client, batch.id)
    assert r.status_code == 409 and "the claim was refused after it was written" in r.text
    assert _count(sessions, Coupon, Coupon.subscriber_id == sid) == 0
    assert _audited(sessions, "coupon.claim") == 0
    # The attempt is in its own committed transaction: the 409's rollback keeps it.
    assert _attempts(sessions, sid) == 1
    monkeypatch.undo()
    assert _claim(client, batch.id).status_code == 303
    assert _count(sessions, Coupon, Coupon.subscriber_id == sid) == 1
    assert _attempts(sessions, sid) == 2


def test_a_claim_refused_by_its_limit_still_counts_the_attempt(
    app_sessions: tuple[TestClient, sessionmaker[Session]], vault: Vault
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        (sid,) = make_subscribers(s, vault, [PHONE])
        batch = make_batch(s, stock_total=5, limit_total=1)
    _enter_h5(client, sessions, vault)
    token = csrf_of(client.get("/h5/coupons").text)
    assert _claim(client, batch.id).status_code == 303
    # A fresh key (a second claim, over the limit), though the page no longer offers it.
    form = {"csrf_token": token, "idempotency_key": "k" * 12}
    refused = client.post(f"/h5/coupons/{batch.id}/claim", data=form, follow_redirects=False)
    assert refused.status_code == 409
    assert _count(sessions, Coupon, Coupon.subscriber_id == sid) == 1
    assert _attempts(sessions, sid) == 2


def _clerk_with_coupon(
    client: TestClient, sessions: sessionmaker[Session], vault: Vault
) -> tuple[str, str, int]:
    """A claimed coupon's code, a signed-in clerk's CSRF token, and the coupon's id."""
    with sessions() as s:
        make_subscribers(s, vault, [PHONE])
        make_staff(s, username="gz.clerk", role=Role.CLERK, region="GD01S1")
        batch = make_batch(s)
    _enter_h5(client, sessions, vault)
    wallet = client.get(_claim(client, batch.id).headers["location"])
    code = re.search(r'id="coupon-code">([^<]+)<', wallet.text)
    assert code
    client.cookies.clear()
    sign_in(client, "gz.clerk")
    counter = client.get("/clerk")
    with sessions() as s:
        coupon_id = s.scalar(select(Coupon.id).where(Coupon.batch_id == batch.id))
    assert coupon_id is not None
    return code.group(1), csrf_of(counter.text), coupon_id


def test_a_refused_redemption_leaves_the_coupon_unredeemed(
    app_sessions: tuple[TestClient, sessionmaker[Session]],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, sessions = app_sessions
    code, token, coupon_id = _clerk_with_coupon(client, sessions, vault)
    refusal = coupons.Refused(Refusal.DUPLICATE_UPLOAD, "refused after the redemption was written")
    monkeypatch.setattr(coupons, "redeem_coupon", _then_refuse(coupons.redeem_coupon, refusal))
    r = client.post("/clerk/redeem", data={"csrf_token": token, "code": code, "order_yuan": "60"})
    assert r.status_code == 409 and 'data-reason="duplicate_upload"' in r.text
    assert "refused after the redemption was written" in r.text
    # The counter shown again read what is stored: no redemption today.
    assert "/reverse" not in r.text
    assert _count(sessions, Redemption) == 0 and _audited(sessions, "coupon.redeem") == 0
    with sessions() as s:
        assert s.get(Coupon, coupon_id).status == CouponStatus.CLAIMED  # type: ignore[union-attr]
    monkeypatch.undo()
    ok = client.post("/clerk/redeem", data={"csrf_token": token, "code": code, "order_yuan": "60"})
    assert ok.status_code == 200 and _count(sessions, Redemption) == 1


def test_an_order_beyond_the_counters_bound_is_a_422_naming_the_field(
    app_sessions: tuple[TestClient, sessionmaker[Session]], vault: Vault
) -> None:
    client, sessions = app_sessions
    code, token, _ = _clerk_with_coupon(client, sessions, vault)
    # ¥999,999,999 is more fen than the redemption's order column holds (PostgreSQL integer).
    for amount, problem in (("999999999", "the amount is too large"), ("sixty", "such as 88")):
        r = client.post(
            "/clerk/redeem", data={"csrf_token": token, "code": code, "order_yuan": amount}
        )
        assert r.status_code == 422 and "order_yuan" in r.text and problem in r.text
    assert _count(sessions, Redemption) == 0


def test_a_refused_batch_leaves_no_batch(
    app_sessions: tuple[TestClient, sessionmaker[Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "hq")
    page = client.get("/console/coupons/new")
    refusal = ValidationFailed("refused after the batch was written", field="code")
    monkeypatch.setattr(coupons, "create_batch", _then_refuse(coupons.create_batch, refusal))
    form = {
        "csrf_token": csrf_of(page.text),
        "code": "refused-batch",
        "name_zh": "满100减20",
        "name_en": "20 off 100",
        "amount_yuan": "20",
        "min_spend_yuan": "100",
        "validity_kind": "days",
        "valid_days": "7",
        "stock_total": "100",
    }
    r = client.post("/console/coupons/new", data=form)
    assert r.status_code == 422 and "code: refused after the batch was written" in r.text
    assert 'value="refused-batch"' in r.text  # the values sent are shown again
    assert _count(sessions, CouponBatch) == 0 and _audited(sessions, "coupon_batch.create") == 0
