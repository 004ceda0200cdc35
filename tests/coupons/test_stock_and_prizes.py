"""Adding stock to a running batch and housekeeping (red-envelope prizes: tests/envelopes).

On SQLite and PostgreSQL (the `session` fixture runs on both).
"""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons import tasks
from perkflow.coupons.models import Coupon, RateBucket, StockShard
from perkflow.coupons.rules import RATE_WINDOW_S, BatchStatus, CodeSource, rate_window
from perkflow.errors import Conflict, Forbidden, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.coupons.factories import ZONE, make_batch
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
