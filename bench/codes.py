"""Benchmark the card-code import against the raw engine underneath it.

    .venv/bin/python bench/codes.py                          # 1,000,000 codes, SQLite, 3 runs
    .venv/bin/python bench/codes.py --codes 1000000 --runs 3 --pg

One CSV of --codes lines (`code,pin,expiry`, like a partner's file) is written once. Then, each run
in a fresh spawned process so its peak RSS is its own:

(a) perkflow: `catalog.service.import_card_codes` reading the file as a stream into a fresh,
    migrated ledger (parse and validate every line, keyed hash, AES-GCM of code and PIN, batched
    Core INSERT … ON CONFLICT DO NOTHING RETURNING for de-duplication, lot, stock, audit), then
    commit;
(b) raw SQLite: the same rows, already encrypted outside the clock, inserted with plain `sqlite3`
    `executemany` into an identical migrated ledger with the same pragmas, then commit; the time the
    row preparation (parse + HMAC + 2 × AES-GCM per code) took is reported beside it;
(c) with --pg, (a) against PostgreSQL and a raw `COPY … FROM STDIN` of pre-encrypted rows.

Reported: seconds and codes/s, median of --runs; peak RSS; the ratio perkflow / raw. The parts
run interleaved, round after round; no new round starts once --budget-s is spent (at least one
round always happens).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = b"bench-secret-not-for-production-0123456789abcdef"
Result = dict[str, float]
COLUMNS = (
    "lot_id",
    "benefit_id",
    "code_enc",
    "pin_enc",
    "code_hash",
    "expires_on",
    "status",
    "allocated_at",
)


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_codes(path: Path, n: int) -> None:
    """A partner-like file: header, 20-character codes, 6-digit PINs, an expiry on half."""
    prefix = secrets.token_hex(3).upper()
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("code,pin,expiry\n")
        for i in range(n):
            expiry = "2099-12-31" if i % 2 else ""
            fh.write(f"PF{prefix}{i:09d}X{i % 97:02d},{(i * 7919) % 1_000_000:06d},{expiry}\n")


def _ledger(url: str) -> tuple[Any, int]:
    """A migrated ledger with one card-code benefit; returns its engine and the benefit id."""
    from perkflow.catalog import service as catalog
    from perkflow.catalog.schemas import BenefitCreate, PartnerCreate
    from perkflow.cli import migrate
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.org.rules import SYSTEM

    engine = make_engine(url)
    migrate.upgrade(engine)
    with make_session_factory(engine)() as s:
        catalog.create_partner(
            s, actor=SYSTEM, vault=Vault(SECRET), spec=PartnerCreate(code="bench", name="Bench")
        )
        benefit = catalog.create_benefit(
            s,
            actor=SYSTEM,
            spec=BenefitCreate.model_validate(
                {
                    "code": "bench-codes",
                    "partner_code": "bench",
                    "name_zh": "卡密",
                    "name_en": "Codes",
                    "category": "video",
                    "fulfilment_kind": "card_code",
                    "face_value_fen": 2500,
                    "cost_price_fen": 1000,
                    "sale_price_fen": 1500,
                    "validity_kind": "days",
                    "valid_days": 30,
                }
            ),
        )
        s.commit()
        return engine, benefit.id


def perkflow_run(csv_path: str, url: str | None) -> Result:
    """`import_card_codes` over the file as a stream, then commit."""
    from perkflow.catalog import service as catalog
    from perkflow.catalog.models import Benefit
    from perkflow.db import make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.org.rules import SYSTEM

    with tempfile.TemporaryDirectory() as tmp:
        engine, benefit_id = _ledger(url or f"sqlite:///{tmp}/ledger.sqlite3")
        vault = Vault(SECRET)
        before_mb = _peak_rss_mb()
        with (
            make_session_factory(engine)() as s,
            open(csv_path, encoding="utf-8", newline="") as fh,
        ):
            started = time.perf_counter()
            result = catalog.import_card_codes(
                s,
                actor=SYSTEM,
                vault=vault,
                benefit_id=benefit_id,
                file_name="bench.csv",
                unit_cost_fen=900,
                rows=fh,
            )
            s.commit()
            seconds = time.perf_counter() - started
            benefit = s.get(Benefit, benefit_id)
            assert benefit is not None and benefit.stock_total == result.imported
        engine.dispose()
    return {
        "s": seconds,
        "codes": float(result.imported),
        "rss_mb": _peak_rss_mb(),
        "rss_before_mb": before_mb,
    }


def _prepared_rows(csv_path: str, *, benefit_id: int, lot_id: int) -> tuple[list[tuple], float]:
    """The rows perkflow stores, encrypted outside the clock of the insert; and how long it took."""
    from perkflow.catalog.service import code_context
    from perkflow.kit.crypto import Vault

    vault = Vault(SECRET)
    rows = []
    started = time.perf_counter()
    with open(csv_path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for code, pin, expiry in reader:
            code_hash = vault.lookup.digest(code)
            context = code_context(benefit_id=benefit_id, code_hash=code_hash)
            rows.append(
                (
                    lot_id,
                    benefit_id,
                    vault.pii.encrypt(code, context),
                    vault.pii.encrypt(pin, context) if pin else None,
                    code_hash,
                    expiry or None,
                    "available",
                    None,
                )
            )
    return rows, time.perf_counter() - started


def raw_sqlite_run(csv_path: str, url: str | None) -> Result:
    """Plain sqlite3 executemany of pre-encrypted rows into an identical ledger."""
    import sqlite3

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/ledger.sqlite3"
        engine, benefit_id = _ledger(f"sqlite:///{path}")
        engine.dispose()
        con = sqlite3.connect(path)
        # The same pragmas the ledger engine sets, so only the layers above differ.
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            con.execute(f"PRAGMA {pragma}")
        lot_id = con.execute(
            "INSERT INTO card_code_lots (benefit_id, file_name, unit_cost_fen, count, imported_by,"
            " imported_at) VALUES (?, 'bench.csv', 900, 0, 'raw', '2026-11-23 00:00:00+00:00')",
            (benefit_id,),
        ).lastrowid
        con.commit()
        rows, prepare_s = _prepared_rows(csv_path, benefit_id=benefit_id, lot_id=int(lot_id or 0))
        marks = ", ".join("?" for _ in COLUMNS)
        started = time.perf_counter()
        con.executemany(f"INSERT INTO card_codes ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
        con.commit()
        seconds = time.perf_counter() - started
        con.close()
    return {
        "s": seconds,
        "prepare_s": prepare_s,
        "codes": float(len(rows)),
        "rss_mb": _peak_rss_mb(),
    }


def raw_pg_run(csv_path: str, url: str | None) -> Result:
    """Plain psycopg COPY … FROM STDIN of pre-encrypted rows into an identical ledger."""
    import psycopg

    assert url is not None
    engine, benefit_id = _ledger(url)
    engine.dispose()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as con:
        lot_id = con.execute(
            "INSERT INTO card_code_lots (benefit_id, file_name, unit_cost_fen, count, imported_by,"
            " imported_at) VALUES (%s, 'bench.csv', 900, 0, 'raw', now()) RETURNING id",
            (benefit_id,),
        ).fetchone()[0]  # type: ignore[index]
        con.commit()
        rows, prepare_s = _prepared_rows(csv_path, benefit_id=benefit_id, lot_id=lot_id)
        started = time.perf_counter()
        with (
            con.cursor() as cur,
            cur.copy(f"COPY card_codes ({', '.join(COLUMNS)}) FROM STDIN") as cp,
        ):
            for row in rows:
                cp.write_row(row)
        con.commit()
        seconds = time.perf_counter() - started
    return {
        "s": seconds,
        "prepare_s": prepare_s,
        "codes": float(len(rows)),
        "rss_mb": _peak_rss_mb(),
    }


def run_once(
    label: str, fn: Callable[[str, str | None], Result], csv_path: str, url: str | None, i: int
) -> Result:
    """One measurement in a fresh spawned process, so its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(fn, csv_path, url).result()
    print(f"  {label} run {i + 1}: " + ", ".join(f"{k}={v:,.2f}" for k, v in result.items()))
    return result


