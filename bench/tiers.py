"""Benchmark tier evaluation over the mart and the monthly bundle issue on PostgreSQL.

    .venv/bin/python bench/tiers.py                                   # 1M and 10M, 1,000 members
    .venv/bin/python bench/tiers.py --subscribers 1000000 --runs 3 --members 2000 --workers 1 2
    .venv/bin/python bench/tiers.py --skip-bundles                    # evaluation only

(1) Tier evaluation, N subscribers. A profile with the synthetic operator's plan-fee mix, tenure
    and status (and prepaid balances for 5 %) is written as Parquet into a scratch mart. Then, in
    the same process and on the same files:
    (a) perkflow: `membership.service.evaluate_levels` — the default programme (silver / gold /
        diamond, any-of paths over plan fee, prepaid and tenure) compiled by `membership.compiler`
        to one Ibis expression, run on DuckDB, every (subscriber, level) returned as Arrow;
    (b) raw: the same rule written by hand as one DuckDB SQL statement (`CASE … END` over
        `read_parquet`, LEFT JOIN prepaid), fetched as Arrow;
    and the tier distribution (what the editor's preview shows) both ways. The two results are
    checked to agree. Median of --runs runs; ratio = perkflow / raw.
(2) Monthly bundle issue on PostgreSQL (its own server, tests/pg.py): M silver members, each with
    six automatic bundle grants in the first cycle of a year (two home visits, SIM swap, data pack,
    cloud storage, coupon pack). `membership.tasks.issue_bundles` by W workers at once (each its own
    sessions), checked afterwards: exactly 6·M grants and bundle rows. Beside it, raw: plain psycopg
    inserting the same number of grant rows and bundle rows, one transaction per member.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-not-for-production-0123456789abcdef"
ZONE = "Asia/Shanghai"

RAW_SQL = """
SELECT p.subscriber_id,
  CASE
    WHEN CAST(p.status AS VARCHAR) = 'churned' THEN 0
    WHEN p.plan_fee_yuan >= 299
      OR (p.plan_fee_yuan >= 169 AND coalesce(pp.prepaid_yuan, 0) >= 5000)
      OR (p.plan_fee_yuan >= 199 AND p.tenure_months >= 60) THEN 3
    WHEN p.plan_fee_yuan >= 169
      OR (p.plan_fee_yuan >= 99 AND coalesce(pp.prepaid_yuan, 0) >= 2000) THEN 2
    WHEN p.plan_fee_yuan >= 99 OR coalesce(pp.prepaid_yuan, 0) >= 1000 THEN 1
    ELSE 0
  END AS tier_level
