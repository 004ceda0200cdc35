"""The universal control group gets nothing from any campaign: triggers and batch dispatch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.audience import holdout
from perkflow.audience import service as audience
from perkflow.campaigns.models import CampaignContact
from perkflow.channels.models import InboxMessage
from perkflow.cli.context import get_context
from perkflow.cli.main import app
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.campaigns.helpers import NOW, contacts, dispatcher, run, started
from tests.campaigns.test_trigger_inbox import in_app_trigger
from tests.factories import make_api_key, make_subscribers


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _rows(sessions: sessionmaker[Session], model: type, sid: int) -> list[object]:
    with sessions() as s:
        return list(s.scalars(select(model).where(model.subscriber_id == sid)))  # type: ignore[attr-defined]


def test_universal_control_members_get_nothing_from_a_trigger_campaign(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings, vault: Vault
) -> None:
    mart = Mart(settings.mart_dir)
    with web_sessions() as s:
        # A fifth of everyone held out, so 40 subscribers hold several members.
        audience.set_universal_control(s, actor=SYSTEM, share_bp=2_000, rotation_days=90)
        ids = make_subscribers(s, vault, [(f"135000011{i:02d}", "ZJ", "ZJ01") for i in range(40)])
        inbox = started(s, mart, vault, in_app_trigger())
        hook = started(
            s,
            mart,
            vault,
            in_app_trigger(
                name="Webhook", variants=[{"key": "W", "channel": "webhook", "body": "Thanks"}]
            ),
        )
        setting = audience.get_universal_control(s)
        key = make_api_key(s, scopes=["events:write"])
    members = holdout.members(setting, key=vault.assignment_key, subscriber_ids=ids, on=NOW.date())
    assert 2 <= len(members) <= 20  # the draw holds members and non-members
    auth = {"Authorization": f"Bearer {key}"}
    for sid in ids:
        r = client.post(
            "/v1/events",
            json={
                "type": "recharge",
                "subscriber_id": sid,
                "occurred_at": "2026-11-02T10:00:00+08:00",
                "attributes": {"amount_yuan": 30},
                "idempotency_key": f"ucg-{sid}",
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        statuses = {t["campaign_id"]: t["status"] for t in r.json()["triggered"]}
        if sid in members:
            assert statuses == {inbox.id: "universal_control", hook.id: "universal_control"}
        else:
            assert statuses == {inbox.id: "delivered", hook.id: "queued"}
    # The worker sends the queued webhooks: still nothing for a member.
    run(web_sessions, dispatcher(vault, settings, channels={}), mart)
    for sid in members:
        assert _rows(web_sessions, CampaignContact, sid) == []
        assert _rows(web_sessions, InboxMessage, sid) == []
    for sid in set(ids) - members:
        assert len(_rows(web_sessions, InboxMessage, sid)) == 1


def test_dispatch_holds_out_members_of_a_later_rotation(
    session: Session, sessions: sessionmaker[Session], vault: Vault, settings: Settings
) -> None:
    """A contact queued before the group rotated is suppressed if its subscriber is now a member."""
    mart = Mart(settings.mart_dir)
    audience.set_universal_control(session, actor=SYSTEM, share_bp=0, rotation_days=90)
    ids = make_subscribers(session, vault, [(f"135000012{i:02d}", "GD", "GD01") for i in range(30)])
    c = started(
        session,
        mart,
        vault,
        in_app_trigger(variants=[{"key": "W", "channel": "webhook", "body": "Thanks"}]),
    )
    from perkflow.campaigns import service as campaigns

    for sid in ids:
        campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=vault,
            type="recharge",
            subscriber_id=sid,
            occurred_at=NOW,
            idempotency_key=f"later-{sid}",
        )
    session.commit()
    # The group now holds a fifth of everyone, drawn afresh (a new salt).
    audience.set_universal_control(
        session, actor=SYSTEM, share_bp=2_000, rotation_days=90, salt="ucg2"
    )
    session.commit()
    members = holdout.held_out(session, vault=vault, subscriber_ids=ids, on=NOW.date())
    assert members
    clock.set_clock(clock.FrozenClock(NOW + timedelta(minutes=1)))
    run(sessions, dispatcher(vault, settings, channels={}), mart)
    rows = {r.subscriber_id: r for r in contacts(session, c.id)}
    for sid in members:
        assert (rows[sid].status, rows[sid].reason) == ("suppressed", "universal_control")
    assert all(rows[sid].status != "suppressed" for sid in set(ids) - members)


def test_a_manual_in_app_send_to_a_member_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", "cli-test-secret-0123456789abcdef0123456789")
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    ctx = get_context()
    with ctx.uow() as session:
        audience.set_universal_control(session, actor=SYSTEM, share_bp=5_000, rotation_days=90)
        ids = make_subscribers(
            session, ctx.vault, [(f"135000013{i:02d}", "GD", "GD01") for i in range(20)]
        )
        members = holdout.held_out(session, vault=ctx.vault, subscriber_ids=ids, on=NOW.date())
    member = min(members)
    other = min(set(ids) - members)
    refused = runner.invoke(app, ["channels", "send-test", "in_app", str(member)])
    assert refused.exit_code != 0 and "universal control" in refused.output
    sent = runner.invoke(app, ["channels", "send-test", "in_app", str(other)])
    assert sent.exit_code == 0, sent.output
    with ctx.uow() as session:
        assert _count(session, member) == 0 and _count(session, other) == 1


def _count(session: Session, sid: int) -> int:
    return len(list(session.scalars(select(InboxMessage).where(InboxMessage.subscriber_id == sid))))
