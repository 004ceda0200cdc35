"""Benchmark tier evaluation over the mart and the monthly bundle run on SQLite and PostgreSQL.

    .venv/bin/python bench/tiers.py                                   # 1M and 10M; 100k members
    .venv/bin/python bench/tiers.py --skip-evaluation --members 1000000 --runs 3
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
(2) Monthly bundles on SQLite and on PostgreSQL (its own server, tests/pg.py): M silver members,
    six automatic grants each in the first cycle of a year (two home visits, SIM swap, data pack,
    cloud storage, coupon pack). `membership.tasks.issue_bundles` (chunks of --chunk members, one
    transaction each), checked afterwards: exactly 6·M grants with distinct keys and bundle rows.
    Beside it, in the same run and database, raw: the driver itself (sqlite3 / psycopg) inserting
    the same rows (grants, two events each, counters, bundle rows) with one executemany per table
    and one transaction per chunk, rows computed beforehand. Median of --runs; ratio = perkflow /
    raw; the 1-minute load average is printed with each run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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
    from perkflow.membership.service.evaluation import _distribution

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
            dist = _distribution(mart, program)
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


# ---- monthly bundles on SQLite and PostgreSQL ---------------------------------------------------

MONTH = "2027-01"  # the first cycle of a year: the monthly items and the yearly ones
PER_MEMBER = 6  # silver: 2 home visits, SIM swap, data pack (yearly); cloud storage, coupons
TABLES = ("member_bundle_grants", "grant_events", "grant_outbox", "grant_counters", "grants")


def _setup_members(url: str, members: int) -> None:
    """A migrated ledger with the default programme and `members` silver members."""
    from sqlalchemy import text

    from perkflow.cli import migrate
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit import clock
    from perkflow.kit.crypto import Vault
    from perkflow.membership import service as membership
    from perkflow.org.rules import SYSTEM
    from perkflow.subscribers import service as subscribers

    engine = make_engine(url)
    migrate.upgrade(engine)
    vault = Vault(SECRET.encode())
    sessions = make_session_factory(engine)
    with sessions() as s:
        membership.load_default_program(s, actor=SYSTEM, vault=vault)
        silver = membership.load(s).by_level(1)
        assert silver is not None
        s.commit()
    for start in range(0, members, 50_000):
        with sessions() as s:
            sids = range(1 + start, 1 + min(members, start + 50_000))
            subscribers.register_subscribers(
                s,
                vault=vault,
                rows=[
                    {
                        "id": sid,
                        "phone": f"139{sid:08d}",
                        "province_code": "GD",
                        "city_code": "GD01",
                        "plan_fee_fen": 9900,
                        "status": "active",
                        "joined_on": date(2024, 1, 1),
                    }
                    for sid in sids
                ],
            )
            # Members straight into the table: the bench times bundles, not evaluation.
            s.execute(
                text(
                    "INSERT INTO members (subscriber_id, tier_id, since, evaluated_at)"
                    " SELECT id, :tier, :at, :at FROM subscribers WHERE id BETWEEN :a AND :b"
                ).bindparams(),
                {"tier": silver.id, "at": clock.now(), "a": sids[0], "b": sids[-1]},
            )
            s.commit()
        print(f"    {min(members, start + 50_000):,} members set up", flush=True)
    engine.dispose()


def _reset(url: str) -> None:
    from sqlalchemy import text

    from perkflow.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DROP TABLE IF EXISTS raw_grants"))
        conn.execute(text("DROP TABLE IF EXISTS raw_events"))
        conn.execute(text("DROP TABLE IF EXISTS raw_counters"))
        conn.execute(text("DROP TABLE IF EXISTS raw_bundle"))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
    engine.dispose()


def bundles(url: str, *, members: int, chunk: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `membership.tasks.issue_bundles` over every member, checked after."""
    from sqlalchemy import text

    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit import clock
    from perkflow.membership import tasks

    _reset(url)
    engine = make_engine(url)
    clock.set_clock(lambda: datetime(2027, 1, 5, 4, tzinfo=UTC))
    done = {"n": 0}

    def line(d: int, t: int) -> None:
        if d // 100_000 > done["n"] // 100_000 or d == t:
            print(f"      {d:,} / {t:,} members", flush=True)
        done["n"] = d

    try:
        t, cpu = time.perf_counter(), time.process_time()
        count = tasks.issue_bundles(
            make_session_factory(engine), month=MONTH, zone=ZONE, chunk=chunk, progress=line
        )
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        clock.set_clock(None)
    with engine.connect() as conn:
        grants = conn.execute(
            text("SELECT count(*), count(DISTINCT idempotency_key) FROM grants")
        ).one()
        rows = conn.execute(text("SELECT count(*) FROM member_bundle_grants")).scalar()
    engine.dispose()
    n = PER_MEMBER * members
    assert count.issued == n and tuple(grants) == (n, n) and rows == n, (count, grants, rows)
    return seconds, cpu


