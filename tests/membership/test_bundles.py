"""Tier bundles: automatic grants exactly once per cycle, picks, binding to the line's status."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.errors import Conflict
from perkflow.grants.models import Grant
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership import tasks
from perkflow.membership.models import BundleGrant
from perkflow.org.rules import SYSTEM
from perkflow.subscribers.rules import Status
from tests.membership.helpers import ZONE, default_program, frozen, subscriber

# Silver each month: cloud storage + coupon pack; yearly (once in 2026): 2 visits, SIM swap, data.
SILVER_MONTHLY = 2
SILVER_YEARLY = 4


def _members(sessions: sessionmaker[Session], vault: Vault, fees: list[int]) -> list[int]:
    with sessions() as s:
        default_program(s, vault)
        sids = [subscriber(s, vault, plan_fee_fen=fee) for fee in fees]
        with frozen():
            membership.apply_tier_targets(
                s,
                actor=SYSTEM,
                targets={
                    sid: (1 if fee < 16900 else 2) for sid, fee in zip(sids, fees, strict=True)
                },
                reason="load",
                source="test",
            )
        s.commit()
    return sids


def _grants(session: Session) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Grant).where(Grant.source == "membership"))
        or 0
    )


def test_monthly_issue_twice_grants_exactly_once(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    _members(sessions, vault, [9900, 9900, 16900])
    with frozen():
        first = tasks.issue_bundles(sessions, month="2026-11", zone=ZONE, chunk=2)
        second = tasks.issue_bundles(sessions, month="2026-11", zone=ZONE, chunk=2)
        december = tasks.issue_bundles(sessions, month="2026-12", zone=ZONE)
    gold = 2 + 4 + 1 + 1  # monthly 2; yearly 4 visits, SIM swap, data pack
    expected = 2 * (SILVER_MONTHLY + SILVER_YEARLY) + gold
    assert (first.members, first.issued, first.refused) == (3, expected, 0)
    assert (second.issued, second.replayed) == (0, expected)
    # December is a new monthly cycle; the yearly items were already given for 2026.
    assert december.issued == 3 * 2
    with sessions() as s:
        assert _grants(s) == expected + 6
        keys = s.scalars(select(Grant.idempotency_key).where(Grant.source == "membership")).all()
        assert len(set(keys)) == len(keys)
        assert s.scalar(select(func.count()).select_from(BundleGrant)) == expected + 6


def test_suspended_members_wait_and_churned_members_get_nothing(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    active, paused, gone = _members(sessions, vault, [9900, 9900, 9900])
    with sessions() as s, frozen():
        for sid, status in ((paused, Status.SUSPENDED), (gone, Status.CHURNED)):
            membership.change_status(
                s, actor=SYSTEM, subscriber_id=sid, status=status, reason="test", zone=ZONE
            )
        s.commit()
    with frozen():
        run = tasks.issue_bundles(sessions, month="2026-11", zone=ZONE)
    # The churned member left the tier at once, so only the suspended one is skipped.
    assert (run.members, run.skipped) == (1, 1)
    with sessions() as s, frozen():
        owners = set(s.scalars(select(Grant.subscriber_id)).all())
        assert owners == {active}
        membership.change_status(
            s, actor=SYSTEM, subscriber_id=paused, status=Status.ACTIVE, reason="paid", zone=ZONE
        )
        s.commit()
    with frozen():
        again = tasks.issue_bundles(sessions, month="2026-11", zone=ZONE)
    assert again.issued == SILVER_MONTHLY + SILVER_YEARLY


def test_pick_one_of_six_once_a_month(sessions: sessionmaker[Session], vault: Vault) -> None:
    silver, gold = _members(sessions, vault, [9900, 16900])
    with sessions() as s, frozen() as now:
        card = membership.member_card(s, subscriber_id=silver, zone=ZONE)
        [video] = card.picks
        assert (video.name, video.choose, len(video.options)) == ("video", 1, 6)
        assert card.annual_value_fen == 283_500
        first = video.options[0].item.id
        row = membership.pick_benefit(
            s, actor=SYSTEM, subscriber_id=silver, item_id=first, zone=ZONE
        )
        assert row.grant_id is not None
        with pytest.raises(Conflict, match="already"):
            membership.pick_benefit(
                s, actor=SYSTEM, subscriber_id=silver, item_id=video.options[1].item.id, zone=ZONE
            )
        # A gold option is not a silver member's to take.
        gold_item = membership.member_card(s, subscriber_id=gold, zone=ZONE).picks[0].options[2]
        with pytest.raises(Conflict, match="not part of your tier"):
            membership.pick_benefit(
                s, actor=SYSTEM, subscriber_id=silver, item_id=gold_item.item.id, zone=ZONE
            )
        # Gold chooses two.
        for option in membership.member_card(s, subscriber_id=gold, zone=ZONE).picks[0].options[:2]:
            membership.pick_benefit(
                s, actor=SYSTEM, subscriber_id=gold, item_id=option.item.id, zone=ZONE
            )
        s.commit()
        now.current = now.current.replace(month=12)
        membership.pick_benefit(
            s, actor=SYSTEM, subscriber_id=silver, item_id=video.options[1].item.id, zone=ZONE
        )
        s.commit()
        card = membership.member_card(s, subscriber_id=silver, zone=ZONE)
        assert card.used_value_fen == 3000 + 3000


def test_suspension_pauses_picks_and_churn_forfeits_them(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    [sid] = _members(sessions, vault, [9900])
    with sessions() as s, frozen():
        option = membership.member_card(s, subscriber_id=sid, zone=ZONE).picks[0].options[0]
        membership.pick_benefit(
            s, actor=SYSTEM, subscriber_id=sid, item_id=option.item.id, zone=ZONE
        )
        membership.change_status(
            s, actor=SYSTEM, subscriber_id=sid, status=Status.SUSPENDED, reason="unpaid", zone=ZONE
        )
        s.commit()
        with pytest.raises(Conflict, match="paused"):
            membership.pick_benefit(
                s, actor=SYSTEM, subscriber_id=sid, item_id=option.item.id, zone=ZONE
            )
        s.rollback()
        grant = s.scalars(select(Grant).where(Grant.subscriber_id == sid)).one()
        assert grant.status == "paused"
        out = membership.change_status(
            s, actor=SYSTEM, subscriber_id=sid, status=Status.CHURNED, reason="gone", zone=ZONE
        )
        s.commit()
        assert out.forfeited_picks == 1
        s.expire_all()
        assert s.get(Grant, grant.id).status == "revoked"  # type: ignore[union-attr]
        with pytest.raises(Conflict):
            membership.pick_benefit(
                s, actor=SYSTEM, subscriber_id=sid, item_id=option.item.id, zone=ZONE
            )
