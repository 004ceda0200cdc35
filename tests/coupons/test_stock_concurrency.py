"""Stock added to a running flash sale while claims hammer it, on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon, CouponBatch, StockShard
from perkflow.coupons.service import claims
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import PerkflowError
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_subscribers

pytestmark = pytest.mark.postgres
PG = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
CLAIMERS = 24
ADDERS = 4


@pytest.fixture
def wide(ledger_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions over a pool as wide as the threads, so they really run at once."""
    eng: Engine = make_engine(ledger_url, pool_size=CLAIMERS + ADDERS, max_overflow=8)
    yield make_session_factory(eng)
    eng.dispose()


@PG
def test_claims_racing_stock_additions_never_oversell_nor_lose_units(
    wide: sessionmaker[Session], vault: Vault
) -> None:
    with wide() as s:
        ids = make_subscribers(
            s, vault, [(f"1370000{i:04d}", "GD", "GD01") for i in range(CLAIMERS)]
        )
        batch = make_batch(s, stock_total=120, flash_sale=True, shard_count=8, limit_total=1000)
    additions = [37] * 12  # 444 units in 12 additions, 4 threads at once
    attempts_each = 30  # 720 attempts for 564 units: the sale sells out by the end
    barrier = threading.Barrier(CLAIMERS + ADDERS)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def claimer(sid: int) -> None:
        barrier.wait()
        for n in range(attempts_each):
            with wide() as s:
                try:
                    coupons.claim_coupon(
                        s,
                        actor=SYSTEM,
                        vault=vault,
                        batch_id=batch.id,
                        subscriber_id=sid,
                        idempotency_key=f"race-{sid}-{n}",
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

    def adder(quantities: list[int]) -> None:
        barrier.wait()
        for q in quantities:
            with wide() as s:
                coupons.add_stock(s, actor=SYSTEM, batch_id=batch.id, quantity=q)
                s.commit()
            with lock:
                outcomes["added"] += q

    with ThreadPoolExecutor(CLAIMERS + ADDERS) as pool:
        futures = [pool.submit(claimer, sid) for sid in ids]
        futures += [pool.submit(adder, additions[i::ADDERS]) for i in range(ADDERS)]
        for f in futures:
            f.result()

    # Claims that saw "sold out" before the last addition leave some stock: sell the rest.
    with wide() as s:
        left = coupons.stock_of(s, actor=SYSTEM, batch_id=batch.id).remaining
    claims._sold_out_seen.clear()
    with wide() as s:
        for n in range(left):
            coupons.claim_coupon(
                s,
                actor=SYSTEM,
                vault=vault,
                batch_id=batch.id,
                subscriber_id=ids[n % CLAIMERS],
                idempotency_key=f"rest-{n}",
                channel="api",
                device_id=None,
                zone=ZONE,
            )
            s.commit()
        with pytest.raises(coupons.SoldOut):
            coupons.claim_coupon(
                s,
                actor=SYSTEM,
                vault=vault,
                batch_id=batch.id,
                subscriber_id=ids[0],
                idempotency_key="one-too-many",
                channel="api",
                device_id=None,
                zone=ZONE,
            )
        s.rollback()

    total = 120 + sum(additions)
    with wide() as s:
        slots = s.scalars(select(Coupon.slot).where(Coupon.batch_id == batch.id)).all()
        shards = s.scalars(select(StockShard).where(StockShard.batch_id == batch.id)).all()
        final = s.get(CouponBatch, batch.id)
        stock = coupons.stock_of(s, actor=SYSTEM, batch_id=batch.id)
    assert outcomes["added"] == sum(additions) and outcomes["ok"] > 120
    assert final is not None and final.stock_total == total == stock.total
    assert final.shard_count == len(shards) == 8 + 12
    assert len(slots) + stock.remaining == total, "units lost or oversold"
    assert stock.remaining == 0 and len(slots) == total
    assert len(set(slots)) == len(slots), "a slot was handed out twice"
    assert sorted(slots) == list(range(total))
    # Every shard handed out exactly the units it lost, inside its own slot range.
    ranges = sorted((sh.slot_base, sh.slot_base + sh.size) for sh in shards)
    assert all(a[1] == b[0] for a, b in pairwise(ranges))
    for sh in shards:
        inside = sum(1 for x in slots if sh.slot_base <= x < sh.slot_base + sh.size)
        assert inside == sh.size - sh.remaining
