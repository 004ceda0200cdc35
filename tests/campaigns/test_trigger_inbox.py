"""Event-triggered in-app contacts land in the inbox in the event's own transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import CampaignContact
from perkflow.channels import service as channels
from perkflow.channels.models import InboxMessage
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.campaigns.helpers import NOW, contacts, dispatcher, run, started
from tests.factories import make_api_key, make_subscribers


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def in_app_trigger(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "Thanks for topping up",
        "goal": {"kind": "order", "window_days": 7},
        "offer": {"kind": "none", "name": "流量包"},
        "variants": [
            {
                "key": "T",
                "channel": "in_app",
                "subject": "{{ offer_name }}",
                "body": "A gift for {{ masked_phone }} in {{ province }}",
            }
        ],
        "trigger": {"events": ["recharge"]},
        "control_share": 0,
    }
    raw.update(over)
    return raw


def _event(session: Session, vault: Vault, sid: int, key: str) -> campaigns.EventOutcome:
    return campaigns.record_event(
        session,
        actor=SYSTEM,
        vault=vault,
        type="recharge",
        subscriber_id=sid,
        occurred_at=NOW,
        idempotency_key=key,
        attributes={"amount_yuan": 50},
    )


def _inbox(sessions: sessionmaker[Session], sid: int) -> list[InboxMessage]:
    with sessions() as s:
        return list(s.scalars(select(InboxMessage).where(InboxMessage.subscriber_id == sid)))


class TestInAppTriggers:
    def test_delivered_when_the_event_commits_and_exactly_once(
        self, session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault
    ) -> None:
        (sid,) = make_subscribers(session, vault, [("13500000001", "GD", "GD01")])
        c = started(session, mart, vault, in_app_trigger())
        out = _event(session, vault, sid, "recharge-1")
        (t,) = out.triggered
        assert (t.cell, t.status) == ("target", "delivered")
        # Nothing is visible before the event's transaction commits ...
        assert _inbox(sessions, sid) == []
        session.commit()
        # ... and the message is there as soon as it has, without any worker.
        (message,) = _inbox(sessions, sid)
        assert message.contact_id == t.contact_id and message.campaign_id == c.id
        # The province is named, not coded.
        assert (message.title, message.body) == ("流量包", "A gift for 135****0001 in 广东")
        (row,) = contacts(session, c.id)
        assert (row.status, row.attempts, row.message_ref) == (
            "delivered",
            1,
            f"inbox-{message.id}",
        )
        assert row.contacted_at is not None and row.delivered_at is not None
        # The same event again (a client retry) and a later event contact nobody twice.
        again = _event(session, vault, sid, "recharge-1")
        assert again.replayed and again.event_id == out.event_id
        later = _event(session, vault, sid, "recharge-2")
        assert [x.status for x in later.triggered] == ["already_contacted"]
        session.commit()
        assert len(_inbox(sessions, sid)) == 1
        assert channels.unread_count(session, subscriber_id=sid) == 1

    def test_a_rolled_back_event_leaves_nothing_and_its_retry_delivers_once(
        self, session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault
    ) -> None:
        (sid,) = make_subscribers(session, vault, [("13500000002", "GD", "GD01")])
        c = started(session, mart, vault, in_app_trigger())
        assert _event(session, vault, sid, "lost").triggered[0].status == "delivered"
        session.rollback()  # e.g. the request failed after the service returned
        assert _inbox(sessions, sid) == [] and contacts(session, c.id) == []
        retry = _event(session, vault, sid, "lost")
        assert not retry.replayed, retry
        assert retry.triggered[0].status == "delivered", retry
        session.commit()
        assert len(_inbox(sessions, sid)) == 1

    def test_over_the_campaigns_rate_or_other_channels_wait_for_the_worker(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        a, b = make_subscribers(
            session, vault, [("13500000003", "GD", "GD01"), ("13500000004", "GD", "GD01")]
        )
        # One in-app message a second for this campaign: the first event uses the token.
        c = started(session, mart, vault, in_app_trigger(throttle={"in_app": 1}))
        assert _event(session, vault, a, "rate-a").triggered[0].status == "delivered"
        assert _event(session, vault, b, "rate-b").triggered[0].status == "queued"
        session.commit()
        assert _inbox(sessions, b) == []
        run(sessions, dispatcher(vault, settings), mart)
        assert {r.status for r in contacts(session, c.id)} == {"delivered"}
        with sessions() as s:
            total = s.scalar(select(func.count()).select_from(InboxMessage))
        assert total == 2
        # A webhook trigger is queued for the worker as before.
        hook = started(
            session,
            mart,
            vault,
            in_app_trigger(
                name="Webhook",
                variants=[{"key": "W", "channel": "webhook", "body": "Thanks"}],
            ),
        )
        d = _event(session, vault, a, "hook-a")
        by_campaign = {x.campaign_id: x for x in d.triggered}
        assert by_campaign[hook.id].status == "queued"
        row = session.get(CampaignContact, by_campaign[hook.id].contact_id)
        assert row is not None and row.status == "queued" and row.attempts == 0
        session.commit()


def test_the_inbox_has_the_message_when_the_event_call_returns(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings, vault: Vault
) -> None:
    mart = Mart(settings.mart_dir)
    with web_sessions() as s:
        (sid,) = make_subscribers(s, vault, [("13500000005", "ZJ", "ZJ01")])
        c = started(s, mart, vault, in_app_trigger())
        key = make_api_key(s, scopes=["events:write"])
    event = {
        "type": "recharge",
        "subscriber_id": sid,
        "occurred_at": "2026-11-02T10:00:00+08:00",
        "attributes": {"amount_yuan": 30},
        "idempotency_key": "crm-recharge-9",
    }
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/events", json=event, headers=auth)
    assert r.status_code == 200, r.text
    (t,) = r.json()["triggered"]
    assert (t["campaign_id"], t["status"]) == (c.id, "delivered")
    (message,) = _inbox(web_sessions, sid)
    assert message.contact_id == t["contact_id"]
    again = client.post("/v1/events", json=event, headers=auth)
    assert again.json()["replayed"] and len(_inbox(web_sessions, sid)) == 1
