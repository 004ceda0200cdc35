"""The flash-sale guarantees under real concurrency on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon, Redemption
from perkflow.coupons.rules import Refusal
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import PerkflowError
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Role
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_staff, make_subscribers

pytestmark = pytest.mark.postgres
PG = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
WORKERS = 48


@pytest.fixture
def wide(ledger_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions over a pool as wide as the worker threads, so they really run at once."""
    eng: Engine = make_engine(ledger_url, pool_size=WORKERS, max_overflow=8)
    yield make_session_factory(eng)
    eng.dispose()


def _phones(n: int, start: int = 0) -> list[tuple[str, str, str]]:
    return [(f"1390000{i:04d}", "GD", "GD01") for i in range(start, start + n)]


@PG
def test_1000_concurrent_claims_over_stock_300(wide: sessionmaker[Session], vault: Vault) -> None:
    with wide() as s:
        ids = make_subscribers(s, vault, _phones(500))
        batch = make_batch(s, stock_total=300, flash_sale=True, shard_count=16)
    # Every subscriber tries twice with different keys: 1,000 claims for 300 units.
    attempts = [(sid, f"k{n}-{sid}") for sid in ids for n in range(2)]
    barrier = threading.Barrier(WORKERS)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def claim(job: tuple[int, str]) -> None:
        sid, key = job
        with wide() as s:
            try:
                coupons.claim_coupon(
                    s,
                    actor=SYSTEM,
                    vault=vault,
                    batch_id=batch.id,
                    subscriber_id=sid,
                    idempotency_key=key,
                    channel="api",
                    device_id=None,
                    zone=ZONE,
                )
                s.commit()
                result = "ok"
            except PerkflowError as exc:
                s.rollback()
                result = exc.code
        with lock:
            outcomes[result] += 1

    def worker(jobs: list[tuple[int, str]]) -> None:
        barrier.wait()
        for job in jobs:
            claim(job)

    chunks = [attempts[i::WORKERS] for i in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(worker, chunks))
    with wide() as s:
        claimed = s.scalars(select(Coupon.subscriber_id).where(Coupon.batch_id == batch.id)).all()
        slots = s.scalars(select(Coupon.slot).where(Coupon.batch_id == batch.id)).all()
        stock = coupons.stock_of(s, actor=SYSTEM, batch_id=batch.id)
    assert len(claimed) == 300 == outcomes["ok"]
    assert len(set(claimed)) == 300, "a subscriber got two coupons"
    assert sorted(slots) == list(range(300))
    assert stock.remaining == 0 and min(stock.shards) == 0
    assert outcomes["sold_out"] + outcomes["limit_reached"] == 700


@PG
def test_same_idempotency_key_concurrently_gives_one_claim(
    wide: sessionmaker[Session], vault: Vault
) -> None:
    with wide() as s:
        [sid] = make_subscribers(s, vault, _phones(1, 900))
        batch = make_batch(s, stock_total=50, limit_total=5, flash_sale=True)
    n = 24
    barrier = threading.Barrier(n)
    got: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        with wide() as s:
            barrier.wait()
            outcome = coupons.claim_coupon(
                s,
                actor=coupons.subscriber_actor(sid),
                vault=vault,
                batch_id=batch.id,
                subscriber_id=sid,
                idempotency_key="the-same-key-1",
                channel="h5",
                device_id="d",
                zone=ZONE,
            )
            s.commit()
            with lock:
                got.append(outcome.coupon.id)

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with wide() as s:
        rows = s.scalar(select(func.count()).where(Coupon.subscriber_id == sid))
        stock = coupons.stock_of(s, actor=SYSTEM, batch_id=batch.id)
    assert len(got) == n and len(set(got)) == 1
    assert rows == 1 and stock.remaining == 49


@PG
def test_two_clerks_redeeming_one_code_at_once(wide: sessionmaker[Session], vault: Vault) -> None:
    with wide() as s:
        ids = make_subscribers(s, vault, _phones(10, 950))
        batch = make_batch(s)
        codes = []
        for sid in ids:
            coupons.claim_coupon(
                s,
                actor=SYSTEM,
                vault=vault,
                batch_id=batch.id,
                subscriber_id=sid,
                idempotency_key=f"redeem-{sid}",
                channel="api",
                device_id=None,
                zone=ZONE,
            )
            s.commit()
            actor = coupons.subscriber_actor(sid)
            codes.append(coupons.wallet(s, actor=actor, vault=vault, subscriber_id=sid)[0].code)
        clerks = [
            org.actor_for_staff(
                s, user=make_staff(s, username=f"c{i}", role=Role.CLERK, region=store), ip="-"
            )
            for i, store in enumerate(["GD01S1", "GD01S2"])
        ]
    for code in codes:
        barrier = threading.Barrier(2)
        results: list[str] = []

        def redeem(
            i: int,
            code: str = code,
            barrier: threading.Barrier = barrier,
            results: list[str] = results,
        ) -> None:
            with wide() as s:
                barrier.wait()
                try:
                    coupons.redeem_coupon(
                        s, actor=clerks[i], vault=vault, code=code, order_fen=9000
                    )
                    s.commit()
                    results.append("ok")
                except coupons.Refused as exc:
                    s.rollback()
                    results.append(exc.reason.value)

        threads = [threading.Thread(target=redeem, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [Refusal.ALREADY_REDEEMED.value, "ok"]
    with wide() as s:
        assert s.scalar(select(func.count()).select_from(Redemption)) == len(codes)
