"""Grants on SQLite and PostgreSQL: issue, idempotency, limits, stock, binding, expiry, re-drive."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.models import CardCode
from perkflow.catalog.rules import BenefitStatus, FulfilmentKind
from perkflow.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from perkflow.grants import service as grants
from perkflow.grants.models import Grant, GrantCounter, GrantEvent, PartnerCallback
from perkflow.grants.rules import SIGNATURE_HEADER, Outcome, OutcomeKind, sign
from perkflow.grants.tasks import OutboxWorker, WorkerConfig
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.subscribers.rules import Status
from tests.factories import make_api_key, make_benefit, make_partner, make_staff, make_subscribers
from tests.grants.helpers import (
    SECRET,
    ZONE,
    add_card_codes,
    fulfilled_events,
    outbox,
    partner_key,
    phones,
    stock_of,
)


def _issue(
    session: Session, sid: int, benefit_id: int, key: str, actor: Actor = SYSTEM
) -> grants.Issued:
    issued = grants.issue_grant(
        session,
        actor=actor,
        subscriber_id=sid,
        benefit_id=benefit_id,
        source="test",
        idempotency_key=key,
        zone=ZONE,
    )
    session.commit()
    return issued


def _actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_card_code_grant_is_fulfilled_with_its_own_code(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(session)
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.CARD_CODE)
    add_card_codes(session, vault, benefit=benefit, n=2)
    grant = _issue(session, sid, benefit.id, "k-1").grant
    assert grant.status == "fulfilled" and grant.card_code_id is not None
    assert grant.valid_until > clock.now() and grant.fulfilled_at is not None
    code = session.get(CardCode, grant.card_code_id)
    assert code is not None and code.status == "allocated"
    assert stock_of(session, benefit.id) == 1
    events = session.scalars(select(GrantEvent).where(GrantEvent.grant_id == grant.id)).all()
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "pending"),
        ("pending", "fulfilled"),
    ]
    assert "grant.issue" in _actions(session)
    assert outbox(session) == []


def test_direct_recharge_waits_in_the_outbox_committed_with_the_grant(
    session: Session, vault: Vault
) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(
        session, connector_url="http://127.0.0.1:9/orders", secret=SECRET, vault=vault
    )
    benefit = make_benefit(session, partner=partner, stock=5)
    grant = grants.issue_grant(
        session,
        actor=SYSTEM,
        subscriber_id=sid,
        benefit_id=benefit.id,
        source="test",
        idempotency_key="k-dr",
        zone=ZONE,
    ).grant
    # Before commit the message exists in the same transaction; after rollback neither does.
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Grant)) == 0 and outbox(session) == []
    grant = _issue(session, sid, benefit.id, "k-dr").grant
    [message] = outbox(session)
    assert grant.status == "pending" and message.grant_id == grant.id
    assert (message.kind, message.status, message.payload) == (
        "fulfil",
        "pending",
        {"took_stock": True},
    )
    assert stock_of(session, benefit.id) == 4


def test_coupon_and_service_benefits_are_fulfilled_at_once(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(session)
    coupon = make_benefit(session, partner=partner, code="coupon-10", kind=FulfilmentKind.COUPON)
    service = make_benefit(session, partner=partner, code="svc", kind=FulfilmentKind.SERVICE)
    c = _issue(session, sid, coupon.id, "k-c").grant
    s = _issue(session, sid, service.id, "k-s").grant
    assert c.status == s.status == "fulfilled"
    assert c.partner_order_id is not None and c.partner_order_id.startswith("CP-")
    assert s.partner_order_id == f"WO-{s.id:08d}"
    reasons = session.scalars(select(GrantEvent.reason).where(GrantEvent.grant_id == s.id)).all()
    assert any("work order" in r for r in reasons)


def test_the_same_key_returns_the_first_result(session: Session, vault: Vault) -> None:
    [sid, other] = make_subscribers(session, vault, phones(2))
    partner = make_partner(session)
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON, limit_total=5)
    first = _issue(session, sid, benefit.id, "same-key")
    again = _issue(session, sid, benefit.id, "same-key")
    assert not first.replayed and again.replayed and again.grant.id == first.grant.id
    assert session.scalar(select(func.count()).select_from(Grant)) == 1
    counted = session.scalar(select(GrantCounter.count).where(GrantCounter.period == "total"))
    assert counted == 1
    with pytest.raises(Conflict) as err:
        _issue(session, other, benefit.id, "same-key")
    assert err.value.field == "idempotency_key"
    with pytest.raises(ValidationFailed) as verr:
        _issue(session, sid, benefit.id, "  ")
    assert verr.value.field == "idempotency_key"


def test_limits_per_month_in_the_operator_zone_and_in_total(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(session)
    benefit = make_benefit(
        session, partner=partner, kind=FulfilmentKind.COUPON, limit_per_month=2, limit_total=3
    )
    # 2026-11-30 17:00 UTC is already 1 December in Shanghai: the December counter applies.
    frozen = clock.FrozenClock(datetime(2026, 11, 30, 15, 0, tzinfo=UTC))
    clock.set_clock(frozen)
    try:
        _issue(session, sid, benefit.id, "m1")
        _issue(session, sid, benefit.id, "m2")
        with pytest.raises(Conflict, match="per month") as err:
            _issue(session, sid, benefit.id, "m3")
        assert err.value.field == "benefit_id"
        session.rollback()
        frozen.advance(hours=2)
        assert _issue(session, sid, benefit.id, "m3").grant.period == "2026-12"
        with pytest.raises(Conflict, match="in total"):
            _issue(session, sid, benefit.id, "m4")
        session.rollback()
    finally:
        clock.set_clock(None)
    counters = dict(session.execute(select(GrantCounter.period, GrantCounter.count)).all())
    assert counters == {"2026-11": 2, "2026-12": 1, "total": 3}


def test_sold_out_is_409_and_changes_nothing(session: Session, vault: Vault) -> None:
    [a, b] = make_subscribers(session, vault, phones(2))
    partner = make_partner(session)
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON, stock=1)
    _issue(session, a, benefit.id, "s1")
    with pytest.raises(Conflict, match="sold out"):
        _issue(session, b, benefit.id, "s2")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Grant)) == 1
    assert session.scalar(select(func.count()).select_from(GrantCounter)) == 2  # a's only
    assert stock_of(session, benefit.id) == 0
    # The refused key is not burnt: it works once stock is back.
    benefit.stock_remaining = 1
    session.commit()
    assert not _issue(session, b, benefit.id, "s2").replayed


def test_only_listed_benefits_and_active_subscribers(session: Session, vault: Vault) -> None:
    [active] = make_subscribers(session, vault, phones(1))
    [suspended] = make_subscribers(session, vault, phones(1), status="suspended")
    partner = make_partner(session)
    draft = make_benefit(session, partner=partner, code="draft", status=BenefitStatus.DRAFT)
    listed = make_benefit(session, partner=partner, code="listed", kind=FulfilmentKind.COUPON)
    with pytest.raises(Conflict, match="not listed"):
        _issue(session, active, draft.id, "x1")
    session.rollback()
    with pytest.raises(Conflict, match="suspended") as err:
        _issue(session, suspended, listed.id, "x2")
    assert err.value.field == "subscriber_id"
    session.rollback()
    with pytest.raises(NotFound):
        _issue(session, 999_999_999, listed.id, "x3")
    session.rollback()
    with pytest.raises(NotFound):
        _issue(session, active, 999_999, "x4")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Grant)) == 0


def test_who_may_issue(session: Session, vault: Vault) -> None:
    [gd, zj] = make_subscribers(session, vault, phones(1) + phones(1, "ZJ", "ZJ01"))
    partner = make_partner(session)
    other = make_partner(session, code="netease-music")
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON)
    foreign = make_benefit(session, partner=other, code="music", kind=FulfilmentKind.COUPON)
    user = make_staff(session, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    marketer = org.actor_for_staff(session, user=user, ip="-")
    analyst_user = make_staff(session, username="an", role=Role.ANALYST, region="CN")
    analyst = org.actor_for_staff(session, user=analyst_user, ip="-")
    assert _issue(session, gd, benefit.id, "p1", marketer).grant.status == "fulfilled"
    with pytest.raises(Forbidden):
        _issue(session, zj, benefit.id, "p2", marketer)
    session.rollback()
    with pytest.raises(Forbidden):
        _issue(session, gd, benefit.id, "p3", analyst)
    session.rollback()
    reader = org.actor_for_api_key(
        session, presented=make_api_key(session, scopes=["grants:read"]), ip="-"
    )
    assert reader is not None
    with pytest.raises(Forbidden):
        _issue(session, gd, benefit.id, "p4", reader)
    session.rollback()
    key = partner_key(session, partner_code=partner.code, scopes=["grants:write"])
    actor = org.actor_for_api_key(session, presented=key, ip="-")
    assert actor is not None
    assert _issue(session, zj, benefit.id, "p5", actor).grant.status == "fulfilled"
    with pytest.raises(NotFound):
        _issue(session, zj, foreign.id, "p6", actor)
    session.rollback()


def test_partner_key_sees_only_its_own_grants(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    mine, theirs = make_partner(session, code="mine"), make_partner(session, code="theirs")
    b1 = make_benefit(session, partner=mine, code="b1", kind=FulfilmentKind.COUPON)
    b2 = make_benefit(session, partner=theirs, code="b2", kind=FulfilmentKind.COUPON)
    g1 = _issue(session, sid, b1.id, "v1").grant
    g2 = _issue(session, sid, b2.id, "v2").grant
    actor = org.actor_for_api_key(
        session, presented=partner_key(session, partner_code="mine", scopes=["grants:read"]), ip="-"
    )
    assert actor is not None
    assert grants.get_grant(session, actor=actor, grant_id=g1.id).id == g1.id
    with pytest.raises(NotFound):
        grants.get_grant(session, actor=actor, grant_id=g2.id)
    rows, total = grants.list_grants(session, actor=actor, subscriber_id=sid)
    assert total == 1 and [g.id for g in rows] == [g1.id]
    rows, total = grants.list_grants(session, actor=SYSTEM, subscriber_id=sid)
    assert total == 2


def _bound_setup(session: Session, vault: Vault) -> tuple[int, dict[str, Grant], int]:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(
        session,
        connector_url="http://127.0.0.1:9/orders",
        secret=SECRET,
        vault=vault,
        supports_revoke=True,
    )
    card = make_benefit(session, partner=partner, code="card", kind=FulfilmentKind.CARD_CODE)
    add_card_codes(session, vault, benefit=card, n=3)
    direct = make_benefit(session, partner=partner, code="direct", stock=10)
    keep = make_benefit(
        session, partner=partner, code="keep", kind=FulfilmentKind.COUPON, revocable=False
    )
    made = {
        "card": _issue(session, sid, card.id, "b-card").grant,
        "direct": _issue(session, sid, direct.id, "b-direct").grant,
        "keep": _issue(session, sid, keep.id, "b-keep").grant,
    }
    return sid, made, direct.id


def _status(session: Session, grant_id: int) -> tuple[str, str | None]:
    session.expire_all()
    g = session.get(Grant, grant_id)
    assert g is not None
    return g.status, g.paused_from


def test_churn_revokes_returns_pending_stock_and_tells_the_partner(
    session: Session, vault: Vault
) -> None:
    sid, made, direct_id = _bound_setup(session, vault)
    assert stock_of(session, direct_id) == 9
    changed = grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.CHURNED, reason="left", source="cli"
    )
    session.commit()
    assert changed.event.to_status == "churned"
    assert sorted(changed.binding.revoked) == sorted([made["card"].id, made["direct"].id])
    assert _status(session, made["card"].id) == ("revoked", None)
    assert _status(session, made["direct"].id) == ("revoked", None)
    assert _status(session, made["keep"].id)[0] == "fulfilled"  # not revocable
    assert stock_of(session, direct_id) == 10  # the pending grant's unit came back
    kinds = [(m.grant_id, m.kind, m.status) for m in outbox(session)]
    # The fulfilment that never went out is cancelled; the card code's partner is told to revoke.
    assert (made["direct"].id, "fulfil", "done") in kinds
    assert (made["card"].id, "revoke", "pending") in kinds
    assert (made["direct"].id, "revoke", "pending") not in kinds
    assert "grant.binding" in _actions(session)


def test_suspension_pauses_and_reactivation_resumes(session: Session, vault: Vault) -> None:
    sid, made, _ = _bound_setup(session, vault)
    grants.change_subscriber_status(
        session,
        actor=SYSTEM,
        subscriber_id=sid,
        status=Status.SUSPENDED,
        reason="bill",
        source="api",
    )
    session.commit()
    assert _status(session, made["card"].id) == ("paused", "fulfilled")
    assert _status(session, made["direct"].id) == ("paused", "pending")
    assert _status(session, made["keep"].id) == ("fulfilled", None)
    changed = grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.ACTIVE, reason="paid", source="api"
    )
    session.commit()
    assert sorted(changed.binding.resumed) == sorted([made["card"].id, made["direct"].id])
    assert _status(session, made["card"].id) == ("fulfilled", None)
    assert _status(session, made["direct"].id) == ("pending", None)
    history = session.scalars(
        select(GrantEvent.to_status)
        .where(GrantEvent.grant_id == made["direct"].id)
        .order_by(GrantEvent.id)
    ).all()
    assert list(history) == ["pending", "paused", "pending"]
    # Suspended then churned: paused grants are revoked too.
    grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.SUSPENDED, reason="b", source="api"
    )
    grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.CHURNED, reason="c", source="api"
    )
    session.commit()
    assert _status(session, made["direct"].id)[0] == "revoked"


def test_refused_status_change_binds_nothing(session: Session, vault: Vault) -> None:
    sid, made, _ = _bound_setup(session, vault)
    with pytest.raises(Conflict):
        grants.change_subscriber_status(
            session, actor=SYSTEM, subscriber_id=sid, status=Status.ACTIVE, reason="x", source="api"
        )
    session.rollback()
    assert _status(session, made["card"].id) == ("fulfilled", None)


def test_expiry_job(session: Session, vault: Vault) -> None:
    [a, b] = make_subscribers(session, vault, phones(2))
    partner = make_partner(session)
    short = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON, valid_days=1)
    ga = _issue(session, a, short.id, "e1").grant
    gb = _issue(session, b, short.id, "e2").grant
    grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=b, status=Status.SUSPENDED, reason="x", source="api"
    )
    session.commit()
    assert grants.expire_grants(session, now=clock.now()) == 0
    later = ga.valid_until.replace(microsecond=0)
    assert grants.expire_grants(session, now=later) == 0  # valid until, not including, the end
    from datetime import timedelta

    n = grants.expire_grants(session, now=later + timedelta(seconds=1))
    session.commit()
    assert n == 2
    assert _status(session, ga.id)[0] == _status(session, gb.id)[0] == "expired"
    assert "grant.expire" in _actions(session)


def _callback(grant_id: int, *, callback_id: str = "cb-1", status: str = "fulfilled") -> bytes:
    body = {"callback_id": callback_id, "grant_id": grant_id, "order_id": "P-1", "status": status}
    return json.dumps(body).encode()


def test_callbacks_are_signed_deduplicated_and_fulfil_once(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(
        session, connector_url="http://127.0.0.1:9/orders", secret=SECRET, vault=vault
    )
    benefit = make_benefit(session, partner=partner, stock=3)
    grant = _issue(session, sid, benefit.id, "c-1").grant
    body = _callback(grant.id)
    now_ts = int(clock.now().timestamp())
    with pytest.raises(Unauthenticated):
        grants.receive_callback(
            session,
            vault=vault,
            partner_code=partner.code,
            body=body,
            signature=sign("wrong", body, timestamp=now_ts),
        )
    session.rollback()
    with pytest.raises(Unauthenticated, match="too old"):
        grants.receive_callback(
            session,
            vault=vault,
            partner_code=partner.code,
            body=body,
            signature=sign(SECRET, body, timestamp=now_ts - 3600),
        )
    session.rollback()
    with pytest.raises(NotFound):
        grants.receive_callback(
            session,
            vault=vault,
            partner_code="someone-else",
            body=body,
            signature=sign(SECRET, body, timestamp=now_ts),
        )
    session.rollback()
    assert _status(session, grant.id)[0] == "pending"
    first = grants.receive_callback(
        session,
        vault=vault,
        partner_code=partner.code,
        body=body,
        signature=sign(SECRET, body, timestamp=now_ts),
    )
    session.commit()
    again = grants.receive_callback(
        session,
        vault=vault,
        partner_code=partner.code,
        body=body,
        signature=sign(SECRET, body, timestamp=now_ts),
    )
    session.commit()
    other_copy = grants.receive_callback(
        session,
        vault=vault,
        partner_code=partner.code,
        body=_callback(grant.id, callback_id="cb-2"),
        signature=sign(SECRET, _callback(grant.id, callback_id="cb-2"), timestamp=now_ts),
    )
    session.commit()
    assert (first.outcome, first.duplicate) == ("fulfilled", False)
    assert again.duplicate and other_copy.outcome == "already"
    assert fulfilled_events(session, grant.id) == 1
    assert session.scalar(select(func.count()).select_from(PartnerCallback)) == 2
    assert [m.status for m in outbox(session)] == ["done"]
    assert SIGNATURE_HEADER.lower().startswith("x-")


def test_last_failure_fails_the_grant_returns_stock_and_redrive_reserves_again(
    session: Session, vault: Vault
) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(
        session,
        connector_url="http://127.0.0.1:9/orders",
        secret=SECRET,
        vault=vault,
        max_attempts=2,
    )
    benefit = make_benefit(session, partner=partner, stock=1, limit_total=1)
    grant = _issue(session, sid, benefit.id, "f-1").grant
    assert stock_of(session, benefit.id) == 0
    for attempt in (1, 2):
        [mid] = grants.claim_messages(session, worker="w", now=clock.now(), lease_s=30, limit=10)
        what = grants.record_outcome(
            session,
            message_id=mid,
            worker="w",
            outcome=Outcome(OutcomeKind.RETRY, error="HTTP 503"),
            backoff_base_s=0,
            callback_wait_s=0,
        )
        session.commit()
        assert what == ("retry" if attempt == 1 else "dead")
    assert _status(session, grant.id)[0] == "failed"
    assert stock_of(session, benefit.id) == 1
    total = session.scalar(select(GrantCounter.count).where(GrantCounter.period == "total"))
    assert total == 0
    rows, n = grants.dead_letters(session, actor=SYSTEM)
    assert (
        n == 1 and rows[0].grant.id == grant.id and "HTTP 503" in (rows[0].message.last_error or "")
    )
    admin = org.actor_for_staff(
        session, user=make_staff(session, username="a", role=Role.HQ_ADMIN, region="CN"), ip="-"
    )
    marketer = org.actor_for_staff(
        session,
        user=make_staff(session, username="m", role=Role.PROVINCE_MARKETER, region="GD"),
        ip="-",
    )
    with pytest.raises(Forbidden):
        grants.redrive(session, actor=marketer, message_id=rows[0].message.id, zone=ZONE)
    session.rollback()
    new = grants.redrive(session, actor=admin, message_id=rows[0].message.id, zone=ZONE)
    session.commit()
    assert _status(session, grant.id)[0] == "pending" and new.status == "pending"
    assert stock_of(session, benefit.id) == 0
    with pytest.raises(Conflict):
        grants.redrive(session, actor=admin, message_id=rows[0].message.id, zone=ZONE)
    session.rollback()
    assert grants.dead_letters(session, actor=SYSTEM)[1] == 0
    assert "grant.redrive" in _actions(session)


def test_a_paused_grant_is_not_sent_and_costs_no_attempt(session: Session, vault: Vault) -> None:
    who = phones(1)
    [sid] = make_subscribers(session, vault, who)
    partner = make_partner(
        session, connector_url="http://127.0.0.1:9/orders", secret=SECRET, vault=vault
    )
    benefit = make_benefit(session, partner=partner)
    grant = _issue(session, sid, benefit.id, "pz").grant
    grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.SUSPENDED, reason="x", source="api"
    )
    session.commit()
    [mid] = grants.claim_messages(session, worker="w", now=clock.now(), lease_s=30, limit=10)
    delivery = grants.prepare_delivery(
        session, vault=vault, message_id=mid, worker="w", callback_base="http://x", defer_s=60
    )
    session.commit()
    [message] = outbox(session)
    assert delivery is None and message.attempts == 0 and message.status == "pending"
    assert message.next_attempt_at > clock.now()
    grants.change_subscriber_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.ACTIVE, reason="x", source="api"
    )
    session.commit()
    [mid] = grants.claim_messages(session, worker="w", now=clock.now(), lease_s=30, limit=10)
    delivery = grants.prepare_delivery(
        session, vault=vault, message_id=mid, worker="w", callback_base="http://cb", defer_s=60
    )
    assert delivery is not None and delivery.grant_id == grant.id
    body = json.loads(delivery.body)
    assert body["idempotency_key"] == "pz" and body["callback_url"].startswith(
        "http://cb/v1/partners/"
    )
    assert len(body["subscriber_ref"]) == 32
    assert who[0][0] not in delivery.body.decode()  # partners never see the phone number


def test_reveal_only_to_the_grants_subscriber_and_audited(session: Session, vault: Vault) -> None:
    [a, b] = make_subscribers(session, vault, phones(2))
    partner = make_partner(session)
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.CARD_CODE)
    codes = add_card_codes(session, vault, benefit=benefit, n=1)
    grant = _issue(session, a, benefit.id, "r1").grant
    with pytest.raises(NotFound):
        grants.reveal_card_code(
            session,
            actor=grants.subscriber_actor(subscriber_id=b, ip="-"),
            vault=vault,
            grant_id=grant.id,
        )
    with pytest.raises(NotFound):
        grants.reveal_card_code(session, actor=SYSTEM, vault=vault, grant_id=grant.id)
    code, pin = grants.reveal_card_code(
        session,
        actor=grants.subscriber_actor(subscriber_id=a, ip="-"),
        vault=vault,
        grant_id=grant.id,
    )
    session.commit()
    assert (code, pin) == (codes[0], "0000")
    assert _actions(session).count("grant.reveal_code") == 1


def test_grants_per_day_chart(session: Session, vault: Vault) -> None:
    [a, b] = make_subscribers(session, vault, phones(2))
    partner = make_partner(session)
    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON)
    _issue(session, a, benefit.id, "d1")
    _issue(session, b, benefit.id, "d2")
    chart = grants.grants_per_day(session, actor=SYSTEM, benefit_id=benefit.id, days=7, zone=ZONE)
    assert chart["kind"] == "bar" and len(chart["categories"]) == 7
    assert chart["series"] == [{"name": "grants", "data": [0, 0, 0, 0, 0, 0, 2]}]


def test_a_message_that_crashes_the_worker_ends_in_the_dead_letters(
    session: Session, sessions: sessionmaker[Session], vault: Vault
) -> None:
    [sid] = make_subscribers(session, vault, phones(1))
    partner = make_partner(
        session,
        connector_url="http://127.0.0.1:9/orders",
        secret=SECRET,
        vault=vault,
        max_attempts=1,
    )
    partner.connector_secret_enc = b"not a ciphertext of anything"  # decrypting it raises
    session.commit()
    benefit = make_benefit(session, partner=partner, stock=2)
    grant = _issue(session, sid, benefit.id, "crash").grant
    worker = OutboxWorker(
        sessions=sessions, vault=vault, config=WorkerConfig(callback_base="http://x", concurrency=1)
    )
    try:
        worker.drain(max_seconds=10)
    finally:
        worker.close()
    assert worker.tally == {"crashed": 1}
    assert _status(session, grant.id)[0] == "failed" and stock_of(session, benefit.id) == 2
    [message] = outbox(session)
    assert message.status == "dead" and "worker error" in (message.last_error or "")
