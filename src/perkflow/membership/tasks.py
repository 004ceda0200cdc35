"""Membership jobs (entry points: one unit of work per chunk, so a stopped job resumes cleanly)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from perkflow import bulk
from perkflow.db import Pacer, unit_of_work
from perkflow.errors import Conflict
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.membership import rules
from perkflow.membership import service as membership
from perkflow.org.rules import SYSTEM, Actor

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")

Progress = Callable[[int, int], None]
USAGE_TABLE = "usage_monthly"


def run_evaluation(
    sessions: sessionmaker[Session],
    *,
    mart: Mart,
    actor: Actor = SYSTEM,
    chunk: int = 5_000,
    progress: Progress | None = None,
) -> tuple[membership.TierRun, int]:
    """Evaluate every subscriber over the mart (set-based) and apply the changes chunk by chunk."""
    with unit_of_work(sessions) as session:
        targets, total = membership.plan_evaluation(session, actor=actor, mart=mart)
        loaded = membership.load(session)
        session.commit()  # nothing was written; keeps `loaded` usable in the next units of work
    run = membership.TierRun()
    done = 0
    for part in Pacer(sessions, most=chunk).chunks(targets):
        with unit_of_work(sessions) as session:
            run.add(membership.apply_batch(session, actor=actor, targets=part, loaded=loaded))
            session.commit()
        done += len(part)
        if progress is not None:
            progress(done, len(targets))
    run.evaluated = total
    return run, len(targets)


def run_downgrades(sessions: sessionmaker[Session], *, actor: Actor = SYSTEM) -> int:
    """Apply every downgrade whose grace period has ended."""
    applied = 0
    pacer = Pacer(sessions, most=1000)
    while True:
        with pacer.turn(), unit_of_work(sessions) as session:
            n = membership.apply_due_downgrades(session, actor=actor, limit=pacer.size)
            session.commit()
        applied += n
        if n == 0:
            return applied


def issue_bundles(
    sessions: sessionmaker[Session],
    *,
    month: str,
    zone: str,
    actor: Actor = SYSTEM,
    chunk: int = 250,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> membership.IssueCount:
    """Grant every member's automatic bundle for a month; safe to run twice or in two workers.

    Each chunk of members is one short transaction (set-based: a statement per table). `stop` is
    looked at between chunks: a stopped run has committed whole chunks only (`count.stopped`), and
    running it again continues, the slots and idempotency keys making sure nothing is given twice.
    """
    membership.check_month(month)
    with unit_of_work(sessions) as session:
        total = membership.count_members(session)
        items = membership.bundle_items(session)
    count = membership.IssueCount()
    after = 0
    seen = 0
    with bulk.few_collections():
        while True:
            if stop is not None and stop.is_set():
                count.stopped = True
                break
            with unit_of_work(sessions) as session:
                page = membership.members_page(session, after=after, limit=chunk)
                if not page:
                    break
                count.add(
                    membership.issue_bundles_for(
                        session, actor=actor, members=page, month=month, zone=zone, items=items
                    )
                )
                session.commit()
            after = page[-1][0]
            seen += len(page)
            if progress is not None:
                progress(min(seen, total), total)
    return count


def _month_bills(mart: Mart, members: pa.Table, month: str) -> pa.Table:
    parsed = rules.parse_month(month)
    assert parsed is not None
    usage = mart.table(USAGE_TABLE)
    first = date(parsed[0], parsed[1], 1)
    bills = usage.filter((usage.month == first) & (usage.bill_yuan > 0))
    joined = bills.inner_join(ibis.memtable(members), "subscriber_id")
    # Fen from yuan rounded half up in SQL: no float ever becomes money in Python.
    return (
        joined.select(
            "subscriber_id", bill_fen=(joined.bill_yuan.cast("float64") * 100).round().cast("int64")
        )
        .order_by("subscriber_id")
        .to_pyarrow()
    )


def earn_for_month(
    sessions: sessionmaker[Session],
    *,
    mart: Mart,
    month: str,
    zone: str,
    actor: Actor = SYSTEM,
    chunk: int = 1_000,
    progress: Progress | None = None,
) -> tuple[int, int]:
    """Points for every member's bill of a month in the mart (`usage_monthly`); (bills, points).

    The bill reference is the month (keys are per subscriber), so a rerun earns nothing twice.
    """
    membership.check_month(month)
    ids: list[int] = []
    with unit_of_work(sessions) as session:
        after = 0
        while page := membership.members_page(session, after=after, limit=50_000):
            ids += [s for s, _ in page]
            after = page[-1][0]
        loaded = membership.load(session)
        session.commit()  # keeps `loaded` usable after this unit of work (nothing was written)
    members = pa.table({"subscriber_id": pa.array(ids, type=pa.int64())})
    bills = _month_bills(mart, members, month)
    pairs = list(
        zip(bills["subscriber_id"].to_pylist(), bills["bill_fen"].to_pylist(), strict=True)
    )
    parsed = rules.parse_month(month)
    assert parsed is not None
    # Points count from the last moment of the billed month, operator-local.
    y, m = parsed
    earned_at = datetime.combine(
        date(y + (m == 12), m % 12 + 1, 1), time.min, tzinfo=ZoneInfo(zone)
    ) - timedelta(seconds=1)
    points = 0
    done = 0
    for part in Pacer(sessions, most=chunk).chunks(pairs):
        with unit_of_work(sessions) as session:
            for sid, fen in part:
                try:
                    posted = membership.earn_for_bill(
                        session,
                        actor=actor,
                        subscriber_id=sid,
                        bill_ref=month,
                        bill_fen=fen,
                        zone=zone,
                        earned_at=earned_at,
                        loaded=loaded,
                    )
                except Conflict:
                    continue  # churned since the bill: no points
                if posted.entry is not None and not posted.replayed:
                    points += posted.entry.points
            session.commit()
        done += len(part)
        if progress is not None:
            progress(done, len(pairs))
    return len(pairs), points


def expire_all(sessions: sessionmaker[Session], *, actor: Actor = SYSTEM) -> tuple[int, int]:
    """Expire every due lot; (members, points)."""
    members = points = 0
    pacer = Pacer(sessions, most=500)
    while True:
        with pacer.turn(), unit_of_work(sessions) as session:
            m, p = membership.expire_points(session, actor=actor, limit=pacer.size)
            session.commit()
        members += m
        points += p
        if m == 0:
            return members, points
