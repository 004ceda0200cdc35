"""Where one flash-sale claim's time goes: a serial in-process profile on PostgreSQL.

    .venv/bin/python bench/claim_profile.py --claims 1000
    py-spy record -f raw -o claim.txt --threads -- .venv/bin/python bench/claim_profile.py

Starts its own PostgreSQL (tests/pg.py), migrates a ledger, loads subscribers, an API key and a
16-shard flash-sale batch, builds the app in-process (`create_app`) and sends claims one at a
time through Starlette's TestClient (the whole ASGI stack, without sockets). Reported per claim:
wall time, the number of SQL statements and the time spent inside them (cursor execute, i.e.
psycopg + the server round trip), and commits. For a function-level picture run it under py-spy
(every thread is sampled; cProfile would see only the client's thread).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=2000)
    args = parser.parse_args()

    from claims import SECRET, _new_batch, _setup_ledger  # type: ignore[import-not-found]
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from perkflow.db import make_engine
    from perkflow.main import create_app
    from perkflow.settings import Settings
    from tests.pg import PgServer

    server = PgServer()
    server.start()
    try:
        server.execute("CREATE DATABASE claims")
        url = server.url("claims")
        n = args.claims * 2 + 100
        key = _setup_ledger(url, n)
        batch_id = _new_batch(url, "flash-prof", n, 16)
        engine = make_engine(url)
        stats: Counter[str] = Counter()
        spent = {"sql": 0.0}

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
            conn.info["t0"] = time.perf_counter()
            stmt_kind = " ".join(stmt.split()[:3])[:60]
            stats[stmt_kind] += 1

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
            spent["sql"] += time.perf_counter() - conn.info["t0"]

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            stats["COMMIT"] += 1

        home = Path(tempfile.mkdtemp(prefix="perkflow-prof-"))
        settings = Settings(home=home, database_url=url, secret_key=SECRET)
        app = create_app(settings, engine=engine)
        headers = {"Authorization": f"Bearer {key}"}
        path = f"/v1/coupon-batches/{batch_id}/claims"
        with TestClient(app) as client:

            def run(first: int, count: int) -> float:
                t0 = time.perf_counter()
                for sid in range(first, first + count):
                    r = client.post(
                        path,
                        json={"subscriber_id": sid, "idempotency_key": f"prof-{sid:06d}"},
                        headers={**headers, "X-Device-Id": f"dev-{sid}"},
                    )
                    assert r.status_code == 201, r.text
                return time.perf_counter() - t0

            run(1, 50)  # warm-up: caches, prepared statements, pool
            stats.clear()
            spent["sql"] = 0.0
            wall = run(51, args.claims)
            per = wall / args.claims * 1000
            print(f"{args.claims} serial claims over TestClient: {per:.2f} ms a claim")
            print(f"  inside SQL (cursor.execute): {spent['sql'] / args.claims * 1000:.2f} ms")
            for stmt, count in stats.most_common():
                print(f"  {count / args.claims:5.2f} × {stmt}")
        engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
