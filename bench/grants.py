"""Benchmark `issue_grant` on PostgreSQL against the raw statements underneath it.

    .venv/bin/python bench/grants.py                     # 8 and 32 clients, 3 runs, 3,000 grants
    .venv/bin/python bench/grants.py --grants 5000 --clients 8 32 --runs 3

Starts its own PostgreSQL (tests/pg.py: initdb, a free loopback port), migrates a ledger, loads
subscribers, a partner and a direct-recharge benefit with limited stock and per-subscriber limits.
Then for each client count C, in the same run and against the same server:

(a) perkflow: C threads, each with its own session, call `grants.service.issue_grant` (listed
    check, subscriber share lock, idempotency key, month and total limit counters, conditional stock
    UPDATE, grant + event + outbox message + audit entry) and commit, one grant per transaction;
(b) raw, same writes: C threads on plain psycopg connections run the same statements perkflow
    sends for one grant (key lookup, subscriber FOR SHARE, 2 counter INSERT … ON CONFLICT DO NOTHING
    + 2 conditional counter UPDATEs, the conditional stock UPDATE, INSERT grant, event, outbox
    message, audit entry), one transaction per grant;
(c) raw ceiling: only the conditional stock UPDATE + the grant INSERT, one transaction per grant.

Every request is a different idempotency key; subscribers repeat (grants / 4 of them), so counter
rows are both created and bumped. Each measurement issues exactly --grants grants and checks the
ledger afterwards (grant count, stock left). Reported: grants/s, median of --runs runs, and the
ratios raw / perkflow. Only loopback addresses are used; every measurement is bounded in time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-not-for-production-0123456789abcdef"
ZONE = "Asia/Shanghai"


def _setup(url: str, *, subscribers_n: int) -> dict[str, Any]:
    """Migrate, load subscribers and a partner; returns ids for the runs."""
    from perkflow.cli import migrate
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.subscribers import service as subscribers
    from tests.factories import make_partner

    engine = make_engine(url)
    migrate.upgrade(engine)
    vault = Vault(SECRET.encode())
    sids = list(range(5_000_001, 5_000_001 + subscribers_n))
    with make_session_factory(engine)() as s:
        subscribers.register_subscribers(
            s,
            vault=vault,
            rows=[
                {
                    "id": sid,
                    "phone": f"139{sid % 100_000_000:08d}",
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_fen": 9900,
                    "status": "active",
                    "joined_on": date(2024, 1, 1),
                }
                for sid in sids
            ],
        )
        s.commit()
        partner = make_partner(s, code="bench-partner")
        partner_id = partner.id
    engine.dispose()
    return {"sids": sids, "partner_id": partner_id}


def _new_benefit(url: str, *, partner_id: int, stock: int, tag: str) -> int:
    """A fresh listed direct-recharge benefit, so every measurement starts alike."""
    from perkflow.catalog.models import Benefit
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit import clock

    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        now = clock.now()
        benefit = Benefit(
            code=f"bench-{tag}",
            partner_id=partner_id,
            name_zh="基准权益",
            name_en="Bench benefit",
            category="video",
            fulfilment_kind="direct_recharge",
            face_value_fen=2500,
            cost_price_fen=1200,
            sale_price_fen=1500,
            validity_kind="days",
            valid_days=30,
            stock_total=stock,
            stock_remaining=stock,
            low_stock_threshold=0,
            limit_per_month=100,
            limit_total=1000,
            revocable=True,
            status="listed",
            created_at=now,
            updated_at=now,
        )
        s.add(benefit)
        s.commit()
        benefit_id = benefit.id
    engine.dispose()
    return benefit_id


def _hammer(
    clients: int,
    n: int,
    one: Callable[[Any, int], None],
    open_: Callable[[], Any],
    close: Callable[[Any], None],
    max_seconds: float,
) -> float:
    """n calls of `one` spread over `clients` threads; returns the wall time in seconds."""
    counter = itertools.count()  # next() on itertools.count is atomic under the GIL
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []
    deadline = time.monotonic() + max_seconds

    def work() -> None:
        handle = open_()
        try:
            barrier.wait()
            while time.monotonic() < deadline:
                i = next(counter)
                if i >= n:
                    return
                one(handle, i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close(handle)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return elapsed


def perkflow_run(
    url: str,
    *,
    clients: int,
    n: int,
    benefit_id: int,
    sids: list[int],
    tag: str,
    max_seconds: float,
) -> float:
    """Grants per second through `issue_grant`, one transaction per grant."""
    from perkflow.db import make_engine, make_session_factory
    from perkflow.grants import service as grants
    from perkflow.org.rules import SYSTEM

    engine = make_engine(url, pool_size=clients, max_overflow=0)
    sessions = make_session_factory(engine)
    subs = sids[: max(1, n // 4)]

    def one(session: Any, i: int) -> None:
        grants.issue_grant(
            session,
            actor=SYSTEM,
            subscriber_id=subs[i % len(subs)],
            benefit_id=benefit_id,
            source="bench",
            idempotency_key=f"{tag}-{i}",
            zone=ZONE,
        )
        session.commit()

    try:
        elapsed = _hammer(clients, n, one, sessions, lambda s: s.close(), max_seconds)
    finally:
        engine.dispose()
    return n / elapsed


_FULL = [
    ("SELECT id FROM grants WHERE idempotency_key = %(key)s", False),
    ("SELECT id, status FROM subscribers WHERE id = %(sid)s FOR SHARE", False),
    (
        "INSERT INTO grant_counters (subscriber_id, benefit_id, period, count) "
        "VALUES (%(sid)s, %(bid)s, %(period)s, 0) ON CONFLICT DO NOTHING",
        False,
    ),
    (
        "UPDATE grant_counters SET count = count + 1 WHERE subscriber_id = %(sid)s "
        "AND benefit_id = %(bid)s AND period = %(period)s AND count < 100",
        True,
    ),
    (
        "INSERT INTO grant_counters (subscriber_id, benefit_id, period, count) "
        "VALUES (%(sid)s, %(bid)s, 'total', 0) ON CONFLICT DO NOTHING",
        False,
    ),
    (
        "UPDATE grant_counters SET count = count + 1 WHERE subscriber_id = %(sid)s "
        "AND benefit_id = %(bid)s AND period = 'total' AND count < 1000",
        True,
    ),
]
_STOCK = (
    "UPDATE benefits SET stock_remaining = stock_remaining - 1 "
    "WHERE id = %(bid)s AND stock_remaining > 0"
)
_GRANT = (
    "INSERT INTO grants (idempotency_key, subscriber_id, benefit_id, partner_id, source, status, "
    "period, sale_price_fen, cost_price_fen, valid_until, created_at, updated_at) VALUES "
    "(%(key)s, %(sid)s, %(bid)s, %(pid)s, 'bench', 'pending', %(period)s, 1500, 1200, "
    "%(until)s, %(now)s, %(now)s) RETURNING id"
)
_AFTER = [
    "INSERT INTO grant_events (grant_id, from_status, to_status, reason, at) "
    "VALUES (%(gid)s, NULL, 'pending', 'issued via bench', %(now)s)",
    "INSERT INTO grant_outbox (grant_id, kind, status, attempts, next_attempt_at, payload, "
    "created_at, updated_at) VALUES (%(gid)s, 'fulfil', 'pending', 0, %(now)s, "
    "'{\"took_stock\": true}', %(now)s, %(now)s)",
    "INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, action, target_type, target_id, "
    "details, ip) VALUES (%(now)s, 'system', 'system', 'perkflow', 'grant.issue', 'grant', "
    "%(gid)s, '{}', '-')",
]


def raw_run(
    dsn: str,
    *,
    clients: int,
    n: int,
    benefit_id: int,
    partner_id: int,
    sids: list[int],
    tag: str,
    full: bool,
    max_seconds: float,
) -> float:
    """Grants per second from plain psycopg statements, one transaction per grant."""
    from datetime import UTC, datetime

    import psycopg

    subs = sids[: max(1, n // 4)]

    def one(conn: Any, i: int) -> None:
        now = datetime.now(UTC)
        p = {
            "key": f"{tag}-{i}",
            "sid": subs[i % len(subs)],
            "bid": benefit_id,
            "pid": partner_id,
            "period": now.strftime("%Y-%m"),
            "now": now,
            "until": now + timedelta(days=30),
        }
        with conn.transaction():
            if full:
                for sql, must_hit in _FULL:
                    cur = conn.execute(sql, p)
                    if must_hit and cur.rowcount != 1:
                        raise RuntimeError("limit reached")
            if conn.execute(_STOCK, p).rowcount != 1:
                raise RuntimeError("sold out")
            row = conn.execute(_GRANT, p).fetchone()
            if full:
                event, message, audit = _AFTER
                conn.execute(event, {**p, "gid": row[0]})
                conn.execute(message, {**p, "gid": row[0]})
                conn.execute(audit, {**p, "gid": str(row[0])})  # audit target ids are text

    elapsed = _hammer(
        clients,
        n,
        one,
        lambda: psycopg.connect(dsn, prepare_threshold=0),
        lambda c: c.close(),
        max_seconds,
    )
    return n / elapsed


def _check(url: str, *, benefit_id: int, n: int, stock: int) -> None:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        grants = conn.execute(
            "SELECT count(*) FROM grants WHERE benefit_id = %s", (benefit_id,)
        ).fetchone()
        left = conn.execute(
            "SELECT stock_remaining FROM benefits WHERE id = %s", (benefit_id,)
        ).fetchone()
    assert grants is not None and left is not None
    if grants[0] != n or left[0] != stock - n:
        raise RuntimeError(f"ledger check failed: {grants[0]} grants, {left[0]} stock left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grants", type=int, default=3000, help="grants per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per measurement")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not 1 <= args.grants <= 200_000 or max(args.clients) > 100:
        parser.error("--grants must be 1..200000 and --clients at most 100")

    from tests.pg import PgServer

    server = PgServer()
    server.start()
    results: list[dict[str, Any]] = []
    try:
        server.execute("CREATE DATABASE bench")
        url = server.url("bench")
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        setup = _setup(url, subscribers_n=max(1, args.grants // 4))
        stock = args.grants * 2
        for clients in args.clients:
            figures: dict[str, list[float]] = {"perkflow": [], "raw_same": [], "raw_min": []}
            for run in range(args.runs):
                for name in figures:
                    tag = f"{name}-{clients}-{run}"
                    bid = _new_benefit(url, partner_id=setup["partner_id"], stock=stock, tag=tag)
                    common = {
                        "clients": clients,
                        "n": args.grants,
                        "benefit_id": bid,
                        "sids": setup["sids"],
                        "tag": tag,
                        "max_seconds": args.max_seconds,
                    }
                    if name == "perkflow":
                        rate = perkflow_run(url, **common)
                    else:
                        rate = raw_run(
                            dsn, partner_id=setup["partner_id"], full=name == "raw_same", **common
                        )
                    _check(url, benefit_id=bid, n=args.grants, stock=stock)
                    figures[name].append(rate)
                    print(
                        f"  {clients:>2} clients run {run + 1}: {name:<8} {rate:8.0f} grants/s",
                        file=sys.stderr,
                    )
            med = {k: statistics.median(v) for k, v in figures.items()}
            results.append(
                {
                    "clients": clients,
                    "perkflow_per_s": round(med["perkflow"]),
                    "raw_same_per_s": round(med["raw_same"]),
                    "raw_min_per_s": round(med["raw_min"]),
                    "ratio_same": round(med["raw_same"] / med["perkflow"], 2),
                    "ratio_min": round(med["raw_min"] / med["perkflow"], 2),
                }
            )
    finally:
        server.stop()
    if args.json:
        print(json.dumps(results))
        return
    print(f"\ngrants/s on PostgreSQL, median of {args.runs} runs, {args.grants} grants each")
    print(
        "| clients | perkflow issue_grant | raw, same writes | ratio | raw UPDATE+INSERT | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['clients']} | {r['perkflow_per_s']:,} | {r['raw_same_per_s']:,} | "
            f"{r['ratio_same']} | {r['raw_min_per_s']:,} | {r['ratio_min']} |"
        )


if __name__ == "__main__":
    main()