RAW_DDL = (
    "CREATE TABLE raw_grants (id {pk}, idempotency_key varchar(128) UNIQUE, subscriber_id bigint,"
    " benefit_id int, partner_id int, source varchar(64), status varchar(16), period varchar(7),"
    " sale_price_fen int, cost_price_fen int, partner_order_id varchar(128), valid_until {ts},"
    " created_at {ts}, updated_at {ts}, fulfilled_at {ts})",
    "CREATE INDEX raw_grants_subscriber ON raw_grants (subscriber_id)",
    "CREATE TABLE raw_events (id {pk}, grant_id bigint, from_status varchar(16),"
    " to_status varchar(16), reason varchar(255), at {ts})",
    "CREATE TABLE raw_counters (subscriber_id bigint, benefit_id int, period varchar(7),"
    " count int, PRIMARY KEY (subscriber_id, benefit_id, period))",
    "CREATE TABLE raw_bundle (id {pk}, subscriber_id bigint, tier_id int, bundle_item_id int,"
    " cycle varchar(7), slot varchar(48), grant_id bigint, value_fen int, status varchar(16),"
    " at {ts}, UNIQUE (subscriber_id, cycle, slot))",
)


def raw_bundles(url: str, *, members: int, chunk: int) -> float:
    """The floor: the same rows (grants, events, counters, bundle rows) by plain driver inserts.

    One transaction per chunk of members and one executemany per table, like perkflow's run, with
    the rows computed beforehand in Python (no checks, no reads, no idempotency lookups).
    """
    import sqlite3

    import psycopg

    pg = url.startswith("postgresql")
    ts = "timestamptz" if pg else "timestamp"
    pk = "bigserial PRIMARY KEY" if pg else "INTEGER PRIMARY KEY"
    now = datetime(2027, 1, 5, 4, tzinfo=UTC)
    until = datetime(2028, 1, 4, 16, tzinfo=UTC)
    if pg:
        conn: Any = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        mark = "%s"
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        mark = "?"
        now_v: Any = now.replace(tzinfo=None).isoformat(" ")
        until_v: Any = until.replace(tzinfo=None).isoformat(" ")
    if pg:
        now_v, until_v = now, until
    cur = conn.cursor()
    for ddl in RAW_DDL:
        cur.execute(ddl.format(pk=pk, ts=ts))
    if pg:
        conn.commit()

    def q(n: int) -> str:
        return ", ".join([mark] * n)

    benefits = [(1, 1, "WO"), (1, 2, "WO"), (2, 1, "WO"), (3, 1, "WO"), (6, 1, "CP"), (13, 1, "CP")]
    t = time.perf_counter()
    for start in range(1, members + 1, chunk):
        sids = range(start, min(members, start + chunk - 1) + 1)
        if not pg:
            cur.execute("BEGIN IMMEDIATE")
        grant_rows = [
            (
                f"tier:{sid}:{b}:2027:{u}",
                sid,
                b,
                1,
                "membership",
                "fulfilled",
                "2027-01",
                10000,
                4000,
                f"{kind}-x",
                until_v,
                now_v,
                now_v,
                now_v,
            )
            for sid in sids
            for b, u, kind in benefits
        ]
        cur.executemany(
            "INSERT INTO raw_grants (idempotency_key, subscriber_id, benefit_id, partner_id,"
            " source, status, period, sale_price_fen, cost_price_fen, partner_order_id,"
            f" valid_until, created_at, updated_at, fulfilled_at) VALUES ({q(14)})",
            grant_rows,
        )
        cur.execute(
            "SELECT id, subscriber_id FROM raw_grants"
            f" WHERE subscriber_id BETWEEN {mark} AND {mark}",
            (sids[0], sids[-1]),
        )
        ids = cur.fetchall()
        cur.executemany(
            "INSERT INTO raw_events (grant_id, from_status, to_status, reason, at)"
            f" VALUES ({q(5)})",
            [(g, None, "pending", "issued via membership", now_v) for g, _ in ids]
            + [(g, "pending", "fulfilled", "coupon code issued", now_v) for g, _ in ids],
        )
        cur.executemany(
            f"INSERT INTO raw_counters VALUES ({q(4)})",
            [
                (sid, b, p, 1)
                for sid in sids
                for b in (1, 2, 3, 6, 13)
                for p in ("2027-01", "total")
            ],
        )
        cur.executemany(
            "INSERT INTO raw_bundle (subscriber_id, tier_id, bundle_item_id, cycle, slot, grant_id,"
            f" value_fen, status, at) VALUES ({q(9)})",
            [(sid, 1, 1, "2027", f"item:{g}", g, 100, "granted", now_v) for g, sid in ids],
        )
        if pg:
            conn.commit()
        else:
            cur.execute("COMMIT")
    seconds = time.perf_counter() - t
    conn.close()
    return seconds


