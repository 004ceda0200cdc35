"""Benchmark segments: preview, materialization and the contact-policy pass, against raw DuckDB SQL.

    .venv/bin/python bench/segments.py --subscribers 1000000 --runs 3
    .venv/bin/python bench/segments.py --subscribers 1000000 10000000 --runs 3

For each size N a synthetic profile (`perkflow.synth.rules.generate`) is written as Parquet, with
30 days of contact history and an opt-out list. Then, median of `--runs` runs each, every run on a
fresh DuckDB connection:

(a) preview — perkflow compiles a definition to Ibis and counts it by province, plan fee and
    activity (what the builder shows); beside the same query hand-written in DuckDB SQL, and pandas;
(b) materialization — the members' (id, province, activity) written to a Parquet snapshot: perkflow
    runs the Ibis expression to Arrow and writes it with the mart; raw DuckDB `COPY … TO`; pandas;
(c) contact policy — `compiler.assign` over a target list of everyone (N members): universal
    control, opt-outs, frequency caps per activity against the history, quiet hours, the stratified
    control split; beside one hand-written DuckDB SQL statement doing the same.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perkflow.audience import compiler, marts, rules
from perkflow.mart import Mart
from perkflow.org.service import load_region_data
from perkflow.synth import rules as synth

AS_OF = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Beijing: no quiet hours
DEFINITION = {
    "rule": {
        "all": [
            {"column": "age_band", "op": "in", "values": ["18-24", "25-34"]},
            {"column": "plan_fee_yuan", "op": "between", "low": 59, "high": 199},
            {"column": "interest_video", "op": ">=", "value": 0.5},
            {"not": {"history": "contacted", "within_days": 7, "channel": "sms"}},
        ]
    },
    "exclude": ["churned", "opted_out"],
}
WHERE_SQL = """
    age_band IN ('18-24', '25-34')
    AND plan_fee_yuan BETWEEN 59 AND 199
    AND CAST(interest_video AS DOUBLE) >= 0.5
    AND subscriber_id NOT IN (
        SELECT subscriber_id FROM read_parquet('{contacts}')
        WHERE channel = 'sms' AND contacted_at > TIMESTAMPTZ '{week_ago}'
          AND contacted_at <= TIMESTAMPTZ '{as_of}')
    AND status <> 'churned'
    AND subscriber_id NOT IN (
        SELECT subscriber_id FROM read_parquet('{lists}') WHERE kind = 'opted_out')
