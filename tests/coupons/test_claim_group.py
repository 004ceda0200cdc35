"""Claims settled in groups answer and store exactly what the same claims settled alone do."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import claim_gate
from perkflow.coupons import service as coupons
from perkflow.coupons.models import ClaimCounter, Coupon, RateBucket, StockShard
from perkflow.coupons.rules import RATE_PER_SUBSCRIBER, BatchStatus
from perkflow.coupons.service import claim_group
from perkflow.coupons.service.claim_group import ClaimRequest
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import PerkflowError
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_subscribers

_phone = itertools.count(100)


@pytest.fixture
def frozen() -> Iterator[clock.FrozenClock]:
    # Mid-window, so no 10 s rate window boundary falls inside a test.
    fake = clock.FrozenClock(datetime(2026, 12, 1, 2, 0, 3, tzinfo=UTC))
    clock.set_clock(fake)
    yield fake
    clock.set_clock(None)


@dataclass
class World:
    """One copy of the scenario's subscribers and batches (two copies share a ledger)."""

    subs: list[int]
    main: int
    other: int
    draft: int
    unknown: int


def _world(session: Session, vault: Vault, unknown: int) -> World:
    def phones(n: int, province: str) -> list[tuple[str, str, str]]:
        return [(f"1370000{next(_phone):04d}", province, f"{province}01") for _ in range(n)]

    subs = make_subscribers(session, vault, phones(6, "GD"))
    subs += make_subscribers(session, vault, phones(1, "GD"), status="churned")
    subs += make_subscribers(session, vault, phones(1, "ZJ"))
    main = make_batch(session, owner_region="GD", stock_total=100, limit_total=3, limit_per_day=2)
    other = make_batch(session, stock_total=100, limit_total=1)
    draft = make_batch(session, activate=False)
    return World(subs, main.id, other.id, draft.id, unknown)


def _scenario(w: World) -> list[ClaimRequest]:
    """Every answer a claim can get, with repeats of subscribers, devices and keys."""
    s = w.subs

    def req(
        batch: int, sub: int, key: str, device: str | None = None, actor: Actor = SYSTEM
    ) -> ClaimRequest:
        return ClaimRequest(
            actor=actor,
            batch_id=batch,
            subscriber_id=sub,
            idempotency_key=key,
            device_id=device,
            zone=ZONE,
        )

    shared = f"dev-shared-{w.main}"
    return [
        req(w.main, s[0], "a", f"dev-0-{w.main}"),  # claimed
        req(w.main, s[0], "a", f"dev-0-{w.main}"),  # the same key again: replayed
        req(w.main, s[0], "b", f"dev-0-{w.main}"),  # claimed
        req(w.main, s[0], "c", f"dev-0-{w.main}"),  # the day's limit (2)
        req(w.other, s[0], "a"),  # the key of another claim: conflict
        req(w.other, s[0], "d"),  # claimed from another batch in the same group
        req(w.main, s[1], "a"),  # claimed
        req(w.main, w.unknown, "a"),  # no such subscriber
        req(w.main, s[6], "a"),  # churned
        req(w.main, s[7], "a"),  # another province
        req(w.draft, s[1], "x"),  # not claimable
        req(w.main, s[3], "a", actor=coupons.subscriber_actor(s[2])),  # not for themself
        req(w.main, s[2], "a", actor=coupons.subscriber_actor(s[2])),  # claimed, as a subscriber
        *(req(w.other, s[3], f"k{n}") for n in range(7)),  # 1 claimed, 3 limit, then 429s
        *(req(w.other, s[4 + n % 2], f"shared-{n}", shared) for n in range(6)),
    ]


def _answer(result: claim_group.ClaimResult) -> str:
    if isinstance(result, PerkflowError):
        return result.code
    return "replayed" if result.replayed else "claimed"


