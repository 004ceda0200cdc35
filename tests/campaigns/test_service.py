"""Campaign use cases on SQLite and PostgreSQL: lifecycle, waves, dispatch, responses, events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import service as audience
from perkflow.campaigns import repository as repo
from perkflow.campaigns import service as campaigns
from perkflow.campaigns import tasks
from perkflow.campaigns.models import CampaignContact, CampaignResponse
from perkflow.channels.models import InboxMessage
from perkflow.channels.rules import Message, Receipt, SendResult
from perkflow.coupons import service as coupons
from perkflow.errors import Conflict, Forbidden, ValidationFailed
from perkflow.grants import service as grants
from perkflow.grants.models import GrantEvent
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from tests.audience.helpers import profile
from tests.campaigns.helpers import (
    ANALYST,
    GD,
    HQ,
    HQ2,
    NOW,
    approved,
    contacts,
    dispatcher,
    everyone,
    run,
    spec,
    started,
    write_profile,
)
from tests.coupons.factories import make_batch
from tests.factories import make_benefit, make_partner, make_staff, make_subscribers


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def actions(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.action.like("campaign.%"))
            .order_by(AuditEntry.id)
        )
    )


class TestLifecycle:
    def test_draft_to_running_needs_a_second_person(self, session: Session, mart: Mart) -> None:
        write_profile(mart, 20)
        seg = everyone(session, mart)
        c = campaigns.create_campaign(session, actor=HQ, mart=mart, raw=spec(seg))
        assert (c.status, c.version, c.kind) == ("draft", 1, "batch")
        c = campaigns.update_campaign(
            session, actor=HQ, mart=mart, campaign_id=c.id, raw=spec(seg, name="v2"), version=1
        )
        assert (c.name, c.version) == ("v2", 2)
        with pytest.raises(Conflict):  # a stale version
            campaigns.update_campaign(
                session, actor=HQ, mart=mart, campaign_id=c.id, raw=spec(seg), version=1
            )
        with pytest.raises(Conflict):  # not submitted yet
            campaigns.approve_campaign(session, actor=HQ2, campaign_id=c.id)
        campaigns.submit_campaign(session, actor=HQ, campaign_id=c.id)
        with pytest.raises(Conflict):  # only drafts are edited
            campaigns.update_campaign(
                session, actor=HQ, mart=mart, campaign_id=c.id, raw=spec(seg), version=3
            )
        with pytest.raises(Forbidden):  # the author cannot approve their own campaign
            campaigns.approve_campaign(session, actor=HQ, campaign_id=c.id)
        with pytest.raises(Forbidden):  # a province marketer may not approve
            campaigns.approve_campaign(session, actor=GD, campaign_id=c.id)
        assert [q.id for q in campaigns.approval_queue(session, actor=HQ2)] == [c.id]
        assert campaigns.approval_queue(session, actor=HQ) == []
        with pytest.raises(ValidationFailed):
            campaigns.reject_campaign(session, actor=HQ2, campaign_id=c.id, note=" ")
        c = campaigns.reject_campaign(session, actor=HQ2, campaign_id=c.id, note="fix the text")
        assert c.status == "draft"
        campaigns.submit_campaign(session, actor=HQ, campaign_id=c.id)
        c = campaigns.approve_campaign(session, actor=HQ2, campaign_id=c.id, note="ok")
        assert (c.status, c.approved_by) == ("approved", "hq2")
        assert actions(session) == [
            "campaign.create",
            "campaign.update",
            "campaign.submit",
            "campaign.reject",
            "campaign.submit",
            "campaign.approve",
        ]
        session.commit()

    def test_bad_specs_are_422_naming_the_field_and_change_nothing(
        self, session: Session, mart: Mart
    ) -> None:
        write_profile(mart, 5)
        seg = everyone(session, mart)
        bad = spec(seg)
        bad["variants"][0]["match"] = [{"column": "plan_fee", "op": ">", "value": 1}]
        with pytest.raises(ValidationFailed) as exc:
            campaigns.create_campaign(session, actor=HQ, mart=mart, raw=bad)
        assert exc.value.field == "variants[0].match[0].column"
        with pytest.raises(ValidationFailed) as exc:
            campaigns.create_campaign(session, actor=HQ, mart=mart, raw=spec(999))
        assert exc.value.field == "segment_id"
        with pytest.raises(ValidationFailed) as exc:
            campaigns.create_campaign(
                session, actor=HQ, mart=mart, raw=spec(seg, offer={"kind": "benefit", "id": 99})
            )
        assert exc.value.field == "offer.id"
        with pytest.raises(Forbidden):
            campaigns.create_campaign(session, actor=ANALYST, mart=mart, raw=spec(seg))
        assert campaigns.list_campaigns(session, actor=HQ)[1] == 0

    def test_a_province_sees_only_its_own_campaigns(self, session: Session, mart: Mart) -> None:
        write_profile(mart, 5)
        seg = everyone(session, mart)
        national = campaigns.create_campaign(session, actor=HQ, mart=mart, raw=spec(seg))
        mine = campaigns.create_campaign(session, actor=GD, mart=mart, raw=spec(seg))
        assert mine.province_code == "GD"
        rows, total = campaigns.list_campaigns(session, actor=GD)
        assert [r.id for r in rows] == [mine.id] and total == 1
        with pytest.raises(Forbidden):
            campaigns.get_campaign(session, actor=GD, campaign_id=national.id)


class TestWaves:
    def test_the_test_wave_then_the_rollout_cover_the_list_once(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        ids = write_profile(mart, 400)
        seg = everyone(session, mart)
        c = started(session, mart, vault, spec(seg, test_share=20))
        assert c.status == "running" and c.target_list_id is not None
        with pytest.raises(Conflict):  # the test wave is not done
            campaigns.roll_out(session, actor=HQ, campaign_id=c.id)
        session.rollback()
        d = dispatcher(vault, settings)
        run(sessions, d, mart)
        test_rows = contacts(session, c.id)
        assert 40 < len(test_rows) < 120  # about 20 % of 400
        waves = campaigns.list_waves(session, actor=HQ, campaign_id=c.id)
        assert [(w.kind, w.status) for w in waves] == [("test", "done")]
        with pytest.raises(Conflict) as refused:  # the gate: the response window is open
            campaigns.roll_out(session, actor=HQ2, campaign_id=c.id, note="looks good")
        assert refused.value.field == "evidence" and "response window" in str(refused.value)
        session.rollback()
        wave = campaigns.roll_out(
            session, actor=HQ2, campaign_id=c.id, note="looks good", against_evidence=True
        )
        session.commit()
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "campaign.rollout")
        ).one()
        assert audit.details["test_wave"] and audit.details["note"] == "looks good"
        assert audit.details["gate"]["against_evidence"] is True
        with pytest.raises(Conflict):  # one rollout
            campaigns.roll_out(session, actor=HQ, campaign_id=c.id)
        session.rollback()
        run(sessions, d, mart)
        rows = contacts(session, c.id)
        by_wave: dict[int, set[int]] = {}
        for r in rows:
            by_wave.setdefault(r.wave_id, set()).add(r.subscriber_id)
        assert len(by_wave) == 2
        first, rest = by_wave.values()
        assert not first & rest and first | rest == set(ids)  # no overlap, no gap
        assert {r.status for r in rows} == {"delivered", "held"}
        control = [r for r in rows if r.cell == "control"]
        assert 30 <= len(control) <= 50  # 10 % per province, exact to rounding
        # Variant by profile: odd ids have the 129-yuan plan.
        assert {r.variant for r in rows if r.subscriber_id % 2} == {"A"}
        assert {r.variant for r in rows if not r.subscriber_id % 2} == {"B"}
        inbox = session.scalars(select(InboxMessage).order_by(InboxMessage.subscriber_id)).all()
        assert len(inbox) == len(rows) - len(control)
        assert {m.subscriber_id for m in inbox}.isdisjoint({r.subscriber_id for r in control})
        # The first odd id in the target cell (the control split is random per campaign salt).
        one = next(m for m in inbox if m.subscriber_id % 2)
        assert (one.title, one.body) == (
            "视频会员月卡",
            "Your 129-yuan plan in 广东 earns a gift",  # no locale: zh_CN names
        )
        campaign = campaigns.get_campaign(session, actor=HQ, campaign_id=c.id)
        assert campaign.status == "finished"
        progress = campaigns.run_progress(session, actor=HQ, campaign_id=c.id)
        assert [w.kind for w in progress.waves] == ["test", "rollout"]
        assert sum(w.sent_by_channel.get("in_app", 0) for w in progress.waves) == len(inbox)
        assert all(w.open == 0 for w in progress.waves)
        assert wave.kind == "rollout"

    def test_planning_twice_changes_nothing(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
    ) -> None:
        write_profile(mart, 50)
        seg = everyone(session, mart)
        c = started(session, mart, vault, spec(seg))
        wave = campaigns.list_waves(session, actor=HQ, campaign_id=c.id)[0]
        session.commit()
        first = tasks.plan_wave(sessions, mart=mart, vault=vault, wave_id=wave.id, chunk=7)
        assert first == 50
        # A killed planner leaves the wave "planning": planning again inserts nothing new.
        with sessions() as s:
            repo.move_wave(s, wave_id=wave.id, expected="running", target="planning")
            s.commit()
        again = tasks.plan_wave(sessions, mart=mart, vault=vault, wave_id=wave.id, chunk=7)
        assert again == 50 and len(contacts(session, c.id)) == 50


class FlakyChannel:
    """Fails every send with a retryable error; records what it was asked."""

    name = "sms"

    def __init__(self, *, retryable: bool = True) -> None:
        self.calls: list[Sequence[Message]] = []
        self.retryable = retryable

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        self.calls.append(messages)
        return [
            SendResult(m.contact_id, ok=False, error="SMSC busy", retryable=self.retryable)
            for m in messages
        ]

    def receipts(self) -> list[Receipt]:
        return []

    def close(self) -> None:
        pass


class ReceiptChannel:
    """Accepts every message and later reports odd contacts delivered, even ones undelivered."""

    name = "sms"

    def __init__(self) -> None:
        self.pending: list[Receipt] = []

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        out = []
        for m in messages:
            ref = f"smsc-{m.contact_id}"
            self.pending.append(Receipt(ref, delivered=bool(m.subscriber_id % 2), error="UNDELIV"))
            out.append(SendResult(m.contact_id, ok=True, message_ref=ref))
        return out

    def receipts(self) -> list[Receipt]:
        got, self.pending = self.pending, []
        return got

    def close(self) -> None:
        pass


def sms_spec(seg: int, **over: Any) -> dict[str, Any]:
    return spec(
        seg,
        variants=[{"key": "S", "channel": "sms", "body": "Hi {{ masked_phone }}"}],
        control_share=0,
        **over,
    )


class TestDispatch:
    def _sms_campaign(
        self, session: Session, mart: Mart, vault: Vault, **over: Any
    ) -> tuple[int, list[int]]:
        ids = make_subscribers(
            session, vault, [(f"1380000{i:04d}", "GD", "GD01") for i in range(4)]
        )
        profile(mart, [{"subscriber_id": i} for i in ids])
        seg = everyone(session, mart)
        c = started(session, mart, vault, sms_spec(seg, **over))
        return c.id, ids

    def test_retryable_failures_back_off_then_fail_with_the_error(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
        frozen: clock.FrozenClock,
    ) -> None:
        cid, _ = self._sms_campaign(session, mart, vault)
        flaky = FlakyChannel()
        d = dispatcher(vault, settings, {"sms": flaky}, max_attempts=3, backoff_base_s=10)
        report = run(sessions, d, mart, once=True)  # plan + first attempt
        assert report.dispatch.retried == 4
        rows = contacts(session, cid)
        assert {(r.status, r.attempts, r.error) for r in rows} == {("queued", 1, "SMSC busy")}
        assert all(clock.as_utc(r.next_attempt_at) == NOW + timedelta(seconds=10) for r in rows)  # type: ignore[arg-type]
        assert tasks.dispatch_batch(sessions, d).claimed == 0  # not due yet
        frozen.advance(seconds=10)
        assert tasks.dispatch_batch(sessions, d).retried == 4
        frozen.advance(seconds=20)
        third = tasks.dispatch_batch(sessions, d)
        assert third.failed == 4
        rows = contacts(session, cid)
        assert {(r.status, r.attempts, r.error) for r in rows} == {("failed", 3, "SMSC busy")}
        # Messages carried the decrypted number and the masked one in the text.
        # (Sends go in a random order: see the subscriber's own message.)
        first = next(m for batch in flaky.calls for m in batch if m.address == "13800000000")
        assert first.body == "Hi 138****0000"
        tasks.finish_waves(sessions)
        progress = campaigns.run_progress(session, actor=HQ, campaign_id=cid)
        (wave,) = progress.waves
        assert wave.status == "done" and wave.by_status == {"failed": 4}
        assert {f.error for f in wave.failures} == {"SMSC busy"}
        # The decrypted numbers were an audited reveal.
        reveals = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "subscriber.reveal_phones")
        )
        assert reveals == 3

    def test_a_channel_not_configured_fails_its_contacts(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        cid, _ = self._sms_campaign(session, mart, vault)
        run(sessions, dispatcher(vault, settings, {}), mart)
        rows = contacts(session, cid)
        assert {(r.status, r.error) for r in rows} == {("failed", "channel not configured")}

    def test_receipts_mark_contacts_delivered_or_failed(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        cid, _ = self._sms_campaign(session, mart, vault)
        ch = ReceiptChannel()
        report = run(sessions, dispatcher(vault, settings, {"sms": ch}), mart)
        assert report.dispatch.sent == 4 and report.dispatch.receipts == 4
        by_id = {r.subscriber_id: r for r in contacts(session, cid)}
        for sid, r in by_id.items():
            if sid % 2:
                assert r.status == "delivered" and r.delivered_at is not None
            else:
                assert (r.status, r.error) == ("failed", "UNDELIV")
            assert r.message_ref == f"smsc-{r.id}"

    def test_quiet_hours_and_opt_outs_at_send_time(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
        frozen: clock.FrozenClock,
    ) -> None:
        cid, ids = self._sms_campaign(session, mart, vault)
        # Opted out after the list was built: dropped at dispatch with the reason.
        audience.add_to_contact_list(session, actor=HQ, subscriber_id=ids[0], channel="sms")
        session.commit()
        frozen.current = NOW.replace(hour=14)  # 22:00 in Beijing: SMS quiet hours
        ch = ReceiptChannel()
        d = dispatcher(vault, settings, {"sms": ch})
        report = run(sessions, d, mart, once=True)
        assert report.dispatch.sent == 0 and report.dispatch.suppressed == 1
        rows = {r.subscriber_id: r for r in contacts(session, cid)}
        assert (rows[ids[0]].status, rows[ids[0]].reason) == ("suppressed", "opted_out")
        tomorrow_8 = NOW.replace(day=3, hour=0)
        assert {clock.as_utc(r.next_attempt_at) for r in rows.values() if r.status == "queued"} == {  # type: ignore[arg-type]
            tomorrow_8
        }
        frozen.current = tomorrow_8
        assert tasks.dispatch_batch(sessions, d).sent == 3
        progress = campaigns.run_progress(session, actor=HQ, campaign_id=cid)
        assert progress.suppressed.get("opted_out") == 1

    def test_the_stock_cap_limits_target_contacts(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        cid, _ = self._sms_campaign(session, mart, vault, stock_cap=3)
        run(sessions, dispatcher(vault, settings, {"sms": ReceiptChannel()}), mart)
        statuses = sorted((r.status, r.reason) for r in contacts(session, cid))
        assert statuses.count(("suppressed", "cap_reached")) == 1
        assert len([s for s in statuses if s[0] != "suppressed"]) == 3

    def test_pause_holds_the_queue_and_finish_drops_it(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
    ) -> None:
        cid, _ = self._sms_campaign(session, mart, vault)
        campaigns.pause_campaign(session, actor=HQ, campaign_id=cid)
        session.commit()
        d = dispatcher(vault, settings, {"sms": ReceiptChannel()})
        run(sessions, d, mart)  # plans, sends nothing
        assert {r.status for r in contacts(session, cid)} == {"queued"}
        campaigns.finish_campaign(session, actor=HQ, campaign_id=cid)
        session.commit()
        rows = contacts(session, cid)
        assert {(r.status, r.reason) for r in rows} == {("suppressed", "finished")}
        with pytest.raises(Conflict):
            campaigns.resume_campaign(session, actor=HQ, campaign_id=cid)


class TestResponses:
    def test_attributed_to_the_last_contact_within_the_window(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
        frozen: clock.FrozenClock,
    ) -> None:
        write_profile(mart, 40)
        seg = everyone(session, mart)
        first = started(session, mart, vault, spec(seg, control_share=20))
        d = dispatcher(vault, settings)
        run(sessions, d, mart)
        frozen.advance(days=2)
        second = started(session, mart, vault, spec(seg, name="Second", control_share=20))
        run(sessions, d, mart)
        rows1 = {r.subscriber_id: r for r in contacts(session, first.id)}
        rows2 = {r.subscriber_id: r for r in contacts(session, second.id)}
        sid = next(s for s, r in rows2.items() if r.cell == "target")
        resp = campaigns.record_response(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            kind="claim",
            occurred_at=NOW + timedelta(days=3),
            value_fen=990,
            idempotency_key="crm-1",
            source="api",
        )
        assert resp is not None and resp.campaign_id == second.id  # the last contact
        assert (resp.contact_id, resp.cell) == (rows2[sid].id, "target")
        again = campaigns.record_response(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            kind="claim",
            occurred_at=NOW + timedelta(days=3),
            value_fen=990,
            idempotency_key="crm-1",
            source="api",
        )
        assert again is not None and again.id == resp.id
        # Before the second campaign's contact: the first campaign's.
        early = campaigns.record_response(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            kind="claim",
            occurred_at=NOW + timedelta(days=1),
            idempotency_key="crm-2",
            source="api",
        )
        assert early is not None and early.campaign_id == first.id
        assert early.contact_id == rows1[sid].id
        # A control subscriber's response is recorded against their held row.
        held = next(s for s, r in rows2.items() if r.cell == "control")
        ctrl = campaigns.record_response(
            session,
            actor=SYSTEM,
            subscriber_id=held,
            kind="claim",
            occurred_at=NOW + timedelta(days=4),
            idempotency_key="crm-3",
            source="api",
        )
        assert ctrl is not None and (ctrl.cell, ctrl.campaign_id) == ("control", second.id)
        # Outside every window (7 days after the last contact), and a kind no goal counts.
        assert (
            campaigns.record_response(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                kind="claim",
                occurred_at=NOW + timedelta(days=10),
                idempotency_key="crm-4",
                source="api",
            )
            is None
        )
        assert (
            campaigns.record_response(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                kind="order",
                occurred_at=NOW + timedelta(days=3),
                idempotency_key="crm-5",
                source="api",
            )
            is None
        )
        session.commit()
        assert session.scalar(select(func.count()).select_from(CampaignResponse)) == 3
        counts = campaigns.contact_counts(session, actor=HQ, campaign_id=second.id)
        assert sum(c.responders for c in counts) == 2
        assert sum(c.revenue_fen for c in counts) == 990


def _claim_coupon(session: Session, vault: Vault, batch_id: int, sid: int) -> int:
    """A subscriber claims a coupon now (through the H5 path); the coupon id, committed."""
    outcome = coupons.claim_coupon(
        session,
        actor=coupons.subscriber_actor(sid),
        vault=vault,
        batch_id=batch_id,
        subscriber_id=sid,
        idempotency_key=f"claim-{batch_id}-{sid}",
        channel="h5",
        device_id=f"dev-{sid}",
        zone="Asia/Shanghai",
    )
    session.commit()
    return outcome.coupon.id


def _use_grant(session: Session, sid: int, benefit_id: int) -> None:
    """A grant issued and then used now, committed."""
    # No use case moves a grant to `used` yet (a partner's use report will): the ledger fact it
    # leaves behind, the grant event, is written here as that report would write it.
    grant = grants.issue_grant(
        session,
        actor=SYSTEM,
        subscriber_id=sid,
        benefit_id=benefit_id,
        source="test",
        idempotency_key=f"use-{sid}",
        zone="Asia/Shanghai",
    ).grant
    session.add(
        GrantEvent(
            grant_id=grant.id,
            from_status=grant.status,
            to_status="used",
            reason="used at the partner",
            at=clock.now(),
        )
    )
    grant.status = "used"
    session.commit()


class TestLedgerResponses:
    """collect_ledger_responses: claims, redemptions and grant uses as attributed responses."""

    def test_attribution_window_control_and_rerun(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
        frozen: clock.FrozenClock,
    ) -> None:
        ids = make_subscribers(
            session, vault, [(f"1370000{i:04d}", "GD", "GD01") for i in range(8)]
        )
        profile(
            mart,
            [
                {
                    "subscriber_id": sid,
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_yuan": 129,
                }
                for sid in ids
            ],
        )
        seg = everyone(session, mart)
        batch = make_batch(session)
        other_batch = make_batch(session)
        benefit = make_benefit(session, partner=make_partner(session))
        d = dispatcher(vault, settings)
        # Day 0: A counts claims of its own coupon batch for 7 days; half the list is control.
        offer = {"kind": "coupon_batch", "id": batch.id, "category": "video", "cost_fen": 500}
        a = started(
            session,
            mart,
            vault,
            spec(seg, name="A", offer=offer, control_share=50),
        )
        run(sessions, d, mart)
        cells_a = {r.subscriber_id: r for r in contacts(session, a.id)}
        targets = [s for s in ids if cells_a[s].cell == "target"]
        controls = [s for s in ids if cells_a[s].cell == "control"]
        assert len(targets) == len(controls) == 4
        t1, t3 = targets[:2]
        c1 = controls[0]
        t2, t4, t5 = [s for s in ids if s not in (t1, t3, c1)][:3]

        frozen.advance(days=1)
        _claim_coupon(session, vault, batch.id, t1)  # → A, target
        _claim_coupon(session, vault, batch.id, c1)  # → A, control: the control group counts
        _claim_coupon(session, vault, other_batch.id, t5)  # not A's offer: nobody's response
        # Day 2: B counts any response for 3 days, whatever was claimed or used.
        frozen.advance(days=1)
        b = started(
            session,
            mart,
            vault,
            spec(seg, name="B", goal={"kind": "any", "window_days": 3}, control_share=50),
        )
        run(sessions, d, mart)
        cells_b = {r.subscriber_id: r for r in contacts(session, b.id)}
        frozen.advance(days=1)
        _claim_coupon(session, vault, batch.id, t2)  # day 3: B's contact is the last one
        frozen.advance(days=1)
        clerk = org.actor_for_staff(
            session,
            user=make_staff(session, username="clerk", role=Role.CLERK, region="GD01S1"),
            ip="127.0.0.1",
        )
        code = next(
            w.code
            for w in coupons.wallet(
                session, actor=coupons.subscriber_actor(t1), vault=vault, subscriber_id=t1
            )
            if w.coupon.batch_id == batch.id
        )
        coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8800)
        session.commit()  # day 4: → B (A counts claims only), with the order's value
        _use_grant(session, t2, benefit.id)  # day 4: → B
        frozen.advance(days=2)
        _claim_coupon(session, vault, batch.id, t3)  # day 6: B's window closed, A's still open
        frozen.advance(days=2)
        _claim_coupon(session, vault, batch.id, t4)  # day 8: every window closed

        # As if these rows committed after a pass had read past them (concurrent writers commit
        # out of id order): a pass reads again a window behind its cursor.
        behind = {"claim": 500, "redemption": 500, "grant_use": 500}
        got = campaigns.collect_ledger_responses(session, actor=SYSTEM, since=behind)
        session.commit()
        assert (got.seen, got.recorded) == (8, 6)
        rows = session.scalars(select(CampaignResponse).order_by(CampaignResponse.id)).all()
        assert [
            (r.subscriber_id, r.kind, r.campaign_id, r.contact_id, r.cell, r.value_fen)
            for r in rows
        ] == [
            (t1, "claim", a.id, cells_a[t1].id, "target", 0),
            (c1, "claim", a.id, cells_a[c1].id, "control", 0),
            (t2, "claim", b.id, cells_b[t2].id, cells_b[t2].cell, 0),
            (t3, "claim", a.id, cells_a[t3].id, "target", 0),
            (t1, "redemption", b.id, cells_b[t1].id, cells_b[t1].cell, 8800),
            (t2, "grant_use", b.id, cells_b[t2].id, cells_b[t2].cell, 0),
        ]
        assert {r.source for r in rows} == {"ledger"}
        assert rows[0].responded_at == NOW + timedelta(days=1)
        assert rows[3].responded_at == NOW + timedelta(days=6)

        # Rerun from the start: nothing is recorded twice, and the count says so.
        again = campaigns.collect_ledger_responses(session, actor=SYSTEM)
        session.commit()
        assert (again.seen, again.recorded) == (8, 0)
        # From its cursor: the window behind it is read again, nothing is recorded twice.
        later = campaigns.collect_ledger_responses(session, actor=SYSTEM, since=again.cursor)
        assert (later.recorded, later.cursor) == (0, again.cursor)
        assert session.scalar(select(func.count()).select_from(CampaignResponse)) == 6
        # A's evaluation sees one responder in each cell... and t3 in target.
        counts = campaigns.contact_counts(session, actor=HQ, campaign_id=a.id)
        by_cell = {
            cell: sum(c.responders for c in counts if c.cell == cell)
            for cell in ("target", "control")
        }
        assert by_cell == {"target": 2, "control": 1}


def trigger_spec(**over: Any) -> dict[str, Any]:
    raw = spec(
        None,
        name="Data top-up",
        variants=[{"key": "T", "channel": "sms", "body": "You used {{ plan_fee_yuan }}"}],
        trigger={
            "events": ["data_threshold"],
            "where": [{"attribute": "percent", "op": ">=", "value": 80}],
        },
        control_share=20,
    )
    raw.update(over)
    return raw


class TestEvents:
    def test_trigger_campaigns_split_cap_and_queue(
        self,
        session: Session,
        sessions: sessionmaker[Session],
        mart: Mart,
        vault: Vault,
        settings: Settings,
        frozen: clock.FrozenClock,
    ) -> None:
        ids = make_subscribers(
            session, vault, [(f"1390000{i:04d}", "GD", "GD01") for i in range(60)]
        )
        c = started(session, mart, vault, trigger_spec())
        assert c.kind == "trigger" and c.status == "running"
        out = [
            campaigns.record_event(
                session,
                actor=SYSTEM,
                vault=vault,
                type="data_threshold",
                subscriber_id=sid,
                occurred_at=NOW,
                idempotency_key=f"ev-{sid}",
                attributes={"percent": 85},
            )
            for sid in ids
        ]
        session.commit()
        cells = [o.triggered[0].cell for o in out]
        assert 4 <= cells.count("control") <= 24  # about 20 %
        # The split is the keyed hash with the campaign's salt: the same again.
        again = campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=vault,
            type="data_threshold",
            subscriber_id=ids[0],
            occurred_at=NOW,
            idempotency_key="ev-" + str(ids[0]),
            attributes={"percent": 85},
        )
        assert again.replayed and again.event_id == out[0].event_id
        # Below the threshold in `where`: nothing.
        low = campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=vault,
            type="data_threshold",
            subscriber_id=ids[1],
            occurred_at=NOW,
            idempotency_key="ev-low",
            attributes={"percent": 50},
        )
        assert low.triggered == []
        session.commit()
        ch = ReceiptChannel()
        run(sessions, dispatcher(vault, settings, {"sms": ch}), mart)
        rows = contacts(session, c.id)
        assert {r.status for r in rows if r.cell == "target"} <= {"delivered", "failed"}
        assert {r.status for r in rows if r.cell == "control"} == {"held"}

        # A second trigger campaign on the same channel: the frequency cap (strictest group
        # without a profile: 1 in 7 days) holds everyone just contacted, in both cells.
        c2 = started(session, mart, vault, trigger_spec(name="Second top-up"))
        reached = next(r.subscriber_id for r in rows if r.status == "delivered")
        out2 = campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=vault,
            type="data_threshold",
            subscriber_id=reached,
            occurred_at=NOW,
            idempotency_key="ev2",
            attributes={"percent": 90},
        )
        session.commit()
        by_campaign = {t.campaign_id: t for t in out2.triggered}
        assert by_campaign[c.id].status == "already_contacted"  # once per campaign
        assert (by_campaign[c2.id].status, by_campaign[c2.id].reason) == (
            "suppressed",
            "frequency_cap",
        )

    def test_events_wait_for_quiet_hours_to_end(
        self,
        session: Session,
        mart: Mart,
        vault: Vault,
        frozen: clock.FrozenClock,
    ) -> None:
        (sid,) = make_subscribers(session, vault, [("13700000001", "GD", "GD01")])
        started(session, mart, vault, trigger_spec(control_share=0))
        frozen.current = NOW.replace(hour=15)  # 23:00 in Beijing
        out = campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=vault,
            type="data_threshold",
            subscriber_id=sid,
            occurred_at=frozen.current,
            idempotency_key="late",
            attributes={"percent": 99},
        )
        (t,) = out.triggered
        assert t.status == "queued"
        row = session.get(CampaignContact, t.contact_id)
        assert row is not None and clock.as_utc(row.next_attempt_at) == NOW.replace(  # type: ignore[arg-type]
            day=3, hour=0
        )
        session.commit()


def test_a_campaign_must_be_approved_before_it_starts(
    session: Session, mart: Mart, vault: Vault
) -> None:
    write_profile(mart, 5)
    seg = everyone(session, mart)
    c = campaigns.create_campaign(session, actor=HQ, mart=mart, raw=spec(seg))
    with pytest.raises(Conflict):
        campaigns.start_campaign(session, actor=HQ, mart=mart, vault=vault, campaign_id=c.id)
    c2 = approved(session, mart, spec(seg))
    with pytest.raises(Forbidden):  # an analyst reads, never runs
        campaigns.start_campaign(session, actor=ANALYST, mart=mart, vault=vault, campaign_id=c2.id)
