"""The set-based bundle run writes exactly what granting member by member (`issue_grant`) did."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.rules import FulfilmentKind
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Conflict
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.membership import repository as repo
from perkflow.membership import rules, tasks
from perkflow.membership import service as membership
from perkflow.membership.rules import Cadence, Mode
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from tests.factories import make_benefit, make_partner
from tests.membership.helpers import ZONE, frozen
from tests.pg import PgServer

FEES = [9900] * 7 + [16900] * 3  # seven silver, three gold
SUSPENDED = 4


def _one_by_one(
    session: Session,
    *,
    members: Sequence[tuple[int, int]],
    month: str,
    items: Mapping[int, Sequence[membership.ItemRow]],
) -> membership.IssueCount:
    """The reference: the bundle use case as it was, one `issue_grant` per benefit and unit."""
    statuses = subscribers.subscriber_statuses(session, subscriber_ids=[s for s, _ in members])
    count = membership.IssueCount()
    for sid, tier_id in members:
        if statuses.get(sid) != Status.ACTIVE:
            count.skipped += 1
            continue
        count.members += 1
        for item in items.get(tier_id, []):
            if item.mode != Mode.AUTO.value:
                continue
            cycle = rules.cycle_for_month(month, Cadence(item.cadence))
            for unit in range(1, item.quantity + 1):
                try:
                    issued = grants.issue_grant(
                        session,
                        actor=SYSTEM,
                        subscriber_id=sid,
                        benefit_id=item.benefit_id,
                        source="membership",
                        idempotency_key=f"tier:{sid}:{item.benefit_id}:{cycle}:{unit}",
                        zone=ZONE,
                    )
                except Conflict as exc:
                    count.refused += 1
                    count.refusals[exc.message] = count.refusals.get(exc.message, 0) + 1
                    continue
                fresh = repo.add_bundle_grant(
                    session,
                    {
                        "subscriber_id": sid,
                        "tier_id": tier_id,
                        "bundle_item_id": item.id,
                        "cycle": cycle,
                        "slot": f"item:{item.id}:{unit}",
                        "grant_id": issued.grant.id,
                        "value_fen": item.value_fen,
                        "status": "granted",
                        "at": clock.now(),
                    },
                )
                if fresh and not issued.replayed:
                    count.issued += 1
                else:
                    count.replayed += 1
    return count


_names = itertools.count()


def _fresh(request: pytest.FixtureRequest, backend: str, tmp_path: Path, name: str) -> str:
    if backend == "sqlite":
        target = tmp_path / f"{name}.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    server: PgServer = request.getfixturevalue("pg_server")
    db = f"eq{next(_names)}_{name}"
    server.execute(f"CREATE DATABASE {db} TEMPLATE perkflow_template STRATEGY FILE_COPY")
    return server.url(db)


def _ledger(url: str, vault: Vault) -> sessionmaker[Session]:
    """A migrated ledger with the default programme plus partner, stocked and limited items."""
    sessions = make_session_factory(make_engine(url))
    with sessions() as s, frozen():
        membership.load_default_program(s, actor=SYSTEM, vault=vault)
        partner = make_partner(s, code="bench-partner")
        make_benefit(s, partner=partner, code="partner-vip")  # direct recharge: the outbox
        make_benefit(s, partner=partner, code="gift-box", kind=FulfilmentKind.SERVICE, stock=5)
        make_benefit(
            s, partner=partner, code="data-top-up", kind=FulfilmentKind.COUPON, limit_per_month=1
        )
        doc = membership.default_program_document()
        doc["tiers"][0]["bundle"] += [
            {"benefit": "partner-vip", "cadence": "monthly", "quantity": 1, "value_yuan": 15},
            {"benefit": "gift-box", "cadence": "monthly", "quantity": 1, "value_yuan": 10},
            {"benefit": "data-top-up", "cadence": "monthly", "quantity": 2, "value_yuan": 5},
        ]
        membership.define_program(s, actor=SYSTEM, raw=doc)
        subscribers.register_subscribers(
            s,
            vault=vault,
            rows=[
                {
                    "id": i,
                    "phone": f"1390000{i:04d}",
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_fen": fee,
                    "status": "active",
                    "joined_on": date(2024, 5, 1),
                }
                for i, fee in enumerate(FEES, start=1)
            ],
        )
        membership.apply_tier_targets(
            s,
            actor=SYSTEM,
            targets={i: 1 if fee < 16900 else 2 for i, fee in enumerate(FEES, start=1)},
            reason="load",
            source="test",
        )
        membership.change_status(
            s,
            actor=SYSTEM,
            subscriber_id=SUSPENDED,
            status=Status.SUSPENDED,
            reason="unpaid",
            zone=ZONE,
        )
        s.commit()
    return sessions


def _order(value: str | None, gid: int) -> str | None:
    if value is None:
        return None
    if value.startswith("CP-"):
        return "CP-<random>"
    assert value == f"WO-{gid:08d}", value  # a work order is numbered after its grant
    return "WO-<grant id>"


def _rows(rows: Any) -> list[Any]:
    return sorted(rows, key=repr)  # NULLs sort too


def _snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Every row the run writes, keyed by what identifies it (grant keys, not ids)."""
    with sessions() as s:
        q = lambda sql: [tuple(r) for r in s.execute(text(sql))]  # noqa: E731
        keys = dict(q("SELECT id, idempotency_key FROM grants"))
        grants_ = _rows(
            (k, sub, b, p, src, st, paused, per, sale, cost, code, _order(order, gid), vu, ful)
            for gid, k, sub, b, p, src, st, paused, per, sale, cost, code, order, vu, ful in q(
                "SELECT id, idempotency_key, subscriber_id, benefit_id, partner_id, source, status,"
                " paused_from, period, sale_price_fen, cost_price_fen, card_code_id,"
                " partner_order_id, valid_until, fulfilled_at FROM grants"
            )
        )
        events = _rows(
            (keys[g], f, t, re.sub(r"WO-\d+", "WO-<grant id>", r), at)
            for g, f, t, r, at in q(
                "SELECT grant_id, from_status, to_status, reason, at FROM grant_events"
            )
        )
        outbox = _rows(
            (keys[g], *rest)
            for g, *rest in q(
                "SELECT grant_id, kind, status, attempts, next_attempt_at, payload"
                " FROM grant_outbox"
            )
        )
        bundle = _rows(
            (sub, tier, item, cyc, slot, keys[g], v, st, at)
            for sub, tier, item, cyc, slot, g, v, st, at in q(
                "SELECT subscriber_id, tier_id, bundle_item_id, cycle, slot, grant_id, value_fen,"
                " status, at FROM member_bundle_grants"
            )
        )
        return {
            "grants": grants_,
            "events": events,
            "counters": _rows(q("SELECT * FROM grant_counters")),
            "outbox": outbox,
            "bundle": bundle,
            "stock": _rows(q("SELECT code, stock_remaining FROM benefits")),
        }


