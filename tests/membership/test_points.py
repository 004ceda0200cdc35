"""The points ledger: balance = sum of postings = lots left, under any earn/burn/expire/reverse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, NotFound
from perkflow.grants.models import Grant
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.membership import rules
from perkflow.membership import service as membership
from perkflow.membership.models import PointsEntry
from perkflow.org.rules import SYSTEM
from tests.factories import make_benefit, make_partner
from tests.membership.helpers import ZONE, default_program, frozen, points_invariants, subscriber

START = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)


def test_earn_is_multiplied_by_the_tier_and_recorded_once(session: Session, vault: Vault) -> None:
    default_program(session, vault)
    sid = subscriber(session, vault, plan_fee_fen=9900)
    with frozen(START):
        membership.evaluate_member(
            session, actor=SYSTEM, subscriber_id=sid, reason="load", source="batch", zone=ZONE
        )
        first = membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="B-1", bill_fen=12_345, zone=ZONE
        )
        again = membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="B-1", bill_fen=12_345, zone=ZONE
        )
        session.commit()
    assert first.entry is not None and first.entry.points == 123 * 3 and not first.replayed
    assert again.replayed and again.entry is not None and again.entry.id == first.entry.id
    assert session.scalar(select(func.count()).select_from(PointsEntry)) == 1
    points_invariants(session, sid)


def test_lots_expire_at_the_end_of_the_year_after_earning(session: Session, vault: Vault) -> None:
    sid = subscriber(session, vault, plan_fee_fen=5900)
    with frozen(START) as now:
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="a", bill_fen=10_000, zone=ZONE
        )
        now.current = datetime(2027, 12, 31, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
        assert membership.expire_points(session, actor=SYSTEM) == (0, 0)
        now.advance(minutes=2)  # 2028-01-01 00:01 in Shanghai
        assert membership.expire_points(session, actor=SYSTEM) == (1, 100)
        assert membership.expire_points(session, actor=SYSTEM) == (0, 0)
        session.commit()
    assert membership.points_balance(session, subscriber_id=sid) == 0
    points_invariants(session, sid)


def test_a_refused_burn_keeps_the_expiry_it_found_due(session: Session, vault: Vault) -> None:
    # Found by the property test below: the burn expired the due lot inside the write it then
    # refused, so the refusal brought the expired points back into the balance.
    sid = subscriber(session, vault, plan_fee_fen=5900)
    with frozen(START) as now:
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="a", bill_fen=10_000, zone=ZONE
        )
        now.current = datetime(2028, 1, 2, tzinfo=UTC)  # the lot ended with 2027
        with pytest.raises(Conflict, match="not enough points"):
            membership.burn_points(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                points=1,
                idempotency_key="late",
                reason="t",
                zone=ZONE,
            )
        session.commit()
        assert membership.points_balance(session, subscriber_id=sid) == 0
        assert membership.expire_points(session, actor=SYSTEM) == (0, 0)  # already expired
    points_invariants(session, sid)


def test_burn_takes_the_oldest_lots_and_refuses_overdraft(session: Session, vault: Vault) -> None:
    sid = subscriber(session, vault, plan_fee_fen=5900)
    with frozen(START) as now:
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="old", bill_fen=10_000, zone=ZONE
        )
        now.current = datetime(2027, 3, 1, tzinfo=UTC)
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="new", bill_fen=10_000, zone=ZONE
        )
        membership.burn_points(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            points=150,
            idempotency_key="x",
            reason="t",
            zone=ZONE,
        )
        with pytest.raises(Conflict, match="not enough points"):
            membership.burn_points(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                points=51,
                idempotency_key="y",
                reason="t",
                zone=ZONE,
            )
        # The old lot (2026) is empty; only 50 of the 2027 lot are left to expire at 2028's end.
        now.current = datetime(2028, 1, 2, tzinfo=UTC)
        assert membership.expire_points(session, actor=SYSTEM) == (0, 0)
        session.commit()
    assert membership.points_balance(session, subscriber_id=sid) == 50
    points_invariants(session, sid)


def test_reversing_a_bill_takes_back_what_is_left_and_states_the_rest(
    session: Session, vault: Vault
) -> None:
    sid = subscriber(session, vault, plan_fee_fen=5900)
    with frozen(START):
        membership.earn_for_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="r", bill_fen=10_000, zone=ZONE
        )
        membership.burn_points(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            points=70,
            idempotency_key="s",
            reason="t",
            zone=ZONE,
        )
        posted = membership.reverse_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="r", zone=ZONE
        )
        twice = membership.reverse_bill(
            session, actor=SYSTEM, subscriber_id=sid, bill_ref="r", zone=ZONE
        )
        with pytest.raises(NotFound):
            membership.reverse_bill(
                session, actor=SYSTEM, subscriber_id=sid, bill_ref="nope", zone=ZONE
            )
        session.commit()
    assert posted.entry is not None and posted.entry.points == -30
    assert posted.entry.details == {"earned": 100, "unrecovered": 70}
    assert twice.replayed
    points_invariants(session, sid)


def test_redeeming_points_burns_and_grants_together(session: Session, vault: Vault) -> None:
    sid = subscriber(session, vault, plan_fee_fen=5900)
    partner = make_partner(session)
    from perkflow.catalog.rules import FulfilmentKind

    benefit = make_benefit(session, partner=partner, kind=FulfilmentKind.COUPON, stock=1)
    with frozen(START):
        membership.award_bonus(
            session, actor=SYSTEM, subscriber_id=sid, points=5000, campaign_ref="spring", zone=ZONE
        )
        done = membership.redeem_points(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            benefit_id=benefit.id,
            idempotency_key="r1",
            zone=ZONE,
        )
        assert done.cost == 1500  # sale price 15 yuan, 100 points = 1 yuan
        with pytest.raises(Conflict, match="sold out"):
            membership.redeem_points(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit.id,
                idempotency_key="r2",
                zone=ZONE,
            )
        session.commit()
    # The refused redemption burnt nothing.
    assert membership.points_balance(session, subscriber_id=sid) == 3500
    assert session.scalar(select(func.count()).select_from(Grant)) == 1
    points_invariants(session, sid)


# ---- property: any sequence keeps the ledger whole and matches a simple model ----------------


@dataclass
class Lot:
    bill: str | None
    left: int
    expires: datetime


def _expire(model: list[Lot], now: datetime) -> None:
    for lot in model:
        if lot.expires <= now:
            lot.left = 0


def _take(lots: list[Lot], amount: int) -> int:
    taken = 0
    for lot in lots:
        t = min(lot.left, amount - taken)
        lot.left -= t
        taken += t
    return taken


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(0, 600_00)),
        st.tuples(st.just("burn"), st.integers(1, 900)),
        st.tuples(st.just("advance"), st.integers(0, 500)),
        st.tuples(st.just("expire"), st.just(0)),
        st.tuples(st.just("reverse"), st.integers(0, 8)),
        st.tuples(st.just("replay"), st.integers(0, 8)),
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_any_sequence_keeps_balance_equal_to_the_ledger_sum(
    session: Session, vault: Vault, ops: list[tuple[str, int]]
) -> None:
    sid = subscriber(session, vault, plan_fee_fen=5900)
    model: list[Lot] = []
    bills: list[tuple[str, int]] = []
    with frozen(START) as now:
        for step, (op, n) in enumerate(ops):
            if op == "advance":
                now.advance(days=n)
                continue
            if op == "expire":
                membership.expire_points(session, actor=SYSTEM)
                _expire(model, now.current)
            elif op in ("earn", "replay"):
                if op == "replay" and bills:
                    ref, fen = bills[n % len(bills)]  # the same bill again: recorded once
                else:
                    ref, fen = f"b{step}", n
                posted = membership.earn_for_bill(
                    session, actor=SYSTEM, subscriber_id=sid, bill_ref=ref, bill_fen=fen, zone=ZONE
                )
                if posted.entry is not None and not posted.replayed:
                    _expire(model, now.current)
                    model.append(
                        Lot(
                            ref,
                            posted.entry.points,
                            rules.expires_at(now.current, zone=ZONE, years=1),
                        )
                    )
                    bills.append((ref, fen))
            elif op == "burn":
                available = sum(lot.left for lot in model if lot.expires > now.current)
                try:
                    membership.burn_points(
                        session,
                        actor=SYSTEM,
                        subscriber_id=sid,
                        points=n,
                        idempotency_key=f"burn{step}",
                        reason="test",
                        zone=ZONE,
                    )
                    assert n <= available
                    _expire(model, now.current)
                    _take(sorted(model, key=lambda lo: lo.expires), n)
                except Conflict:
                    assert n > available
                    _expire(model, now.current)  # the refused burn still expired due lots
            elif op == "reverse" and bills:
                ref, _ = bills[n % len(bills)]
                posted = membership.reverse_bill(
                    session, actor=SYSTEM, subscriber_id=sid, bill_ref=ref, zone=ZONE
                )
                if not posted.replayed:
                    _expire(model, now.current)
                    own = [lo for lo in model if lo.bill == ref]
                    others = sorted(
                        (lo for lo in model if lo.bill != ref), key=lambda lo: lo.expires
                    )
                    earned = session.scalars(
                        select(PointsEntry).where(
                            PointsEntry.idempotency_key == f"bill:{sid}:{ref}"
                        )
                    ).one()
                    _take(own + others, earned.points)
            session.commit()
            points_invariants(session, sid)
            assert membership.points_balance(session, subscriber_id=sid) == sum(
                lo.left for lo in model
            ), (op, n)
    clock.set_clock(None)


def test_expiry_runs_on_the_operator_calendar() -> None:
    earned = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)  # already 2027-01-01 in Shanghai
    assert rules.expires_at(earned, zone=ZONE, years=1) == datetime(2028, 12, 31, 16, 0, tzinfo=UTC)
    assert rules.expires_at(earned - timedelta(hours=1), zone=ZONE, years=1) == datetime(
        2027, 12, 31, 16, 0, tzinfo=UTC
    )
