"""Batch tier evaluation on the synthetic operator matches a direct computation of the rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.membership import rules, tasks
from perkflow.membership import service as membership
from perkflow.membership.models import Member, MemberTier
from perkflow.org.rules import SYSTEM
from perkflow.synth.service import generate_operator
from tests.membership.helpers import ZONE, default_program, frozen

N = 3_000


@pytest.fixture
def operator(sqlite_url: str, tmp_path: Path, vault: Vault) -> Iterator[tuple[Engine, Mart]]:
    engine = make_engine(sqlite_url)
    mart = Mart(tmp_path / "mart")
    with make_session_factory(engine)() as s:
        generate_operator(s, mart=mart, truth_dir=tmp_path / "truth", vault=vault, n=N, seed=11)
        s.commit()
    yield engine, mart
    engine.dispose()


def _direct(mart: Mart, prepaid: dict[int, float]) -> dict[int, int]:
    """The default programme's rules written out by hand over the profile, with numpy."""
    t = mart.table("subscriber_profile").to_pyarrow()
    sid = t["subscriber_id"].to_numpy()
    fee = t["plan_fee_yuan"].to_numpy()
    tenure = t["tenure_months"].to_numpy()
    churned = pc.equal(t["status"].cast("string"), "churned").to_numpy(zero_copy_only=False)
    pre = np.array([prepaid.get(int(s), 0.0) for s in sid])
    silver = (fee >= 99) | (pre >= 1000)
    gold = (fee >= 169) | ((fee >= 99) & (pre >= 2000))
    diamond = (fee >= 299) | ((fee >= 169) & (pre >= 5000)) | ((fee >= 199) & (tenure >= 60))
    level = np.where(diamond, 3, np.where(gold, 2, np.where(silver, 1, 0)))
    level = np.where(churned, 0, level)
    return dict(zip(sid.tolist(), level.tolist(), strict=True))


def test_batch_evaluation_matches_the_rules_and_applies_to_the_ledger(
    operator: tuple[Engine, Mart], vault: Vault
) -> None:
    engine, mart = operator
    sessions: sessionmaker[Session] = make_session_factory(engine)
    with sessions() as s:
        default_program(s, vault)
        ids = sorted(mart.table("subscriber_profile").subscriber_id.to_pyarrow().to_pylist())
        # Prepayments put some low-plan subscribers over the prepaid thresholds.
        prepaid = {}
        for i, sid in enumerate(ids[:600:7]):
            amount = [100_000, 200_000, 500_000][i % 3]
            membership.record_prepayment(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                amount_fen=amount,
                idempotency_key=f"p{sid}",
                zone=ZONE,
            )
            prepaid[sid] = amount / 100
        s.commit()
    expected = _direct(mart, prepaid)
    assert sum(1 for v in expected.values() if v == 3) > 10  # every tier is populated

    with sessions() as s:
        loaded = membership.load(s)
        membership.export_prepaid(s, mart=mart)
        program = rules.Program(tuple(loaded.specs), loaded.points, loaded.grace_days)
        levels = membership.evaluate_levels(mart, program)
    got = dict(
        zip(levels["subscriber_id"].to_pylist(), levels["tier_level"].to_pylist(), strict=True)
    )
    assert got == expected

    # The pure rules, row by row, agree as well (what events use).
    rows = membership.tier_source(mart).to_pyarrow().to_pylist()
    for row in rows[:500]:
        by_rules = rules.level_for(loaded.specs, row, churned=row["status"] == "churned")
        assert by_rules == expected[row["subscriber_id"]]

    with frozen():
        run, changed = tasks.run_evaluation(sessions, mart=mart, chunk=700)
    assert run.evaluated == N
    # Prepayments already moved their subscribers (events); the batch moves the rest.
    assert 0 < changed <= sum(1 for v in expected.values() if v > 0)
    with sessions() as s:
        tiers = {t.id: t.level for t in s.scalars(select(MemberTier))}
        in_ledger = {
            m.subscriber_id: tiers[m.tier_id] if m.tier_id else 0 for m in s.scalars(select(Member))
        }
    assert {k: v for k, v in in_ledger.items() if v} == {k: v for k, v in expected.items() if v}
    # A second run finds nothing to change.
    with frozen():
        _, again = tasks.run_evaluation(sessions, mart=mart)
    assert again == 0
    with sessions() as s:
        dist = membership.tier_distribution(s, actor=SYSTEM)
    assert [n for *_, n in dist] == [
        sum(1 for v in expected.values() if v == lvl) for lvl in (1, 2, 3)
    ]


def test_a_stricter_rule_schedules_downgrades_instead_of_applying_them(
    operator: tuple[Engine, Mart], vault: Vault
) -> None:
    engine, mart = operator
    sessions: sessionmaker[Session] = make_session_factory(engine)
    with sessions() as s:
        default_program(s, vault)
    with frozen() as now:
        tasks.run_evaluation(sessions, mart=mart)
        with sessions() as s:
            raw = membership.default_program_document()
            raw["tiers"][0]["qualify"] = [{"plan_fee_yuan": {"gte": 129}}]
            _, rows, _ = membership.preview_program(s, actor=SYSTEM, mart=mart, raw=raw)
            silver_after = rows[0].subscribers
            before = membership.tier_distribution(s, actor=SYSTEM)[0][3]
            membership.define_program(s, actor=SYSTEM, raw=raw, mart=mart)
            s.commit()
        run, _ = tasks.run_evaluation(sessions, mart=mart)
        assert run.scheduled > 0 and run.downgraded == 0
        with sessions() as s:
            assert membership.tier_distribution(s, actor=SYSTEM)[0][3] == before
        now.advance(days=31)
        assert tasks.run_downgrades(sessions) == run.scheduled
        with sessions() as s:
            assert membership.tier_distribution(s, actor=SYSTEM)[0][3] == silver_after
            moves = membership.tier_migration(s, actor=SYSTEM, zone=ZONE, month="2026-12")
        assert moves.down == run.scheduled