def _state(session: Session, w: World) -> dict[str, Any]:
    """The world's ledger rows with its own ids replaced by their place in the world."""
    place = {sid: n for n, sid in enumerate(w.subs)} | {w.unknown: "unknown"}
    batch = {w.main: "main", w.other: "other", w.draft: "draft"}
    rows = session.scalars(select(Coupon).where(Coupon.batch_id.in_(batch))).all()
    coupons_ = sorted(
        (batch[c.batch_id], place[c.subscriber_id], c.idempotency_key.split(":")[1]) for c in rows
    )
    # Which coupon got which slot follows the order of settling; the slots handed out do not.
    slots = sorted((batch[c.batch_id], c.slot) for c in rows)
    counters = sorted(
        (batch[c.batch_id], place[c.subscriber_id], c.period, c.count)
        for c in session.scalars(select(ClaimCounter).where(ClaimCounter.batch_id.in_(batch)))
    )
    keys = {f"s:{sid}": f"s:{n}" for sid, n in place.items()} | {
        f"d:dev-0-{w.main}": "d:dev-0",
        f"d:dev-shared-{w.main}": "d:dev-shared",
    }
    buckets = sorted(
        (keys[b.key], b.count)
        for b in session.scalars(select(RateBucket).where(RateBucket.key.in_(keys)))
    )
    stock = sorted(
        (batch[s.batch_id], s.shard, s.remaining)
        for s in session.scalars(select(StockShard).where(StockShard.batch_id.in_(batch)))
    )
    return {
        "coupons": coupons_,
        "slots": slots,
        "counters": counters,
        "buckets": buckets,
        "stock": stock,
    }


@pytest.mark.parametrize("chunking", ["one group", "random groups", "groups of one"])
def test_groups_answer_and_store_as_claims_alone_do(
    sessions: sessionmaker[Session], vault: Vault, frozen: clock.FrozenClock, chunking: str
) -> None:
    with sessions() as s:
        alone_w = _world(s, vault, unknown=9_000_001)
        grouped_w = _world(s, vault, unknown=9_000_002)
    alone = [
        _answer(claim_gate.claim_alone(sessions, vault=vault, request=r))
        for r in _scenario(alone_w)
    ]
    requests = _scenario(grouped_w)
    rng = random.Random(5)
    grouped: list[str] = []
    while requests:
        # A group of one is what `claim_coupon` (a lone claim) settles: the same answers and rows.
        size = {"one group": len(requests), "groups of one": 1}.get(chunking) or rng.randint(1, 9)
        group, requests = requests[:size], requests[size:]
        grouped += [_answer(r) for r in claim_gate.settle(sessions, vault=vault, requests=group)]

    assert grouped == alone
    # The scenario reaches every answer it was written for (so the comparison means something).
    assert Counter(alone) == {
        "claimed": 7,
        "replayed": 1,
        "limit_reached": 8,
        "conflict": 2,
        "not_found": 1,
        "forbidden": 2,
        "not_claimable": 1,
        "too_many_requests": 4,
    }
    with sessions() as s:
        assert _state(s, grouped_w) == _state(s, alone_w)


