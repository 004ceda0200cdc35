"""Adding stock to a running batch, crediting red-envelope prizes, expiring envelopes, housekeeping.

On SQLite and PostgreSQL (the `session` fixture runs on both).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons import tasks
from perkflow.coupons.models import Coupon, RateBucket, StockShard
from perkflow.coupons.rules import RATE_WINDOW_S, BatchStatus, CodeSource, rate_window
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
from perkflow.errors import Conflict, Forbidden, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.coupons.factories import ZONE, make_batch, make_lottery, make_share
from tests.factories import make_staff, make_subscribers

PEOPLE = [
    ("13812350001", "GD", "GD01"),
    ("13812350002", "GD", "GD01"),
    ("13812350003", "GD", "GD02"),
    ("13912350004", "ZJ", "ZJ01"),
]


def _claim(session: Session, vault: Vault, batch_id: int, sid: int, key: str) -> Coupon:
    outcome = coupons.claim_coupon(
        session,
        actor=SYSTEM,
        vault=vault,
        batch_id=batch_id,
        subscriber_id=sid,
        idempotency_key=key,
        channel="api",
        device_id=None,
        zone=ZONE,
    )
    session.commit()
    return outcome.coupon


def _slots(session: Session, batch_id: int) -> list[int]:
    return sorted(session.scalars(select(Coupon.slot).where(Coupon.batch_id == batch_id)))


def _shards(session: Session, batch_id: int) -> list[tuple[int, int, int, int]]:
    rows = session.scalars(
        select(StockShard)
        .where(StockShard.batch_id == batch_id)
        .order_by(StockShard.shard)
        .execution_options(populate_existing=True)
    )
    return [(s.shard, s.slot_base, s.size, s.remaining) for s in rows]


# ---- adding stock -------------------------------------------------------------------------


class TestAddStock:
    def test_a_sold_out_batch_gets_new_slots_after_the_old_ones(
        self, session: Session, vault: Vault
    ) -> None:
        ids = make_subscribers(session, vault, PEOPLE[:3])
        batch = make_batch(session, stock_total=4, limit_total=5)
        for n in range(4):
            _claim(session, vault, batch.id, ids[n % 3], f"first-{n:04d}")
        with pytest.raises(coupons.SoldOut):
            _claim(session, vault, batch.id, ids[0], "sold-out-1")
        session.rollback()

        view = coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=3)
        session.commit()
        assert (view.total, view.remaining, view.claimed) == (7, 3, 4)
        assert _shards(session, batch.id) == [(0, 0, 4, 0), (1, 4, 3, 3)]
        # The sold-out memo of this process was dropped with the addition: claims go on at once.
        for n in range(3):
            _claim(session, vault, batch.id, ids[n], f"second-{n:04d}")
        with pytest.raises(coupons.SoldOut):
            _claim(session, vault, batch.id, ids[1], "sold-out-2")
        session.rollback()
        assert _slots(session, batch.id) == list(range(7))
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "coupon_batch.add_stock")
        ).one()
        assert audit.details["slots"] == [4, 6] and audit.target_id == str(batch.id)

    def test_a_flash_sale_addition_is_spread_over_new_shards(
        self, session: Session, vault: Vault
    ) -> None:
        batch = make_batch(session, stock_total=32, flash_sale=True, shard_count=4)
        coupons.set_batch_status(
            session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.PAUSED
        )
        coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=1024)
        coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=5)
        session.commit()
        rows = _shards(session, batch.id)
        assert [r[0] for r in rows] == list(range(len(rows)))  # numbers stay 0..K-1
        # 16 shards of 64 for the big addition, one for the small one (no tiny shards).
        assert [r[2] for r in rows[4:]] == [64] * 16 + [5]
        ranges = sorted((base, base + size) for _, base, size, _ in rows)
        assert ranges[0][0] == 0 and ranges[-1][1] == 32 + 1024 + 5
        assert all(a[1] == b[0] for a, b in pairwise(ranges)), "gap/overlap"
        refreshed = coupons.get_batch(session, actor=SYSTEM, batch_id=batch.id)
        assert (refreshed.stock_total, refreshed.shard_count) == (1061, 21)

    def test_bad_input_is_refused_and_changes_nothing(self, session: Session, vault: Vault) -> None:
        draft = make_batch(session, activate=False, stock_total=10)
        with pytest.raises(Conflict) as exc:
            coupons.add_stock(session, actor=SYSTEM, batch_id=draft.id, quantity=5)
        assert exc.value.field == "status"
        session.rollback()
        # digits x 6 = 1,000,000 codes: at most 1,000 units stay unguessable (0.1 %).
        batch = make_batch(session, stock_total=900, code_charset="digits", code_length=6)
        for quantity in (0, -3, 50_000_001):
            with pytest.raises(ValidationFailed) as bad:
                coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=quantity)
            assert bad.value.field == "quantity"
        with pytest.raises(Conflict) as full:
            coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=101)
        assert full.value.field == "quantity" and full.value.details["room"] == 100
        session.rollback()
        assert _shards(session, batch.id) == [(0, 0, 900, 900)]
        coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=100)
        session.commit()
        assert coupons.stock_of(session, actor=SYSTEM, batch_id=batch.id).total == 1000

    def test_an_import_batch_needs_its_codes_first(self, session: Session, vault: Vault) -> None:
        ids = make_subscribers(session, vault, PEOPLE[:3])
        batch = make_batch(session, activate=False, stock_total=2, code_source=CodeSource.IMPORT)
        coupons.import_codes(
            session, actor=SYSTEM, vault=vault, batch_id=batch.id, codes=["AAAA0001", "AAAA0002"]
        )
        coupons.set_batch_status(
            session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
        )
        session.commit()
        with pytest.raises(Conflict) as exc:
            coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=1)
        assert exc.value.field == "quantity"
        session.rollback()
        coupons.import_codes(
            session, actor=SYSTEM, vault=vault, batch_id=batch.id, codes=["BBBB0003"]
        )
        coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=1)
        session.commit()
        got = {_claim(session, vault, batch.id, sid, f"imp-{sid}").slot for sid in ids}
        assert got == {0, 1, 2}
        codes = {
            coupons.wallet(session, actor=SYSTEM, vault=vault, subscriber_id=sid)[0].code
            for sid in ids
        }
        assert codes == {"AAAA0001", "AAAA0002", "BBBB0003"}

    def test_a_pattern_batch_makes_more_codes_then_adds_stock(
        self, session: Session, vault: Vault
    ) -> None:
        batch = make_batch(session, activate=False, stock_total=3, code_source=CodeSource.PATTERN)
        sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
        job = coupons.start_code_job(session, actor=SYSTEM, batch_id=batch.id)
        session.commit()
        assert tasks.run_code_job(sessions, vault=vault, job_id=job.id) == "done"
        coupons.set_batch_status(
            session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
        )
        session.commit()
        with pytest.raises(Conflict):
            coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=2)
        session.rollback()
        more = coupons.start_code_job(session, actor=SYSTEM, batch_id=batch.id, count=2)
        session.commit()
        assert tasks.run_code_job(sessions, vault=vault, job_id=more.id) == "done"
        view = coupons.add_stock(session, actor=SYSTEM, batch_id=batch.id, quantity=2)
        session.commit()
        assert (view.total, view.remaining) == (5, 5)

    def test_only_the_owner_region_edits_stock(self, session: Session, vault: Vault) -> None:
        batch = make_batch(session, stock_total=10, owner_region="GD")
        zj = _staff(session, "zj-marketer", Role.PROVINCE_MARKETER, "ZJ")
        with pytest.raises(Forbidden):
            coupons.add_stock(session, actor=zj, batch_id=batch.id, quantity=1)
        session.rollback()
        gd = _staff(session, "gd-marketer", Role.PROVINCE_MARKETER, "GD")
        assert coupons.add_stock(session, actor=gd, batch_id=batch.id, quantity=1).total == 11


def _staff(session: Session, username: str, role: Role, region: str) -> Actor:
    user = make_staff(session, username=username, role=role, region=region)
    return org.actor_for_staff(session, user=user, ip="127.0.0.1")


# ---- crediting prizes ---------------------------------------------------------------------


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


# ---- expiring share envelopes -------------------------------------------------------------


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


# ---- housekeeping -------------------------------------------------------------------------


def test_housekeeping_prunes_old_rate_windows_and_keeps_current_ones(session: Session) -> None:
    now = rate_window(clock.now().timestamp())
    rows = [
        ("s:old", now - 5 * RATE_WINDOW_S),
        ("s:previous", now - 2 * RATE_WINDOW_S),
        ("s:last", now - RATE_WINDOW_S),  # finished just now: kept one window for late writers
        ("s:current", now),
        ("d:current", now),
    ]
    session.add_all(RateBucket(key=k, window_start=w, count=1) for k, w in rows)
    session.commit()
    sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    done = tasks.housekeep(sessions)
    assert done.rate_windows == 2
    left = set(session.scalars(select(RateBucket.key)))
    assert left == {"s:last", "s:current", "d:current"}
    # The scheduler runs the same round repeatedly until stopped.
    session.add(RateBucket(key="s:stale", window_start=now - 9 * RATE_WINDOW_S, count=1))
    session.commit()
    stop = threading.Event()
    rounds: list[tasks.Housekeeping] = []

    def on_round(h: tasks.Housekeeping) -> None:
        rounds.append(h)
        if len(rounds) >= 2:
            stop.set()

    runner = threading.Thread(
        target=tasks.run_housekeeping,
        args=(sessions,),
        kwargs={"every_s": 0.01, "stop": stop, "on_round": on_round},
    )
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive() and [r.rate_windows for r in rounds] == [1, 0]
    session.expire_all()
    assert set(session.scalars(select(RateBucket.key))) == left
