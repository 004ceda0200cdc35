"""Benchmark the synthetic operator against the raw engines underneath it.

    .venv/bin/python bench/synth.py --subscribers 1000000 --runs 3

(a) rules only: `perkflow.synth.rules.generate`, then the three Parquet writes the service does;
(b) raw DuckDB: one SQL statement per table with range() and random(), same rows and columns,
    `COPY ... TO` Parquet (zstd);
(c) the full `generate_operator` into a temporary home's SQLite ledger, beside a raw `sqlite3`
    executemany of the very rows it stored.
Every run happens in a fresh spawned process, so its peak RSS is its own. Runs stop early once the
time budget is spent (at least one run of each part always happens).
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

Result = dict[str, float]


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rules_run(n: int, seed: int) -> Result:
    """Generate in memory, then write the three tables as Parquet (zstd) like the service."""
    import pyarrow.parquet as pq

    from perkflow.org.service import load_region_data
    from perkflow.synth import rules

    regions = load_region_data()
    started = time.perf_counter()
    generated = rules.generate(n, seed, regions)
    generated_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("subscriber_profile", "usage_monthly", "response_truth"):
            pq.write_table(getattr(generated, name), f"{tmp}/{name}.parquet", compression="zstd")
    total_s = time.perf_counter() - started
    return {"generate_s": generated_s, "total_s": total_s, "rss_mb": _peak_rss_mb()}


def _pick(values: list[str]) -> str:
    """A SQL expression choosing one of `values` uniformly."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"([{quoted}])[1 + floor(random() * {len(values)})::INT]"