def test_a_group_answers_each_claim_when_the_batch_is_paused_between_groups(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        ids = make_subscribers(s, vault, [(f"1360000{n:04d}", "GD", "GD01") for n in range(4)])
        batch = make_batch(s, stock_total=10)
    reqs = [
        ClaimRequest(
            actor=SYSTEM, batch_id=batch.id, subscriber_id=i, idempotency_key="k", device_id=None,
            zone=ZONE,
        )
        for i in ids
    ]  # fmt: skip
    assert [_answer(r) for r in claim_gate.settle(sessions, vault=vault, requests=reqs[:2])] == [
        "claimed",
        "claimed",
    ]
    with sessions() as s:
        coupons.set_batch_status(s, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.PAUSED)
        s.commit()
    # The terms are cached per process; the stock statement still sees the pause.
    results = claim_gate.settle(sessions, vault=vault, requests=reqs[2:])
    assert [_answer(r) for r in results] == ["not_claimable", "not_claimable"]
    with sessions() as s:
        assert len(s.scalars(select(Coupon).where(Coupon.batch_id == batch.id)).all()) == 2


# ---- on PostgreSQL, under real concurrency ---------------------------------------------------

PG = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
THREADS = 16


@pytest.fixture
def wide(ledger_url: str) -> Iterator[sessionmaker[Session]]:
    eng: Engine = make_engine(ledger_url, pool_size=THREADS, max_overflow=8)
    yield make_session_factory(eng)
    eng.dispose()


@pytest.mark.postgres
@PG
def test_1000_claims_in_concurrent_groups_over_stock_300(
    wide: sessionmaker[Session], vault: Vault
) -> None:
    with wide() as s:
        ids = make_subscribers(s, vault, [(f"1350000{n:04d}", "GD", "GD01") for n in range(500)])
        batch = make_batch(s, stock_total=300, flash_sale=True, shard_count=4)
    # Every subscriber twice with different keys, shuffled, cut into groups of 1..40 that 16
    # threads settle at once: groups race for the same shards, counters and subscribers.
    attempts = [(sid, f"k{n}-{sid}") for sid in ids for n in range(2)]
    random.Random(11).shuffle(attempts)
    groups, rng = [], random.Random(12)
    while attempts:
        size = rng.randint(1, 40)
        groups.append(attempts[:size])
        attempts = attempts[size:]
    barrier = threading.Barrier(THREADS)
    answers: Counter[str] = Counter()
    answers_ids: list[int] = []
    lock = threading.Lock()

    def run(mine: list[list[tuple[int, str]]]) -> None:
        barrier.wait()
        for group in mine:
            reqs = [
                ClaimRequest(
                    actor=SYSTEM, batch_id=batch.id, subscriber_id=sid, idempotency_key=key,
                    device_id=None, zone=ZONE,
                )
                for sid, key in group
            ]  # fmt: skip
            got = claim_gate.settle(wide, vault=vault, requests=reqs)
            with lock:
                answers.update(_answer(r) for r in got)
                answers_ids.extend(r.coupon.id for r in got if not isinstance(r, PerkflowError))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, [groups[i::THREADS] for i in range(THREADS)]))
    with wide() as s:
        claimed = s.scalars(select(Coupon.subscriber_id).where(Coupon.batch_id == batch.id)).all()
        slots = s.scalars(select(Coupon.slot).where(Coupon.batch_id == batch.id)).all()
        stock = coupons.stock_of(s, actor=SYSTEM, batch_id=batch.id)
        audits = s.scalars(select(AuditEntry).where(AuditEntry.action == "coupon.claim")).all()
    # Every claim is in the audit log, with its coupon, subscriber and time.
    assert sorted(int(a.target_id) for a in audits) == sorted(answers_ids)
    assert {a.details["subscriber"] for a in audits} == set(claimed)
    assert all(a.at.tzinfo is not None and a.actor_kind == "system" for a in audits)
    assert len(claimed) == 300 == answers["claimed"]
    assert len(set(claimed)) == 300, "a subscriber got two coupons"
    assert sorted(slots) == list(range(300))
    assert stock.remaining == 0
    assert answers["sold_out"] + answers["limit_reached"] == 700


@pytest.mark.postgres
@PG
def test_one_key_in_many_concurrent_groups_claims_once(
    wide: sessionmaker[Session], vault: Vault
) -> None:
    with wide() as s:
        [sid] = make_subscribers(s, vault, [("13400000001", "GD", "GD01")])
        others = make_subscribers(s, vault, [(f"1340001{n:04d}", "GD", "GD01") for n in range(48)])
        batch = make_batch(s, stock_total=100, limit_total=5, flash_sale=True)
    barrier = threading.Barrier(THREADS)
    got: list[claim_group.ClaimResult] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        # Three other subscribers' own claims, and in five groups (the subscriber's rate limit
        # per window) the shared key too.
        shared = [(sid, "same-key")] if n < RATE_PER_SUBSCRIBER else []
        reqs = [
            ClaimRequest(
                actor=SYSTEM, batch_id=batch.id, subscriber_id=sub, idempotency_key=key,
                device_id=None, zone=ZONE,
            )
            for sub, key in shared + [(o, "own") for o in others[3 * n : 3 * n + 3]]
        ]  # fmt: skip
        barrier.wait()
        results = claim_gate.settle(wide, vault=vault, requests=reqs)
        with lock:
            got.extend(results)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(THREADS)))
    outcomes = [r for r in got if not isinstance(r, PerkflowError)]
    assert len(outcomes) == len(got) == RATE_PER_SUBSCRIBER + 48, [
        r for r in got if isinstance(r, Exception)
    ]
    shared = [r for r in outcomes if r.coupon.subscriber_id == sid]
    assert len({r.coupon.id for r in shared}) == 1
    assert sum(not r.replayed for r in shared) == 1
    with wide() as s:
        mine = s.scalars(select(Coupon).where(Coupon.subscriber_id == sid)).all()
        assert len(mine) == 1
        assert len(s.scalars(select(Coupon).where(Coupon.batch_id == batch.id)).all()) == 49
