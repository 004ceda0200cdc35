"""Red envelopes under concurrency: 100,000 lottery draws from racing players."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.envelopes import service as envelopes
from perkflow.envelopes.models import EnvelopeDraw, EnvelopeProgram
from perkflow.envelopes.rules import DrawOutcome
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.envelopes.factories import make_lottery
from tests.factories import make_subscribers

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
def test_100000_lottery_draws_match_probabilities_and_respect_the_budget(
    wide: sessionmaker[Session], vault: Vault
) -> None:
    tiers = [(1, 8800, 1_000), (2, 888, 50_000), (3, 188, 200_000)]
    # Expected spend ≈ 90.4 fen a draw ≈ 9.04M over 100k draws: the cap bites near the end.
    budget = 8_000_000
    with wide() as s:
        ids = make_subscribers(s, vault, _phones(8, 980))
        program = make_lottery(s, budget_fen=budget, tiers=tiers)
    per_call, calls_each = 500, 25

    def player(sid: int) -> None:
        for _ in range(calls_each):
            with wide() as s:
                envelopes.draw_lottery(
                    s,
                    actor=SYSTEM,
                    vault=vault,
                    program_id=program.id,
                    subscriber_id=sid,
                    count=per_call,
                )
                s.commit()

    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(player, ids))
    n = len(ids) * calls_each * per_call
    assert n == 100_000
    with wide() as s:
        drawn = Counter(s.scalars(select(EnvelopeDraw.tier)).all())
        paid = s.scalar(select(func.sum(EnvelopeDraw.prize_fen))) or 0
        outcomes = Counter(s.scalars(select(EnvelopeDraw.outcome)).all())
        numbers = s.scalars(select(EnvelopeDraw.draw_no)).all()
        final = s.get(EnvelopeProgram, program.id)
        sample = s.scalars(select(EnvelopeDraw).limit(200)).all()
    assert final is not None and final.spent_fen == paid <= budget
    assert sorted(numbers) == list(range(1, n + 1))
    assert outcomes[DrawOutcome.BUDGET_EXHAUSTED.value] > 0
    # The drawn tier (before the budget is applied) follows the configured probabilities:
    # each count within 5 standard deviations of its binomial expectation.
    for tier, _prize, ppm in tiers:
        p = ppm / 1_000_000
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        assert abs(drawn[tier] - mean) < 5 * sd, (tier, drawn[tier], mean)
    with wide() as s:
        for d in sample:
            _, u, tier_again = envelopes.verify_draw(s, program_id=program.id, draw_no=d.draw_no)
            assert (u, tier_again) == (d.u, d.tier)
