"""Subscriber master on SQLite and PostgreSQL: encryption at rest, scope, status events."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.errors import Conflict, Forbidden, Unauthenticated, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.models import StatusEvent, Subscriber
from perkflow.subscribers.rules import Status
from tests.factories import make_api_key, make_staff, make_subscribers

GD = ("13812345678", "GD", "GD01")
ZJ = ("13912345678", "ZJ", "ZJ01")


def _actor(session: Session, username: str, role: Role, region: str) -> Actor:
    user = make_staff(session, username=username, role=role, region=region)
    return org.actor_for_staff(session, user=user, ip="127.0.0.1")


def test_phone_is_encrypted_at_rest_and_found_by_keyed_hash(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, [GD])
    row = session.scalar(select(Subscriber).where(Subscriber.id == sid))
    assert row is not None
    assert b"13812345678" not in row.phone_enc and "13812345678" not in row.phone_hash
    found = subscribers.find_by_phone(session, vault=vault, phone="138-1234-5678")
    assert found is not None and found.id == sid


def test_views_mask_the_phone_and_reveal_needs_the_role(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, [GD])
    analyst = _actor(session, "an", Role.ANALYST, "CN")
    admin = _actor(session, "admin", Role.HQ_ADMIN, "CN")
    view = subscribers.get_subscriber(session, actor=analyst, vault=vault, subscriber_id=sid)
    assert view.phone == "138****5678"
    with pytest.raises(Forbidden):
        subscribers.get_subscriber(
            session, actor=analyst, vault=vault, subscriber_id=sid, reveal=True
        )
    full = subscribers.get_subscriber(
        session, actor=admin, vault=vault, subscriber_id=sid, reveal=True
    )
    assert full.phone == "13812345678"
    assert session.scalars(select(AuditEntry.action)).all().count("subscriber.reveal_phone") == 1


def test_province_marketer_sees_only_their_province(session: Session, vault: Vault) -> None:
    gd_id, zj_id = make_subscribers(session, vault, [GD, ZJ])
    marketer = _actor(session, "gd", Role.PROVINCE_MARKETER, "GD")
    rows, total = subscribers.list_subscribers(session, actor=marketer, vault=vault)
    assert total == 1 and rows[0].id == gd_id
    with pytest.raises(Forbidden):
        subscribers.get_subscriber(session, actor=marketer, vault=vault, subscriber_id=zj_id)
    with pytest.raises(Forbidden):
        subscribers.change_status(
            session,
            actor=marketer,
            subscriber_id=zj_id,
            status=Status.SUSPENDED,
            reason="x",
            source="console",
        )
    assert [c[0] for c in subscribers.counts(session, actor=marketer)] == ["GD"]


def test_status_change_is_kept_as_an_event_and_audited(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, [GD])
    event = subscribers.change_status(
        session,
        actor=SYSTEM,
        subscriber_id=sid,
        status=Status.SUSPENDED,
        reason="unpaid bill",
        source="cli",
    )
    session.commit()
    assert (event.from_status, event.to_status) == ("active", "suspended")
    subscribers.change_status(
        session, actor=SYSTEM, subscriber_id=sid, status=Status.ACTIVE, reason="paid", source="api"
    )
    session.commit()
    history = subscribers.status_history(session, actor=SYSTEM, subscriber_id=sid)
    assert [(e.from_status, e.to_status) for e in history] == [
        ("active", "suspended"),
        ("suspended", "active"),
    ]
    actions = session.scalars(select(AuditEntry.action)).all()
    assert actions.count("subscriber.change_status") == 2


def test_refused_status_change_changes_nothing(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, [GD], status="churned")
    with pytest.raises(Conflict) as err:
        subscribers.change_status(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            status=Status.ACTIVE,
            reason="win-back",
            source="api",
        )
    assert err.value.field == "status"
    with pytest.raises(ValidationFailed):
        subscribers.change_status(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            status=Status.SUSPENDED,
            reason="  ",
            source="api",
        )
    session.rollback()
    assert session.scalars(select(StatusEvent)).all() == []


def test_api_key_needs_the_status_scope(session: Session, vault: Vault) -> None:
    [sid] = make_subscribers(session, vault, [GD])
    plaintext = make_api_key(session, scopes=["h5:link"])
    actor = org.actor_for_api_key(session, presented=plaintext, ip="-")
    assert actor is not None
    with pytest.raises(Forbidden):
        subscribers.change_status(
            session,
            actor=actor,
            subscriber_id=sid,
            status=Status.SUSPENDED,
            reason="x",
            source="api",
        )


def test_login_token_expires(session: Session, vault: Vault) -> None:
    make_subscribers(session, vault, [GD])
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        sid, signed = subscribers.issue_login_token(session, actor=SYSTEM, vault=vault, phone=GD[0])
        frozen.advance(seconds=14 * 60)
        assert (
            subscribers.redeem_login_token(session, vault=vault, signed=signed, max_age_s=15 * 60)
            == sid
        )
        with pytest.raises(Unauthenticated, match="not valid"):
            subscribers.redeem_login_token(
                session, vault=vault, signed=signed[:-2] + "xx", max_age_s=15 * 60
            )
        frozen.advance(seconds=2 * 60)
        with pytest.raises(Unauthenticated, match="expired"):
            subscribers.redeem_login_token(session, vault=vault, signed=signed, max_age_s=15 * 60)
    finally:
        clock.set_clock(None)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_concurrent_status_changes_make_exactly_one_event(
    engine: Engine, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        [sid] = make_subscribers(s, vault, [GD])
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def worker(target: Status) -> None:
        with sessions() as s:
            barrier.wait()
            try:
                subscribers.change_status(
                    s, actor=SYSTEM, subscriber_id=sid, status=target, reason="race", source="api"
                )
                s.commit()
                outcomes.append("ok")
            except Conflict:
                s.rollback()
                outcomes.append("conflict")

    threads = [
        threading.Thread(target=worker, args=(Status.SUSPENDED if i % 2 else Status.CHURNED,))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        events = s.scalars(select(StatusEvent).where(StatusEvent.subscriber_id == sid)).all()
        final = s.get(Subscriber, sid)
    # Both suspended→churned and active→X can legally happen in sequence; every event must
    # start from the status the previous one ended in, and the row must match the last event.
    assert outcomes.count("ok") == len(events) >= 1
    prev = "active"
    for e in events:
        assert e.from_status == prev
        prev = e.to_status
    assert final is not None and final.status == prev