def _median(results: list[Result], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=900.0, help="wall-time budget")
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (starts its own server)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "codes.csv"
        write_codes(csv_path, args.codes)
        size_mb = os.path.getsize(csv_path) / 1e6
        print(f"{args.codes:,} codes, {size_mb:.1f} MB of CSV")
        parts: list[tuple[str, Callable[[str, str | None], Result], Callable[[], str | None]]] = [
            ("perkflow sqlite", perkflow_run, lambda: None),
            ("raw sqlite3 executemany", raw_sqlite_run, lambda: None),
        ]
        server = None
        if args.pg:
            from tests.pg import PgServer

            server = PgServer()
            server.start()
            counter = iter(range(1000))

            def fresh_db() -> str:
                name = f"bench{next(counter)}"
                server.execute(f"CREATE DATABASE {name}")  # type: ignore[union-attr]
                return server.url(name)  # type: ignore[union-attr]

            parts += [
                ("perkflow postgresql", perkflow_run, fresh_db),
                ("raw psycopg COPY", raw_pg_run, fresh_db),
            ]
        try:
            # Interleaved (perkflow, raw, perkflow, raw, …): on a shared machine both sides of a
            # ratio then see the same background load.
            results: dict[str, list[Result]] = {label: [] for label, _, _ in parts}
            for i in range(args.runs):
                if i and time.monotonic() > deadline:
                    print(f"  time budget spent after {i} run(s) of each")
                    break
                for label, fn, urls in parts:
                    results[label].append(run_once(label, fn, str(csv_path), urls(), i))
        finally:
            if server is not None:
                server.stop()
    print("\n| figure | seconds (median) | codes/s | peak RSS |")
    print("|---|---|---|---|")
    for label, rs in results.items():
        s = _median(rs, "s")
        print(f"| {label} | {s:.2f} | {args.codes / s:,.0f} | {_median(rs, 'rss_mb'):.0f} MB |")
        if "prepare_s" in rs[0]:
            prep = _median(rs, "prepare_s")
            print(f"| … of which row preparation outside the clock | {prep:.2f} | — | — |")
        if "rss_before_mb" in rs[0]:
            print(f"| … RSS before the import | — | — | {_median(rs, 'rss_before_mb'):.0f} MB |")
    pairs = [
        ("perkflow sqlite", "raw sqlite3 executemany"),
        ("perkflow postgresql", "raw psycopg COPY"),
    ]
    for ours, raw in pairs:
        if ours in results and raw in results:
            ratio = _median(results[ours], "s") / _median(results[raw], "s")
            with_prep = _median(results[ours], "s") / (
                _median(results[raw], "s") + _median(results[raw], "prepare_s")
            )
            print(f"ratio {ours} / {raw}: {ratio:.2f} (insert only), {with_prep:.2f} (with prep)")


if __name__ == "__main__":
    main()
