"""Tier rules on events: upgrades at once, downgrades after the grace period, history kept."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership.models import Member, TierChange
from perkflow.org.rules import SYSTEM
from perkflow.subscribers.rules import Status
from tests.membership.helpers import ZONE, default_program, frozen, subscriber, tier_of


def _history(session: Session, sid: int) -> list[tuple[str, str]]:
    rows = session.scalars(
        select(TierChange).where(TierChange.subscriber_id == sid).order_by(TierChange.id)
    ).all()
    return [(r.kind, r.source) for r in rows]


def test_default_programme_has_three_tiers_and_silver_is_worth_2835_yuan(
    session: Session, vault: Vault
) -> None:
    default_program(session, vault)
    views = membership.list_tiers(session, actor=SYSTEM)
    assert [v.tier.code for v in views] == ["silver", "gold", "diamond"]
    assert [v.tier.points_multiplier_pct for v in views] == [300, 400, 500]
    assert views[0].annual_value_fen == 283_500
    assert views[1].annual_value_fen > views[0].annual_value_fen
    # Defining it again replaces the bundle instead of adding to it.
    default_program(session, vault)
    again = membership.list_tiers(session, actor=SYSTEM)
    assert [len(v.items) for v in again] == [len(v.items) for v in views]
    # The stored programme reads back as the one that was loaded (the editor shows it).
    stored = membership.program_document(session)
    assert membership.parse_program(stored) == membership.parse_program(
        membership.default_program_document()
    )


def test_plan_upgrade_applies_at_once_and_is_history(session: Session, vault: Vault) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=5900)
    with frozen():
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="first", source="event", zone=ZONE
        )
        assert tier_of(session, sid) is None
        membership.change_plan(
            session, actor=SYSTEM, subscriber_id=sid, plan_fee_fen=9900, zone=ZONE
        )
        assert tier_of(session, sid) == "silver"
        membership.change_plan(
            session, actor=SYSTEM, subscriber_id=sid, plan_fee_fen=16900, zone=ZONE
        )
        assert tier_of(session, sid) == "gold"
        session.commit()
    assert _history(session, sid) == [("join", "plan"), ("upgrade", "plan")]
    reasons = session.scalars(select(TierChange.reason).where(TierChange.subscriber_id == sid))
    assert "plan 99 → 169 yuan" in list(reasons)


def test_downgrade_waits_for_the_grace_period(session: Session, vault: Vault) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=16900)
    with frozen() as clock:
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="load", source="batch", zone=ZONE
        )
        assert tier_of(session, sid) == "gold"
        membership.change_plan(
            session, actor=SYSTEM, subscriber_id=sid, plan_fee_fen=9900, zone=ZONE
        )
        session.commit()
        card = membership.member_card(session, subscriber_id=sid, zone=ZONE)
        assert card.tier is not None and card.tier.code == "gold"
        assert card.pending_tier is not None and card.pending_tier.code == "silver"
        clock.advance(days=29)
        assert membership.apply_due_downgrades(session, actor=SYSTEM) == 0
        # Re-evaluating during the grace keeps the deadline (no second scheduling).
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="again", source="batch", zone=ZONE
        )
        clock.advance(days=1, seconds=1)
        assert membership.apply_due_downgrades(session, actor=SYSTEM) == 1
        assert membership.apply_due_downgrades(session, actor=SYSTEM) == 0
        session.commit()
    assert tier_of(session, sid) == "silver"
    assert [k for k, _ in _history(session, sid)] == ["join", "downgrade_scheduled", "downgrade"]
    member = session.get(Member, sid)
    assert member is not None and member.downgrade_due_at is None


def test_requalifying_in_the_grace_period_cancels_the_downgrade(
    session: Session, vault: Vault
) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=16900)
    with frozen() as clock:
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="load", source="batch", zone=ZONE
        )
        membership.change_plan(
            session, actor=SYSTEM, subscriber_id=sid, plan_fee_fen=9900, zone=ZONE
        )
        # Gold is also plan ≥ 99 with 2,000 yuan prepaid.
        balance, replayed = membership.record_prepayment(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            amount_fen=200_000,
            idempotency_key="p1",
            zone=ZONE,
        )
        assert (balance, replayed) == (200_000, False)
        again = membership.record_prepayment(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            amount_fen=200_000,
            idempotency_key="p1",
            zone=ZONE,
        )
        assert again == (200_000, True)
        clock.advance(days=40)
        assert membership.apply_due_downgrades(session, actor=SYSTEM) == 0
        session.commit()
    assert tier_of(session, sid) == "gold"
    assert [k for k, _ in _history(session, sid)] == [
        "join",
        "downgrade_scheduled",
        "downgrade_cancelled",
    ]


def test_prepaying_reaches_silver_and_overspending_is_refused(
    session: Session, vault: Vault
) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=3900)
    membership.record_prepayment(
        session, actor=SYSTEM, subscriber_id=sid, amount_fen=100_000, idempotency_key="k", zone=ZONE
    )
    assert tier_of(session, sid) == "silver"
    with pytest.raises(Conflict, match="too low"):
        membership.record_prepayment(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            amount_fen=-100_001,
            idempotency_key="k2",
            zone=ZONE,
        )
    with pytest.raises(Conflict, match="another prepayment"):
        membership.record_prepayment(
            session, actor=SYSTEM, subscriber_id=sid, amount_fen=5, idempotency_key="k", zone=ZONE
        )


def test_churn_leaves_the_tier_at_once_and_forfeits_points(session: Session, vault: Vault) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=9900)
    with frozen():
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="load", source="batch", zone=ZONE
        )
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="b1", bill_fen=9900, zone=ZONE
        )
        assert membership.points_balance(session, subscriber_id=sid) == 99 * 3
        out = membership.change_status(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            status=Status.CHURNED,
            reason="ported out",
            zone=ZONE,
        )
        session.commit()
    assert out.forfeited_points == 297
    assert tier_of(session, sid) is None
    assert membership.points_balance(session, subscriber_id=sid) == 0
    assert membership.ledger_sum(session, subscriber_id=sid) == 0
    assert _history(session, sid)[-1] == ("leave", "status")
    with pytest.raises(Conflict, match="churned"):
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="b2", bill_fen=9900, zone=ZONE
        )


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"tiers": []}, "tiers"),
        ({"downgrade_grace_days": -1}, "downgrade_grace_days"),
        (
            {"tiers": [{"code": "Bad Code", "name_zh": "x", "name_en": "x", "level": 1}]},
            "tiers[0].code",
        ),
        (
            {"tiers": [{"code": "a", "name_zh": "x", "name_en": "x", "level": 1,
                        "qualify": [{"plan_fee_yuan": {"gte": "lots"}}]}]},
            "tiers[0].qualify[0].plan_fee_yuan.gte",
        ),
        (
            {"tiers": [{"code": "a", "name_zh": "x", "name_en": "x", "level": 1,
                        "qualify": [{"shoe_size": {"gte": 40}}]}]},
            "tiers[0].qualify[0].shoe_size",
        ),
        (
            {"tiers": [{"code": "a", "name_zh": "x", "name_en": "x", "level": 1},
                       {"code": "b", "name_zh": "y", "name_en": "y", "level": 1}]},
            "tiers[1].level",
        ),
        (
            {"tiers": [{"code": "a", "name_zh": "x", "name_en": "x", "level": 1,
                        "bundle": [{"benefit": "no-such-benefit", "value_yuan": 5}]}]},
            "tiers[0].bundle[0].benefit",
        ),
    ],
)  # fmt: skip
def test_a_bad_programme_is_refused_naming_the_field_and_changes_nothing(
    session: Session, vault: Vault, patch: dict[str, object], field: str
) -> None:
    default_program(session, vault)
    raw = {**membership.default_program_document(), **patch}
    with pytest.raises(ValidationFailed) as err:
        membership.define_program(session, actor=SYSTEM, raw=raw)
    assert err.value.field == field
    session.rollback()
    assert [v.tier.code for v in membership.list_tiers(session, actor=SYSTEM)] == [
        "silver",
        "gold",
        "diamond",
    ]