FROM read_parquet('{profile}') p
LEFT JOIN read_parquet('{prepaid}') pp ON pp.subscriber_id = p.subscriber_id
"""


def write_profile(root: Path, n: int, seed: int = 7) -> None:
    """A compact subscriber profile and prepaid table with the synthetic operator's plan mix."""
    from perkflow.mart import Mart
    from perkflow.synth import rules as synth

    rng = np.random.default_rng(seed)
    mart = Mart(root)
    fees = np.array(synth.PLAN_FEES_YUAN, dtype=np.int32)
    plan = rng.choice(len(fees), size=n, p=np.array(synth.PLAN_WEIGHTS) / sum(synth.PLAN_WEIGHTS))
    status = rng.choice(3, size=n, p=[0.93, 0.03, 0.04])
    mart.write(
        "subscriber_profile",
        pa.table(
            {
                "subscriber_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                "plan_fee_yuan": pa.array(fees[plan]),
                "tenure_months": pa.array(rng.integers(0, 240, size=n, dtype=np.int32)),
                "arpu_yuan": pa.array((fees[plan] * rng.lognormal(0, 0.1, n)).astype(np.float32)),
                "status": pa.DictionaryArray.from_arrays(
                    pa.array(status.astype(np.int32)), pa.array(list(synth.STATUSES))
                ),
            }
        ),
    )
    holders = rng.choice(n, size=n // 20, replace=False) + 1
    mart.write(
        "member_prepaid",
        pa.table(
            {
                "subscriber_id": pa.array(np.sort(holders).astype(np.int64)),
                "prepaid_yuan": pa.array(
                    rng.choice([500.0, 1000.0, 2000.0, 5000.0], size=len(holders))
                ),
            }
        ),
    )


def evaluation(n: int, runs: int) -> dict[str, Any]:
    import duckdb

    from perkflow.mart import Mart
    from perkflow.membership import rules
    from perkflow.membership import service as membership

    program = rules.parse_program(membership.default_program_document())
    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as tmp:
        root = Path(tmp) / "mart"
        t0 = time.perf_counter()
        write_profile(root, n)
        print(f"  profile of {n:,} written in {time.perf_counter() - t0:.1f} s", flush=True)
        mart = Mart(root)
        sql = RAW_SQL.format(
            profile=mart.path("subscriber_profile"), prepaid=mart.path("member_prepaid")
        )
        con = duckdb.connect()
        timing: dict[str, list[float]] = {
            "perkflow": [],
            "raw": [],
            "perkflow_dist": [],
            "raw_dist": [],
        }
        for _ in range(runs):
            t = time.perf_counter()
            ours = membership.evaluate_levels(mart, program)
            timing["perkflow"].append(time.perf_counter() - t)
            t = time.perf_counter()
            raw = con.sql(sql).to_arrow_table()
            timing["raw"].append(time.perf_counter() - t)
            t = time.perf_counter()
            dist = membership._distribution(mart, program)
            timing["perkflow_dist"].append(time.perf_counter() - t)
            t = time.perf_counter()
            raw_dist = dict(
                con.execute(f"SELECT tier_level, count(*) FROM ({sql}) GROUP BY 1").fetchall()
            )
            timing["raw_dist"].append(time.perf_counter() - t)
        assert ours.num_rows == raw.num_rows == n
        assert dist == {int(k): int(v) for k, v in raw_dist.items()}, (dist, raw_dist)
        ours_sorted = ours.sort_by("subscriber_id")["tier_level"].to_numpy()
        raw_sorted = raw.sort_by("subscriber_id")["tier_level"].to_numpy()
        assert (ours_sorted == raw_sorted).all()
        con.close()
    med = {k: statistics.median(v) for k, v in timing.items()}
    return {"n": n, **med, "dist": dist}


# ---- bundles on PostgreSQL ----------------------------------------------------------------------


def _setup_members(url: str, members: int) -> list[int]:
    from perkflow.cli import migrate
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.membership import service as membership
    from perkflow.org.rules import SYSTEM
    from perkflow.subscribers import service as subscribers

    engine = make_engine(url)
    migrate.upgrade(engine)
    vault = Vault(SECRET.encode())
    sids = list(range(7_000_001, 7_000_001 + members))
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
        membership.load_default_program(s, actor=SYSTEM, vault=vault)
        for start in range(0, len(sids), 5000):
            membership.apply_tier_targets(
                s,
                actor=SYSTEM,
                targets=dict.fromkeys(sids[start : start + 5000], 1),
                reason="bench",
                source="bench",
            )
        s.commit()
    engine.dispose()
    return sids


def _reset(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE member_bundle_grants, grant_events, grant_outbox, grant_counters, grants "
            "RESTART IDENTITY CASCADE"
        )


def bundles(url: str, dsn: str, *, members: int, workers: int, month: str) -> float:
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit import clock
    from perkflow.membership import tasks

    _reset(dsn)
    engine = make_engine(url, pool_size=workers + 2, max_overflow=0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work() -> None:
        try:
            barrier.wait()
            tasks.issue_bundles(make_session_factory(engine), month=month, zone=ZONE, chunk=200)
        except BaseException as exc:
            errors.append(exc)

    clock.set_clock(lambda: datetime(2027, 1, 5, 4, tzinfo=UTC))
    try:
        threads = [threading.Thread(target=work) for _ in range(workers)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seconds = time.perf_counter() - t
    finally:
        clock.set_clock(None)
        engine.dispose()
    if errors:
        raise errors[0]
    import psycopg

    with psycopg.connect(dsn) as conn:
        grants = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM grants"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM member_bundle_grants").fetchone()
    assert grants == (6 * members, 6 * members) and rows == (6 * members,), (grants, rows)
    return 6 * members / seconds


def raw_bundles(dsn: str, sids: list[int]) -> float:
    """The floor: the same number of grant and bundle rows, one transaction per member."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_grants, raw_bundle")
        conn.execute(
            "CREATE TABLE raw_grants (id bigserial PRIMARY KEY, idempotency_key text UNIQUE, "
            "subscriber_id bigint, benefit_id int, status text, created_at timestamptz)"
        )
        conn.execute(
            "CREATE TABLE raw_bundle (id bigserial PRIMARY KEY, subscriber_id bigint, cycle text, "
            "slot text, grant_id bigint, UNIQUE (subscriber_id, cycle, slot))"
        )
    t = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for sid in sids:
            with conn.transaction():
                for unit in range(6):
                    gid = conn.execute(
                        "INSERT INTO raw_grants (idempotency_key, subscriber_id, benefit_id,"
                        " status, created_at) VALUES (%s, %s, %s, 'fulfilled', now())"
                        " RETURNING id",
                        (f"tier:{sid}:{unit}:2027-01", sid, unit),
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO raw_bundle (subscriber_id, cycle, slot, grant_id) "
                        "VALUES (%s, '2027-01', %s, %s) ON CONFLICT DO NOTHING",
                        (sid, f"item:{unit}", gid[0] if gid else None),
                    )
    return 6 * len(sids) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--members", type=int, default=1_000, help="members for the bundle issue")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-bundles", action="store_true")
    parser.add_argument("--skip-evaluation", action="store_true")
    args = parser.parse_args()
    if max(args.subscribers) > 20_000_000 or not 1 <= args.members <= 100_000:
        parser.error("--subscribers at most 20,000,000; --members 1..100,000")

    if not args.skip_evaluation:
        print(f"tier evaluation, median of {args.runs} runs (seconds)")
        print(
            "| N | perkflow (Ibis → DuckDB) | raw DuckDB SQL | ratio"
            " | distribution: perkflow | raw | ratio |"
        )
        for n in args.subscribers:
            r = evaluation(n, args.runs)
            ratio = r["perkflow"] / r["raw"]
            print(
                f"| {n:,} | {r['perkflow']:.2f} s | {r['raw']:.2f} s | {ratio:.2f}"
                f" | {r['perkflow_dist']:.3f} s | {r['raw_dist']:.3f} s"
                f" | {r['perkflow_dist'] / r['raw_dist']:.2f} |  {r['dist']}",
                flush=True,
            )

    if not args.skip_bundles:
        from tests.pg import PgServer

        server = PgServer()
        server.start()
        try:
            server.execute("CREATE DATABASE bench")
            url = server.url("bench")
            dsn = url.replace("postgresql+psycopg://", "postgresql://")
            sids = _setup_members(url, args.members)
            print(
                f"\nbundle issue on PostgreSQL, {args.members:,} members × 6 grants,"
                f" median of {args.runs}"
            )
            raw = statistics.median(raw_bundles(dsn, sids) for _ in range(args.runs))
            for workers in args.workers:
                rate = statistics.median(
                    bundles(url, dsn, members=args.members, workers=workers, month="2027-01")
                    for _ in range(args.runs)
                )
                print(
                    f"| {workers} | {rate:,.0f} grants/s | raw inserts {raw:,.0f} rows/s | "
                    f"ratio {raw / rate:.1f} | 1M members ≈ {6_000_000 / rate / 3600:.1f} h |",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