def bundle_bench(url: str, *, label: str, members: int, runs: int, chunk: int) -> dict[str, Any]:
    print(f"  {label}: setting up {members:,} silver members", flush=True)
    _setup_members(url, members)
    ours: list[float] = []
    cpus: list[float] = []
    raw: list[float] = []
    loads: list[float] = []
    for i in range(runs):
        loads.append(os.getloadavg()[0])
        wall, cpu = bundles(url, members=members, chunk=chunk)
        ours.append(wall)
        cpus.append(cpu)
        _reset(url)
        raw.append(raw_bundles(url, members=members, chunk=chunk))
        print(
            f"    run {i + 1}: perkflow {wall:.1f} s (CPU of this process {cpu:.1f} s),"
            f" raw {raw[-1]:.1f} s, load {loads[-1]:.1f}",
            flush=True,
        )
    med, med_raw = statistics.median(ours), statistics.median(raw)
    return {
        "label": label,
        "members": members,
        "seconds": med,
        "raw": med_raw,
        "cpu": statistics.median(cpus),
        "load": statistics.median(loads),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--members", type=int, default=100_000, help="members for the bundles")
    parser.add_argument("--chunk", type=int, default=250, help="members per transaction")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--skip-bundles", action="store_true")
    parser.add_argument("--skip-evaluation", action="store_true")
    args = parser.parse_args()
    if max(args.subscribers) > 20_000_000 or not 1 <= args.members <= 5_000_000:
        parser.error("--subscribers at most 20,000,000; --members 1..5,000,000")

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

        print(
            f"\nmonthly bundles ({MONTH}: {PER_MEMBER} grants a member), {args.members:,} members,"
            f" chunks of {args.chunk:,}, median of {args.runs}"
        )
        results = []
        if "sqlite" in args.backends:
            with tempfile.TemporaryDirectory(prefix="bench-bundles-") as tmp:
                url = f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}"
                results.append(
                    bundle_bench(
                        url, label="SQLite", members=args.members, runs=args.runs, chunk=args.chunk
                    )
                )
        if "postgresql" in args.backends:
            server = PgServer()
            server.start()
            try:
                server.execute("CREATE DATABASE bench")
                results.append(
                    bundle_bench(
                        server.url("bench"),
                        label="PostgreSQL",
                        members=args.members,
                        runs=args.runs,
                        chunk=args.chunk,
                    )
                )
            finally:
                server.stop()
        print(
            "| ledger | members | perkflow | members/s | grants/s | raw inserts | ratio"
            " | CPU (bench process) | load |"
        )
        for r in results:
            grants = PER_MEMBER * r["members"]
            print(
                f"| {r['label']} | {r['members']:,} | {r['seconds']:.1f} s"
                f" | {r['members'] / r['seconds']:,.0f} | {grants / r['seconds']:,.0f}"
                f" | {r['raw']:.1f} s | {r['seconds'] / r['raw']:.2f} | {r['cpu']:.1f} s"
                f" | {r['load']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
