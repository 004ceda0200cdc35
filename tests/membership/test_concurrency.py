"""On PostgreSQL, real concurrent sessions: bundles exactly once, balances never below zero."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Conflict
from perkflow.grants.models import Grant
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership import tasks
from perkflow.membership.models import BundleGrant, PointsEntry
from perkflow.org.rules import SYSTEM
from tests.membership.helpers import ZONE, default_program, frozen, points_invariants, subscriber

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_two_workers_issuing_the_same_month_at_once_grant_each_benefit_once(
    ledger_url: str, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        default_program(s, vault)
        sids = [subscriber(s, vault, plan_fee_fen=9900) for _ in range(30)]
        membership.apply_tier_targets(
            s, actor=SYSTEM, targets=dict.fromkeys(sids, 1), reason="load", source="test"
        )
        s.commit()
    engine = make_engine(ledger_url, pool_size=4, max_overflow=0)
    results: list[membership.IssueCount] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=30)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(
                tasks.issue_bundles(
                    make_session_factory(engine), month="2026-11", zone=ZONE, chunk=7
                )
            )
        except BaseException as exc:
            errors.append(exc)

    try:
        with frozen():
            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
                assert not t.is_alive(), "a worker hung"
    finally:
        engine.dispose()
    assert not errors, errors
    per_member = 2 + 4  # monthly cloud storage and coupon pack; 2026's visits, SIM swap, data
    assert sum(r.issued for r in results) == 30 * per_member
    assert sum(r.issued + r.replayed for r in results) == 2 * 30 * per_member
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Grant)) == 30 * per_member
        assert s.scalar(select(func.count()).select_from(BundleGrant)) == 30 * per_member


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_concurrent_burns_never_take_the_balance_below_zero(
    ledger_url: str, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        sid = subscriber(s, vault, plan_fee_fen=5900)
        for i in range(5):  # five lots of 100 points
            membership.earn_for_bill(
                s, actor=SYSTEM, subscriber_id=sid, bill_ref=f"b{i}", bill_fen=10_000, zone=ZONE
            )
        s.commit()
    engine = make_engine(ledger_url, pool_size=40, max_overflow=0, pool_timeout=60)
    wide = make_session_factory(engine)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(40, timeout=60)

    def burn(i: int) -> None:
        barrier.wait()
        with wide() as s:
            try:
                membership.burn_points(
                    s,
                    actor=SYSTEM,
                    subscriber_id=sid,
                    points=30,
                    idempotency_key=f"burn-{i % 35}",  # five keys sent twice
                    reason="race",
                    zone=ZONE,
                )
                s.commit()
                what = "ok"
            except Conflict:
                s.rollback()
                what = "refused"
        with lock:
            outcomes[what] += 1

    try:
        threads = [threading.Thread(target=burn, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a burn hung"
    finally:
        engine.dispose()
    with sessions() as s:
        burns = s.scalar(
            select(func.count()).select_from(PointsEntry).where(PointsEntry.kind == "burn")
        )
        # 500 points buy 16 burns of 30; duplicates of a key replay the same burn.
        assert burns == 16
        assert membership.points_balance(s, subscriber_id=sid) == 500 - 16 * 30
        points_invariants(s, sid)
    assert outcomes["ok"] + outcomes["refused"] == 40
