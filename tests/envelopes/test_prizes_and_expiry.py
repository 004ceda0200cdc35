"""Crediting red-envelope prizes (cash, or a coupon of the tier's batch); expiring envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon
from perkflow.envelopes import service as envelopes
from perkflow.envelopes import tasks as envelope_tasks
from perkflow.envelopes.models import EnvelopeCredit, EnvelopeProgram, ShareEnvelope
from perkflow.envelopes.rules import (
    CreditKind,
    DrawOutcome,
    EnvelopeStatus,
    ProgramKind,
    ProgramStatus,
)
from perkflow.envelopes.schemas import ProgramSpec, TierSpec
from perkflow.errors import Conflict
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.coupons.factories import make_batch
from tests.envelopes.factories import make_lottery, make_share
from tests.factories import make_subscribers

PEOPLE = [
    ("13812350001", "GD", "GD01"),
    ("13812350002", "GD", "GD01"),
    ("13812350003", "GD", "GD02"),
    ("13912350004", "ZJ", "ZJ01"),
]


# ---- adding stock -------------------------------------------------------------------------


def _coupon_lottery(
    session: Session, *, batch_id: int, budget_fen: int = 100_000, cash_ppm: int = 0
) -> EnvelopeProgram:
    tiers = [
        TierSpec(
            tier=1,
            name_zh="券",
            name_en="Coupon",
            prize_fen=1000,
            weight_ppm=1_000_000 - cash_ppm,
            prize_batch_id=batch_id,
        )
    ]
    if cash_ppm:
        tiers.append(
            TierSpec(tier=2, name_zh="现金", name_en="Cash", prize_fen=188, weight_ppm=cash_ppm)
        )
    program = envelopes.create_program(
        session,
        actor=SYSTEM,
        spec=ProgramSpec(
            code=f"coupon-lottery-{batch_id}",
            name_zh="抽券",
            name_en="Coupon draw",
            kind=ProgramKind.LOTTERY,
            budget_fen=budget_fen,
            limit_per_subscriber=100,
            tiers=tiers,
            seed="seed-for-prize-tests",
        ),
    )
    envelopes.set_program_status(
        session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
    )
    session.commit()
    return program


def _credits(session: Session) -> list[EnvelopeCredit]:
    return list(
        session.scalars(
            select(EnvelopeCredit)
            .order_by(EnvelopeCredit.id)
            .execution_options(populate_existing=True)
        )
    )


class TestCreditPrizes:
    def test_a_coupon_tier_puts_one_coupon_per_win_in_the_wallet(
        self, session: Session, vault: Vault
    ) -> None:
        [a, *_] = make_subscribers(session, vault, PEOPLE)
        prize = make_batch(session, stock_total=10, name_en="Prize 10 off")
        program = _coupon_lottery(session, batch_id=prize.id)
        results = envelopes.draw_lottery(
            session, actor=SYSTEM, vault=vault, program_id=program.id, subscriber_id=a, count=3
        )
        session.commit()
        assert [r.outcome for r in results] == [DrawOutcome.WON] * 3
        wallet = coupons.wallet(session, actor=SYSTEM, vault=vault, subscriber_id=a)
        assert [i.batch.id for i in wallet] == [prize.id] * 3
        assert len({i.code for i in wallet}) == 3
        credits = _credits(session)
        assert [(c.kind, c.draw_no) for c in credits] == [(CreditKind.COUPON, n) for n in (1, 2, 3)]
        assert {c.coupon_id for c in credits} == {i.coupon.id for i in wallet}
        assert coupons.stock_of(session, actor=SYSTEM, batch_id=prize.id).remaining == 7
        # Retried crediting (twice) changes nothing: one draw, one coupon.
        for _ in range(2):
            again = envelopes.credit_draw(session, vault=vault, program_id=program.id, draw_no=2)
            session.commit()
            assert again is not None and again.id == credits[1].id
        assert session.scalar(select(func.count()).select_from(Coupon)) == 3
        assert coupons.stock_of(session, actor=SYSTEM, batch_id=prize.id).remaining == 7
        views = envelopes.draw_prizes(session, program_id=program.id, draw_nos=[1, 2, 3])
        assert all(v.batch is not None and v.batch.id == prize.id for v in views.values())

    def test_a_sold_out_prize_batch_pays_nothing(self, session: Session, vault: Vault) -> None:
        [a, *_] = make_subscribers(session, vault, PEOPLE)
        prize = make_batch(session, stock_total=2)
        program = _coupon_lottery(session, batch_id=prize.id)
        results = envelopes.draw_lottery(
            session, actor=SYSTEM, vault=vault, program_id=program.id, subscriber_id=a, count=3
        )
        session.commit()
        assert [r.outcome for r in results] == [
            DrawOutcome.WON,
            DrawOutcome.WON,
            DrawOutcome.PRIZE_SOLD_OUT,
        ]
        refreshed = session.get(EnvelopeProgram, program.id, populate_existing=True)
        assert refreshed is not None and refreshed.spent_fen == 2000
        assert len(_credits(session)) == 2
        assert envelopes.credit_draw(session, vault=vault, program_id=program.id, draw_no=3) is None

    def test_cash_prizes_go_to_the_balance_once(self, session: Session, vault: Vault) -> None:
        [a, b, *_] = make_subscribers(session, vault, PEOPLE)
        program = make_lottery(session, budget_fen=100_000, tiers=[(1, 888, 1_000_000)])
        envelopes.draw_lottery(
            session, actor=SYSTEM, vault=vault, program_id=program.id, subscriber_id=a, count=2
        )
        session.commit()
        assert envelopes.cash_balance(session, subscriber_id=a) == 1776
        assert envelopes.cash_balance(session, subscriber_id=b) == 0
        for _ in range(2):
            envelopes.credit_draw(session, vault=vault, program_id=program.id, draw_no=1)
            session.commit()
        assert envelopes.cash_balance(session, subscriber_id=a) == 1776
        prizes = envelopes.prizes_of(session, subscriber_id=a)
        assert [(p.credit.kind, p.credit.amount_fen, p.batch) for p in prizes] == [
            (CreditKind.CASH, 888, None)
        ] * 2

    def test_a_lost_credit_is_put_back_once_by_a_retry(
        self, session: Session, vault: Vault
    ) -> None:
        # A retry of crediting for a draw whose credit row went missing puts it back once.
        [a, *_] = make_subscribers(session, vault, PEOPLE)
        program = make_lottery(session, budget_fen=100_000, tiers=[(1, 500, 1_000_000)])
        envelopes.draw_lottery(
            session, actor=SYSTEM, vault=vault, program_id=program.id, subscriber_id=a, count=1
        )
        session.commit()
        session.execute(EnvelopeCredit.__table__.delete())
        credit = envelopes.credit_draw(session, vault=vault, program_id=program.id, draw_no=1)
        again = envelopes.credit_draw(session, vault=vault, program_id=program.id, draw_no=1)
        session.commit()
        assert credit is not None and again is not None and credit.id == again.id
        assert envelopes.cash_balance(session, subscriber_id=a) == 500

    def test_an_opened_share_envelope_is_credited_once(
        self, session: Session, vault: Vault
    ) -> None:
        owner, f1, f2, _ = make_subscribers(session, vault, PEOPLE)
        program = make_share(session, amount_fen=888, helpers=2)
        env = envelopes.start_share(
            session, actor=SYSTEM, program_id=program.id, subscriber_id=owner
        )
        session.commit()
        for helper in (f1, f2):
            envelopes.help_open(
                session,
                actor=coupons.subscriber_actor(helper),
                envelope_id=env.id,
                helper_id=helper,
                via_id=owner,
                device_id=None,
            )
            session.commit()
            # Not a cent before the envelope opens; its amount after.
            expected = 888 if helper == f2 else 0
            assert envelopes.cash_balance(session, subscriber_id=owner) == expected
        for _ in range(2):
            credit = envelopes.credit_envelope(session, envelope_id=env.id)
            session.commit()
            assert credit is not None and credit.envelope_id == env.id
        assert envelopes.cash_balance(session, subscriber_id=owner) == 888
        assert len(_credits(session)) == 1


class TestExpireEnvelopes:
    def test_unopened_envelopes_give_their_reservation_back_once(
        self, session: Session, vault: Vault
    ) -> None:
        owner1, owner2, friend, _ = make_subscribers(session, vault, PEOPLE)
        start = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
        clock.set_clock(clock.FrozenClock(start))
        try:
            program = envelopes.create_program(
                session,
                actor=SYSTEM,
                spec=ProgramSpec(
                    code="share-deadline",
                    name_zh="分享拆红包",
                    name_en="Share to open",
                    kind=ProgramKind.SHARE,
                    budget_fen=10_000,
                    share_amount_fen=888,
                    helpers_needed=1,
                    starts_at=start,
                    ends_at=start + timedelta(days=1),
                ),
            )
            envelopes.set_program_status(
                session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
            )
            opened = envelopes.start_share(
                session, actor=SYSTEM, program_id=program.id, subscriber_id=owner1
            )
            locked = envelopes.start_share(
                session, actor=SYSTEM, program_id=program.id, subscriber_id=owner2
            )
            envelopes.help_open(
                session,
                actor=SYSTEM,
                envelope_id=opened.id,
                helper_id=friend,
                via_id=owner1,
                device_id=None,
            )
            session.commit()
            assert envelopes.expire_envelopes(session).envelopes == 0  # before the deadline
            clock.set_clock(clock.FrozenClock(start + timedelta(days=1, seconds=1)))
            report = envelopes.expire_envelopes(session)
            session.commit()
            assert (report.envelopes, report.returned_fen) == (1, 888)
            again = envelopes.expire_envelopes(session)
            session.commit()
            assert (again.envelopes, again.returned_fen) == (0, 0)
        finally:
            clock.set_clock(None)
        statuses = dict(session.execute(select(ShareEnvelope.id, ShareEnvelope.status)).all())
        assert statuses == {opened.id: EnvelopeStatus.OPENED, locked.id: EnvelopeStatus.EXPIRED}
        refreshed = session.get(EnvelopeProgram, program.id, populate_existing=True)
        assert refreshed is not None and refreshed.spent_fen == 888  # only the opened one
        assert envelopes.cash_balance(session, subscriber_id=owner2) == 0
        with pytest.raises(Conflict, match="expired"):
            envelopes.help_open(
                session,
                actor=SYSTEM,
                envelope_id=locked.id,
                helper_id=friend,
                via_id=owner2,
                device_id=None,
            )
        session.rollback()

    def test_a_programme_ended_by_hand_expires_its_envelopes(
        self, session: Session, vault: Vault
    ) -> None:
        owner, *_ = make_subscribers(session, vault, PEOPLE)
        program = make_share(session, amount_fen=500, helpers=3, budget_fen=1_000)
        envelopes.start_share(session, actor=SYSTEM, program_id=program.id, subscriber_id=owner)
        envelopes.set_program_status(
            session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ENDED
        )
        session.commit()
        sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
        assert envelope_tasks.expire_envelopes(sessions).returned_fen == 500
        assert envelope_tasks.expire_envelopes(sessions).returned_fen == 0
        refreshed = session.get(EnvelopeProgram, program.id, populate_existing=True)
        assert refreshed is not None and refreshed.spent_fen == 0
