"""What keeps the monthly bundle run fast, and the answers it must keep while being fast."""

from __future__ import annotations

import gc
from datetime import date

from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.models import Benefit
from perkflow.grants import service as grants
from perkflow.grants.models import Grant
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership import tasks
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from tests.membership.helpers import ZONE, frozen

PER_MEMBER = 6  # November 2026 for silver: cloud storage, coupons; 2026's visits, SIM swap, data


def _silver(sessions: sessionmaker[Session], vault: Vault, n: int) -> None:
    with sessions() as s:
        membership.load_default_program(s, actor=SYSTEM, vault=vault)
        subscribers.register_subscribers(
            s,
            vault=vault,
            rows=[
                {
                    "id": i,
                    "phone": f"1392{i:07d}",
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_fen": 9900,
                    "status": "active",
                    "joined_on": date(2024, 5, 1),
                }
                for i in range(1, n + 1)
            ],
        )
        membership.apply_tier_targets(
            s,
            actor=SYSTEM,
            targets=dict.fromkeys(range(1, n + 1), 1),
            reason="load",
            source="test",
        )
        s.commit()


def test_a_fresh_chunk_reads_no_grant_by_its_key_before_writing_it(
    engine: Engine, sessions: sessionmaker[Session], vault: Vault
) -> None:
    """The unique key decides a replay (ON CONFLICT), so a chunk does not look its keys up first."""
    _silver(sessions, vault, 20)
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(" ".join(str(args[2]).split()))

    with frozen():
        event.listen(engine, "before_cursor_execute", seen)
        try:
            with sessions() as s:
                page = membership.members_page(s, after=0, limit=20)
                count = membership.issue_bundles_for(
                    s, actor=SYSTEM, members=page, month="2026-11", zone=ZONE
                )
                s.commit()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert count.issued == PER_MEMBER * 20
    by_key = [q for q in statements if "FROM grants" in q and "idempotency_key IN" in q]
    assert by_key == [], by_key


def test_keys_used_before_are_answered_by_the_group_as_before(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    """A replay stays a replay when its benefit is delisted since; a key of another is refused."""
    _silver(sessions, vault, 2)
    with frozen():
        with sessions() as s:
            page = membership.members_page(s, after=0, limit=1)
            first = membership.issue_bundles_for(
                s, actor=SYSTEM, members=page, month="2026-11", zone=ZONE
            )
            s.commit()
        assert first.issued == PER_MEMBER
        with sessions() as s:
            issued = s.execute(
                select(Grant.idempotency_key, Grant.id, Grant.benefit_id)
                .where(Grant.subscriber_id == 1)
                .order_by(Grant.id)
            ).all()
            delisted = issued[0].benefit_id
            s.execute(update(Benefit).where(Benefit.id == delisted).values(status="delisted"))
            s.commit()
        with sessions() as s:
            answers = grants.issue_grants(
                s,
                actor=SYSTEM,
                requests=[grants.GrantRequest(1, b, k) for k, _, b in issued],
                source="membership",
                zone=ZONE,
            )
            s.commit()
        assert answers == [grants.GroupIssued(g, True) for _, g, _ in issued]
        with sessions() as s:
            (mismatch,) = grants.issue_grants(
                s,
                actor=SYSTEM,
                requests=[
                    grants.GrantRequest(2, issued[-1].benefit_id, issued[-1].idempotency_key)
                ],
                source="membership",
                zone=ZONE,
            )
            s.commit()
        assert mismatch.grant_id is None and mismatch.replayed is False
        assert mismatch.refusal == "this idempotency key was used for another subscriber or benefit"
        with sessions() as s:
            assert len(s.scalars(select(Grant.id)).all()) == PER_MEMBER


def test_the_run_sizes_garbage_collection_for_bulk_and_restores_it(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    """Older objects frozen out, the youngest generation run rarer; as they were afterwards."""
    _silver(sessions, vault, 20)
    during: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        during.append((gc.get_freeze_count(), gc.get_threshold()[0]))

    frozen_before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    with frozen():
        count = tasks.issue_bundles(
            sessions, month="2026-11", zone=ZONE, chunk=10, progress=progress
        )
    assert count.issued == PER_MEMBER * 20
    assert len(during) == 2
    assert all(n > frozen_before and gen0 > thresholds[0] for n, gen0 in during), during
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen_before, thresholds)
