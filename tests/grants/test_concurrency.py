"""On PostgreSQL, real concurrent sessions: no oversell, one code per grant, one grant per key."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.models import CardCode
from perkflow.catalog.rules import FulfilmentKind
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Conflict
from perkflow.grants import service as grants
from perkflow.grants.models import Grant
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.factories import make_benefit, make_partner, make_subscribers
from tests.grants.helpers import ZONE, add_card_codes, phones, stock_of

pytestmark = pytest.mark.postgres


def _hammer(
    n: int, sessions: sessionmaker[Session], call: Callable[[Session, int], str]
) -> Counter[str]:
    """Run `call` from n threads at once, each with its own session; count the outcomes."""
    barrier = threading.Barrier(n, timeout=60)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        barrier.wait()
        with sessions() as s:
            try:
                what = call(s, i)
                s.commit()
            except Conflict as exc:
                s.rollback()
                what = f"409 {exc.message}"
        with lock:
            outcomes[what] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a grant request hung"
    return outcomes


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_200_requests_against_stock_100_give_100_grants_and_100_distinct_codes(
    ledger_url: str, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        sids = make_subscribers(s, vault, phones(50))
        benefit = make_benefit(s, partner=make_partner(s), kind=FulfilmentKind.CARD_CODE)
        add_card_codes(s, vault, benefit=benefit, n=100)
        benefit_id = benefit.id
    engine = make_engine(ledger_url, pool_size=64, max_overflow=0, pool_timeout=60)
    try:
        wide = make_session_factory(engine)

        def claim(s: Session, i: int) -> str:
            issued = grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sids[i % len(sids)],  # four requests per subscriber, too
                benefit_id=benefit_id,
                source="flash-sale",
                idempotency_key=f"flash-{i}",
                zone=ZONE,
            )
            return issued.grant.status

        outcomes = _hammer(200, wide, claim)
    finally:
        engine.dispose()
    assert outcomes["fulfilled"] == 100
    assert sum(n for what, n in outcomes.items() if what.startswith("409")) == 100
    with sessions() as s:
        codes = s.scalars(select(Grant.card_code_id)).all()
        assert len(codes) == 100 and len(set(codes)) == 100 and None not in codes
        allocated = s.scalar(
            select(func.count()).select_from(CardCode).where(CardCode.status == "allocated")
        )
        assert allocated == 100
        assert stock_of(s, benefit_id) == 0


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_the_same_key_50_times_at_once_gives_one_grant(
    ledger_url: str, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        [sid] = make_subscribers(s, vault, phones(1))
        partner = make_partner(s)
        benefit = make_benefit(s, partner=partner, stock=10, limit_per_month=1)
        benefit_id = benefit.id
    engine = make_engine(ledger_url, pool_size=50, max_overflow=0, pool_timeout=60)
    ids: list[int] = []
    try:
        wide = make_session_factory(engine)

        def claim(s: Session, i: int) -> str:
            issued = grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit_id,
                source="api",
                idempotency_key="one-key",
                zone=ZONE,
            )
            ids.append(issued.grant.id)
            return "replayed" if issued.replayed else "created"

        outcomes = _hammer(50, wide, claim)
    finally:
        engine.dispose()
    # A limit of 1 per month would refuse a second grant: the key answers first, with the grant.
    assert outcomes == Counter({"created": 1, "replayed": 49})
    assert len(set(ids)) == 1
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Grant)) == 1
        assert stock_of(s, benefit_id) == 9