"""


def prepare(root: Path, n: int) -> None:
    """Profile, 30 days of contact history (1.5 contacts per subscriber) and 1 % opted out."""
    generated = synth.generate(n, 17, load_region_data())
    mart = Mart(root)
    mart.write(marts.PROFILE, generated.subscriber_profile)
    del generated
    rng = np.random.default_rng(3)
    m = n * 3 // 2
    start = int((AS_OF - timedelta(days=30)).timestamp() * 1_000_000)
    stamps = rng.integers(start, int(AS_OF.timestamp() * 1_000_000), m)
    contacts = pa.table(
        {
            "subscriber_id": pa.array(rng.integers(1, n + 1, m), type=pa.int64()),
            "campaign_id": pa.array(rng.choice(["C1", "C2", "C3", "C4"], m)),
            "channel": pa.array(rng.choice(["sms", "sms", "push", "email"], m)),
            "cell": pa.array(np.full(m, "target")),
            "contacted_at": pa.array(stamps, type=marts.UTC_TS),
            "target_list_id": pa.nulls(m, type=pa.int64()),
        }
    )
    mart.write(marts.CONTACT_HISTORY, marts.conform(contacts, marts.CONTACT_HISTORY_SCHEMA))
    k = n // 100
    lists = pa.table(
        {
            "subscriber_id": pa.array(rng.choice(n, k, replace=False) + 1, type=pa.int64()),
            "kind": pa.array(np.full(k, "opted_out")),
            "channel": pa.array(rng.choice(["all", "sms"], k)),
            "since": pa.array(np.full(k, start), type=marts.UTC_TS),
        }
    )
    mart.write(marts.CONTACT_LISTS, marts.conform(lists, marts.CONTACT_LISTS_SCHEMA))


def _sources(mart: Mart) -> compiler.Sources:
    return compiler.Sources(
        profile=mart.table(marts.PROFILE),
        contacts=mart.table(marts.CONTACT_HISTORY),
        lists=mart.table(marts.CONTACT_LISTS),
    )


def _catalog(root: Path) -> rules.Catalog:
    from perkflow.audience.service import profile_columns

    return rules.Catalog(
        columns=profile_columns(Mart(root)), score_columns=frozenset({"churn_risk"})
    )


def _sql_args(root: Path) -> dict[str, str]:
    return {
        "contacts": str(root / "contact_history.parquet"),
        "lists": str(root / "contact_lists.parquet"),
        "week_ago": (AS_OF - timedelta(days=7)).isoformat(),
        "as_of": AS_OF.isoformat(),
    }


def _duck(threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    return con


# ---- (a) preview -------------------------------------------------------------------------------


def preview_perkflow(root: Path, catalog: rules.Catalog, _out: Path) -> int:
    mart = Mart(root)
    d = rules.parse_definition(DEFINITION, catalog)
    rows = compiler.breakdown(compiler.members(compiler.Scoped(d), _sources(mart), AS_OF))
    return int(sum(rows.to_pyarrow()["n"].to_pylist()))


def preview_duckdb(root: Path, _catalog: rules.Catalog, _out: Path) -> int:
    con = _duck(2)
    sql = f"""
        SELECT province_code, plan_fee_yuan, activity_level, count(*) AS n
        FROM read_parquet('{root / "subscriber_profile.parquet"}')
        WHERE {WHERE_SQL.format(**_sql_args(root))}
        GROUP BY ALL"""
    return int(sum(r[3] for r in con.execute(sql).fetchall()))


def _pandas_members(root: Path) -> Any:
    import pandas as pd

    cols = [
        "subscriber_id",
        "province_code",
        "plan_fee_yuan",
        "activity_level",
        "age_band",
        "interest_video",
        "status",
    ]
    p = pd.read_parquet(root / "subscriber_profile.parquet", columns=cols)
    c = pd.read_parquet(
        root / "contact_history.parquet", columns=["subscriber_id", "channel", "contacted_at"]
    )
    lst = pd.read_parquet(root / "contact_lists.parquet", columns=["subscriber_id", "kind"])
    week_ago = pd.Timestamp(AS_OF - timedelta(days=7))
    recent = c[
        (c.channel == "sms") & (c.contacted_at > week_ago) & (c.contacted_at <= pd.Timestamp(AS_OF))
    ]
    mask = (
        p.age_band.isin(["18-24", "25-34"])
        & p.plan_fee_yuan.between(59, 199)
        & (p.interest_video.astype("float64") >= 0.5)
        & ~p.subscriber_id.isin(recent.subscriber_id)
        & (p.status != "churned")
        & ~p.subscriber_id.isin(lst[lst.kind == "opted_out"].subscriber_id)
    )
    return p[mask]


def preview_pandas(root: Path, _catalog: rules.Catalog, _out: Path) -> int:
    m = _pandas_members(root)
    counts = m.groupby(["province_code", "plan_fee_yuan", "activity_level"], observed=True).size()
    return int(counts.sum())


# ---- (b) materialization -----------------------------------------------------------------------


def materialize_perkflow(root: Path, catalog: rules.Catalog, out: Path) -> int:
    mart = Mart(root)
    d = rules.parse_definition(DEFINITION, catalog)
    members = compiler.members(compiler.Scoped(d), _sources(mart), AS_OF)
    table = members.select("subscriber_id", "province_code", "activity_level").to_pyarrow()
    Mart(out).write("snapshot", table)
    return int(table.num_rows)


def materialize_duckdb(root: Path, _catalog: rules.Catalog, out: Path) -> int:
    con = _duck(2)
    target = out / "snapshot_sql.parquet"
    con.execute(f"""
        COPY (SELECT subscriber_id, province_code, activity_level
              FROM read_parquet('{root / "subscriber_profile.parquet"}')
              WHERE {WHERE_SQL.format(**_sql_args(root))})
        TO '{target}' (FORMAT parquet, COMPRESSION zstd)""")
    return int(pq.read_metadata(target).num_rows)


def materialize_pandas(root: Path, _catalog: rules.Catalog, out: Path) -> int:
    m = _pandas_members(root)[["subscriber_id", "province_code", "activity_level"]]
    m.to_parquet(out / "snapshot_pd.parquet", compression="zstd", index=False)
    return len(m)


# ---- (c) contact policy ------------------------------------------------------------------------

KEY = "k" * 64


def _plan(n_provinces: tuple[str, ...]) -> compiler.Assignment:
    policy = rules.default_policy()
    return compiler.Assignment(
        target_list_id=1,
        channel="sms",
        as_of=AS_OF,
        control_share_bp=1000,
        control_prefix=rules.hash_input_prefix(KEY, "bench"),
        universal_prefix=rules.hash_input_prefix(KEY, "ucg:ucg:3"),
        universal_threshold=rules.hash_threshold(500),
        policy=policy,
        quiet_provinces=rules.quiet_provinces(
            policy, channel="sms", at=AS_OF, provinces=n_provinces, default_zone="Asia/Shanghai"
        ),
    )


def policy_perkflow(root: Path, catalog: rules.Catalog, out: Path) -> int:
    mart = Mart(root)
    src = _sources(mart)
    d = rules.parse_definition({}, catalog)
    plan = _plan(catalog.columns["province_code"].values or ())
    snap = compiler.assign(compiler.members(compiler.Scoped(d), src, AS_OF), src, plan)
    table = snap.to_pyarrow()
    Mart(out).write("target_list", table)
    return int(table.num_rows)


def policy_duckdb(root: Path, catalog: rules.Catalog, out: Path) -> int:
    con = _duck(2)
    caps = rules.default_policy().caps["sms"]
    starts = " ".join(
        f"WHEN '{a}' THEN TIMESTAMPTZ '{(AS_OF - timedelta(days=c.window_days)).isoformat()}'"
        for a, c in caps.items()
    )
    limits = " ".join(f"WHEN '{a}' THEN {c.max_contacts}" for a, c in caps.items())
    widest = (AS_OF - timedelta(days=max(c.window_days for c in caps.values()))).isoformat()
    p = root / "subscriber_profile.parquet"
    target = out / "target_list_sql.parquet"
    con.execute(f"""
    COPY (
    WITH m AS (SELECT subscriber_id, province_code, activity_level, status
               FROM read_parquet('{p}')),
    opt AS (SELECT DISTINCT subscriber_id FROM read_parquet('{root / "contact_lists.parquet"}')
            WHERE kind = 'opted_out' AND channel IN ('sms', 'all')),
    cmp AS (SELECT DISTINCT subscriber_id FROM read_parquet('{root / "contact_lists.parquet"}')
            WHERE kind = 'complaint'),
    recent AS (
        SELECT c.subscriber_id, count(*) AS n
        FROM read_parquet('{root / "contact_history.parquet"}') c JOIN m USING (subscriber_id)
        WHERE c.channel = 'sms' AND c.contacted_at > TIMESTAMPTZ '{widest}'
          AND c.contacted_at <= TIMESTAMPTZ '{AS_OF.isoformat()}'
          AND c.contacted_at > CASE m.activity_level {starts} END
        GROUP BY 1),
    staged AS (
        SELECT m.subscriber_id, m.province_code, m.activity_level,
            substr(sha256('{KEY}:ucg:ucg:3:' || m.subscriber_id::VARCHAR), 1, 8)
                < '{rules.hash_threshold(500)}' AS in_universal,
            CASE WHEN opt.subscriber_id IS NOT NULL THEN 'opted_out'
                 WHEN cmp.subscriber_id IS NOT NULL THEN 'complaint'
                 WHEN m.status <> 'active' THEN 'not_active'
                 WHEN coalesce(recent.n, 0) >= CASE m.activity_level {limits} END
                     THEN 'frequency_cap'
            END AS reason
        FROM m LEFT JOIN opt USING (subscriber_id) LEFT JOIN cmp USING (subscriber_id)
               LEFT JOIN recent USING (subscriber_id)),
    ranked AS (
        SELECT *, NOT in_universal AND reason IS NULL AS eligible,
            row_number() OVER w - 1 AS rnk, count(*) OVER (PARTITION BY province_code,
                NOT in_universal AND reason IS NULL) AS size
        FROM staged
        WINDOW w AS (PARTITION BY province_code, NOT in_universal AND reason IS NULL
                     ORDER BY sha256('{KEY}:bench:' || subscriber_id::VARCHAR), subscriber_id))
    SELECT 1::BIGINT AS target_list_id, subscriber_id, province_code, activity_level,
        CASE WHEN in_universal THEN 'universal_control' WHEN reason IS NOT NULL THEN 'suppressed'
             WHEN rnk < (size * 1000 + 5000) // 10000 THEN 'control' ELSE 'target' END AS cell,
        reason
    FROM ranked) TO '{target}' (FORMAT parquet, COMPRESSION zstd)""")
    return int(pq.read_metadata(target).num_rows)


def measure(
    fn: Callable[[Path, rules.Catalog, Path], int], root: Path, catalog: rules.Catalog, runs: int
) -> tuple[float, int]:
    times = []
    rows = 0
    for _ in range(runs):
        out = Path(tempfile.mkdtemp(prefix="bench-out-"))
        started = time.perf_counter()
        rows = fn(root, catalog, out)
        times.append(time.perf_counter() - started)
        shutil.rmtree(out, ignore_errors=True)
    return statistics.median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas columns")
    parser.add_argument(
        "--policy-max", type=int, default=1_000_000, help="run (c) only up to this many subscribers"
    )
    args = parser.parse_args()
    for n in args.subscribers:
        root = Path(tempfile.mkdtemp(prefix="bench-segments-"))
        try:
            started = time.perf_counter()
            prepare(root, n)
            print(
                f"\n## {n:,} subscribers (data prepared in {time.perf_counter() - started:.1f} s)"
            )
            catalog = _catalog(root)
            checks = [
                ("preview count", preview_perkflow, preview_duckdb, preview_pandas),
                (
                    "materialize snapshot",
                    materialize_perkflow,
                    materialize_duckdb,
                    materialize_pandas,
                ),
            ]
            if n <= args.policy_max:
                checks.append(("contact-policy pass", policy_perkflow, policy_duckdb, None))
            print("| figure | perkflow (Ibis→DuckDB) | raw DuckDB SQL | ratio | pandas | rows |")
            print("|---|---|---|---|---|---|")
            for name, ours, raw, pandas in checks:
                t_ours, r_ours = measure(ours, root, catalog, args.runs)
                t_raw, r_raw = measure(raw, root, catalog, args.runs)
                assert r_ours == r_raw, (name, r_ours, r_raw)
                pd_cell = "—"
                if pandas is not None and not args.no_pandas:
                    t_pd, r_pd = measure(pandas, root, catalog, max(1, args.runs // 2))
                    assert r_pd == r_ours, (name, r_pd, r_ours)
                    pd_cell = f"{t_pd:.3f} s"
                print(
                    f"| {name} | {t_ours:.3f} s | {t_raw:.3f} s | {t_ours / t_raw:.2f} | "
                    f"{pd_cell} | {r_ours:,} |",
                    flush=True,
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