def _reference_run(sessions: sessionmaker[Session], month: str) -> membership.IssueCount:
    with sessions() as s:
        items = membership.bundle_items(s)
        members = membership.members_page(s, after=0, limit=1000)
        count = _one_by_one(s, members=members, month=month, items=items)
        s.commit()
    return count


@pytest.mark.parametrize(
    ("backend", "chunk"),
    [
        ("sqlite", 3),
        ("sqlite", 1),
        pytest.param("postgresql", 3, marks=pytest.mark.postgres),
    ],
    ids=["sqlite-groups-of-3", "sqlite-groups-of-one", "postgresql-groups-of-3"],
)
def test_the_set_based_run_writes_what_the_one_by_one_use_case_wrote(
    request: pytest.FixtureRequest, tmp_path: Path, vault: Vault, backend: str, chunk: int
) -> None:
    old = _ledger(_fresh(request, backend, tmp_path, "old"), vault)
    new = _ledger(_fresh(request, backend, tmp_path, "new"), vault)
    counts: dict[str, list[membership.IssueCount]] = {"old": [], "new": []}
    with frozen() as now:
        # November twice (the second run replays), then December: a new monthly cycle.
        for month in ("2026-11", "2026-11", "2026-12"):
            if month == "2026-12":
                now.current = now.current.replace(month=12)
            counts["old"].append(_reference_run(old, month))
            counts["new"].append(tasks.issue_bundles(new, month=month, zone=ZONE, chunk=chunk))
    for before, after in zip(counts["old"], counts["new"], strict=True):
        assert after == before
    first = counts["new"][0]
    # Five gift boxes for six active silver members; the second data top-up exceeds its limit.
    assert first.refusals == {"sold out": 1, "limit reached: 1 per month for this benefit": 6}
    assert (first.skipped, counts["new"][1].issued) == (1, 0)
    got, want = _snapshot(new), _snapshot(old)
    for table in want:
        assert got[table] == want[table], table
    assert len(got["outbox"]) == 2 * 6  # partner grants queued for delivery, two months