def duckdb_run(n: int, seed: int) -> Result:
    """The same row counts and column shapes from plain DuckDB SQL, copied to Parquet."""
    import duckdb

    from perkflow.org.service import load_region_data
    from perkflow.synth import rules

    regions = load_region_data()["provinces"]
    provinces = [p["code"] for p in regions]
    cities = [c["code"] for p in regions for c in p["cities"]]
    fees = ", ".join(str(f) for f in rules.PLAN_FEES_YUAN)
    floats = ["arpu_yuan", "data_mb", "voice_min"]
    interests = [f"interest_{name}" for name in rules.INTERESTS]
    profile_sql = f"""
        SELECT range + 1 AS subscriber_id,
               {_pick(provinces)} AS province_code,
               {_pick(cities)} AS city_code,
               ([{fees}])[1 + floor(random() * 12)::INT] AS plan_fee_yuan,
               {", ".join(f"(random() * 300)::FLOAT AS {c}" for c in floats)},
               (1 + floor(random() * 240))::INT AS tenure_months,
               {_pick(list(rules.DEVICE_TIERS))} AS device_tier,
               {_pick(list(rules.AGE_BANDS))} AS age_band,
               {_pick(list(rules.GENDERS))} AS gender,
               {", ".join(f"random()::FLOAT AS {c}" for c in interests)},
               {_pick(list(rules.INTERESTS))} AS primary_interest,
               {_pick(list(rules.ACTIVITY_LEVELS))} AS activity_level,
               random()::FLOAT AS churn_risk,
               {_pick(list(rules.STATUSES))} AS status,
               DATE '2026-10-31' - floor(random() * 7300)::INT AS joined_on
        FROM range({n})"""
    usage_sql = f"""
        SELECT range // 6 + 1 AS subscriber_id,
               (DATE '2026-05-01' + to_months((range % 6)::INT))::DATE AS month,
               (random() * 20000)::FLOAT AS data_mb,
               (random() * 400)::FLOAT AS voice_min,
               (random() * 200)::FLOAT AS bill_yuan
        FROM range({6 * n})"""
    truth_cols = ", ".join(
        f"(random() * 0.08)::FLOAT AS base_{c}, (random() * 0.05)::FLOAT AS effect_{c}"
        for c in rules.CATEGORIES
    )
    truth_sql = f"""
        SELECT range + 1 AS subscriber_id, {truth_cols}, random() < 0.06 AS sleeping_dog
        FROM range({n})"""
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for name, sql in (("profile", profile_sql), ("usage", usage_sql), ("truth", truth_sql)):
            con.execute(
                f"COPY ({sql}) TO '{tmp}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
        total_s = time.perf_counter() - started
    con.close()
    return {"total_s": total_s, "rss_mb": _peak_rss_mb()}


def ledger_run(n: int, seed: int) -> Result:
    """`generate_operator` into a fresh home, then raw sqlite3 inserting the rows it stored."""
    import perkflow.models_registry  # noqa: F401  (every table on the metadata)
    from perkflow.db import Base, make_engine, make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.mart import Mart
    from perkflow.org.service import seed_regions
    from perkflow.settings import Settings
    from perkflow.synth.service import generate_operator

    def migrated(url: str) -> Any:
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        with make_session_factory(engine)() as session:
            seed_regions(session)
            session.commit()
        return engine

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", secret_key="bench-secret")
        engine = migrated(settings.ledger_url)
        with make_session_factory(engine)() as session:
            started = time.perf_counter()
            generate_operator(
                session,
                mart=Mart(settings.mart_dir),
                truth_dir=settings.truth_dir,
                vault=Vault(settings.master_secret),
                n=n,
                seed=seed,
            )
            session.commit()
            full_s = time.perf_counter() - started
        # Peak so far belongs to generate_operator; the raw part below reads every row back.
        rss_mb = _peak_rss_mb()
        engine.dispose()

        ledger = settings.ledger_url.removeprefix("sqlite:///")
        with sqlite3.connect(ledger) as src:
            cursor = src.execute("SELECT * FROM subscribers ORDER BY id")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        raw_path = f"{tmp}/raw.sqlite3"
        migrated(f"sqlite:///{raw_path}").dispose()
        con = sqlite3.connect(raw_path)
        # The same pragmas the ledger engine sets, so only the layers above differ.
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            con.execute(f"PRAGMA {pragma}")
        marks = ", ".join("?" for _ in names)
        started = time.perf_counter()
        con.executemany(f"INSERT INTO subscribers ({', '.join(names)}) VALUES ({marks})", rows)
        con.commit()
        raw_s = time.perf_counter() - started
        con.close()

    # Where the gap goes: the per-row AES-GCM and HMAC the ledger needs for every phone.
    vault = Vault(b"bench-secret")
    phones = [f"1891234{i % 10000:04d}" for i in range(n)]
    started = time.perf_counter()
    for i, phone in enumerate(phones):
        vault.pii.encrypt(phone, f"subscriber:{i}".encode())
        vault.lookup.digest(phone)
    crypto_s = time.perf_counter() - started
    return {"full_s": full_s, "raw_s": raw_s, "crypto_s": crypto_s, "rss_mb": rss_mb}


def repeat(
    label: str, fn: Callable[[int, int], Result], n: int, runs: int, deadline: float
) -> list[Result]:
    """Up to `runs` runs, each in a fresh process, stopping once the deadline has passed."""
    results: list[Result] = []
    for i in range(runs):
        if results and time.monotonic() > deadline:
            print(f"  {label}: time budget spent after {len(results)} run(s)")
            break
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            result = pool.submit(fn, n, 1000 + i).result()
        print(f"  {label} run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in result.items()))
        results.append(result)
    return results


def median(results: list[Result], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--ledger-subscribers",
        type=int,
        default=200_000,
        help="subscribers for part (c); the ledger path encrypts and inserts every row",
    )
    parser.add_argument("--budget-s", type=float, default=900.0, help="stop starting new runs")
    args = parser.parse_args()
    n = max(1, min(args.subscribers, 50_000_000))
    n_ledger = max(1, min(args.ledger_subscribers, n))
    runs = max(1, min(args.runs, 9))
    deadline = time.monotonic() + args.budget_s
    print(
        f"synth bench: {n:,} subscribers ({n_ledger:,} for the ledger), up to {runs} runs, "
        f"{os.cpu_count()} cores"
    )

    ours = repeat("rules", rules_run, n, runs, deadline)
    raw = repeat("duckdb", duckdb_run, n, runs, deadline)
    ledger = repeat("ledger", ledger_run, n_ledger, runs, deadline)

    gen_s, ours_s, duck_s = (
        median(ours, "generate_s"),
        median(ours, "total_s"),
        median(raw, "total_s"),
    )
    full_s, raw_s = median(ledger, "full_s"), median(ledger, "raw_s")
    print()
    print(f"{'figure':<48} {'perkflow':>14} {'raw engine':>14} {'ratio':>7}")
    print(f"{'rules only, generate (subscribers/s)':<48} {n / gen_s:>14,.0f} {'':>14} {'':>7}")
    print(
        f"{'rules + Parquet vs DuckDB SQL + COPY (s)':<48} "
        f"{ours_s:>14.2f} {duck_s:>14.2f} {ours_s / duck_s:>7.2f}"
    )
    print(f"{'  as subscribers/s':<48} {n / ours_s:>14,.0f} {n / duck_s:>14,.0f}")
    print(
        f"{'peak RSS (MB)':<48} {median(ours, 'rss_mb'):>14.0f} "
        f"{median(raw, 'rss_mb'):>14.0f} {median(ours, 'rss_mb') / median(raw, 'rss_mb'):>7.2f}"
    )
    print(
        f"{'generate_operator vs sqlite3 executemany (s)':<48} "
        f"{full_s:>14.2f} {raw_s:>14.2f} {full_s / raw_s:>7.2f}"
    )
    print(f"{'  as subscribers/s':<48} {n_ledger / full_s:>14,.0f} {n_ledger / raw_s:>14,.0f}")
    crypto_s = median(ledger, "crypto_s")
    print(f"{'  of which phone encryption + keyed hash (s)':<48} {crypto_s:>14.2f}")
    print(f"{'  peak RSS (MB)':<48} {median(ledger, 'rss_mb'):>14.0f}")
    print(f"runs: rules {len(ours)}, duckdb {len(raw)}, ledger {len(ledger)}; medians shown")


if __name__ == "__main__":
    main()
