"""The in-app channel and inbox on SQLite and PostgreSQL; the H5 inbox page."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.channels import service as channels
from perkflow.channels.inbox import InAppChannel
from perkflow.channels.models import InboxMessage
from perkflow.channels.rules import Message
from perkflow.errors import NotFound
from perkflow.kit import clock
from perkflow.kit.clock import FrozenClock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.channels.helpers import msg
from tests.factories import make_subscribers
from tests.web.helpers import csrf_of


def _rows(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(InboxMessage)) or 0)


class TestInAppChannel:
    def test_messages_land_in_the_inbox_delivered(self, session: Session) -> None:
        results = InAppChannel().send(session, [msg(1, "1001", "你好"), msg(2, "1002")])
        session.commit()
        assert [(r.ok, r.delivered) for r in results] == [(True, True), (True, True)]
        [mine] = channels.inbox_for(session, subscriber_id=1001)
        assert (mine.title, mine.body, mine.contact_id, mine.campaign_id) == ("Hi", "你好", 1, 7)
        assert results[0].message_ref == f"inbox-{mine.id}"
        assert channels.unread_count(session, subscriber_id=1001) == 1

    def test_the_same_contact_twice_leaves_one_row(self, session: Session) -> None:
        channel = InAppChannel()
        first = channel.send(session, [msg(1, "1001")])
        session.commit()
        # A resend after a crash, and a batch carrying the contact twice.
        again = channel.send(session, [msg(1, "1001"), msg(1, "1001"), msg(2, "1002")])
        session.commit()
        assert _rows(session) == 2
        assert again[0].ok and again[0].message_ref == first[0].message_ref
        assert again[1].message_ref == first[0].message_ref

    def test_a_rolled_back_send_leaves_nothing(self, session: Session) -> None:
        InAppChannel().send(session, [msg(1, "1001")])
        session.rollback()
        assert _rows(session) == 0


class TestInbox:
    def test_newest_first_and_mark_read_only_your_own(self, session: Session) -> None:
        frozen = FrozenClock(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        clock.set_clock(frozen)
        try:
            InAppChannel().send(session, [msg(1, "1001", "old")])
            frozen.advance(minutes=5)
            note = channels.post_system_message(session, subscriber_id=1001, title="T", body="new")
            session.commit()
            assert [m.body for m in channels.inbox_for(session, subscriber_id=1001)] == [
                "new",
                "old",
            ]
            with pytest.raises(NotFound):
                channels.mark_read(session, subscriber_id=2002, message_id=note.id)
            read = channels.mark_read(session, subscriber_id=1001, message_id=note.id)
            assert read.read_at == frozen.current
            frozen.advance(minutes=5)
            # Reading again changes nothing.
            again = channels.mark_read(session, subscriber_id=1001, message_id=note.id)
            assert again.read_at == read.read_at
            session.commit()
            assert channels.unread_count(session, subscriber_id=1001) == 1
            assert channels.unread_count(session, subscriber_id=2002) == 0
        finally:
            clock.set_clock(None)


def test_address_for(settings: Settings) -> None:
    kw = {"phone": "13800000001", "subscriber_id": 42, "settings": settings}
    assert channels.address_for("sms", **kw) == "13800000001"
    assert channels.address_for("email", **kw) == "13800000001@mail.example.net"
    assert channels.address_for("in_app", **kw) == "42"
    assert channels.address_for("webhook", **kw) == "42"


def test_only_configured_channels_open(settings: Settings, vault: Vault) -> None:
    assert set(channels.open_channels(settings, vault=vault)) == {"in_app"}
    configured = settings.model_copy(
        update={"smpp_host": "127.0.0.1", "smtp_host": "127.0.0.1", "webhook_url": "http://x/"}
    )
    opened = channels.open_channels(configured, vault=vault)
    assert set(opened) == {"in_app", "sms", "email", "webhook"}
    channels.close_channels(opened)  # nothing was connected, nothing to fail


def test_the_h5_inbox_shows_messages_and_marks_them_read(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    phone = "13812345678"
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [(phone, "GD", "GD01")])
        InAppChannel().send(
            s,
            [
                Message(1, sid, 7, str(sid), "权益提醒", "流量包已到账 <b>"),
                Message(2, 999, 7, "999", "someone else's", "not yours"),
            ],
        )
        s.commit()
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=phone)
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303

    page = client.get("/h5/inbox", headers={"accept-language": "zh-CN"})
    assert page.status_code == 200
    assert "权益提醒" in page.text and "流量包已到账 &lt;b&gt;" in page.text
    assert "not yours" not in page.text
    assert "1 条未读" in page.text and 'id="inbox-unread-count">1<' in page.text
    found = re.search(r'action="/h5/inbox/(\d+)/read"', page.text)
    assert found
    message_id = int(found.group(1))
    csrf = csrf_of(page.text)

    # Without the CSRF token nothing changes.
    refused = client.post(f"/h5/inbox/{message_id}/read", data={}, follow_redirects=False)
    assert refused.status_code == 403
    # Someone else's message is a 404.
    with web_sessions() as s:
        other = s.scalar(select(InboxMessage.id).where(InboxMessage.subscriber_id == 999))
    assert client.post(f"/h5/inbox/{other}/read", data={"csrf_token": csrf}).status_code == 404

    r = client.post(
        f"/h5/inbox/{message_id}/read",
        headers={"hx-request": "true", "x-csrf-token": csrf},
    )
    assert r.status_code == 200 and r.headers["hx-trigger"] == "inbox-read"
    assert f'id="inbox-{message_id}"' in r.text and "/read" not in r.text
    badge = client.get("/h5/inbox/badge")
    assert "inbox-unread-count" not in badge.text
    page = client.get("/h5/inbox", headers={"accept-language": "en"})
    assert "0 unread" in page.text
    with web_sessions() as s:
        row = s.get(InboxMessage, message_id)
        assert row is not None and row.read_at is not None


def test_the_inbox_needs_an_h5_sign_in(client: TestClient) -> None:
    r = client.get("/h5/inbox", follow_redirects=False)
    assert r.status_code in (303, 401, 403)
