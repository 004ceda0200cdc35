"""Benchmark flash-sale claims over HTTP against a running server on PostgreSQL.

    .venv/bin/python bench/claims.py                       # 100,000 stock, 8 and 32 clients
    .venv/bin/python bench/claims.py --stock 20000 --clients 8 32 --workers 2
    .venv/bin/python bench/claims.py --stock 20000 --fast-lane on off --rounds 3   # with, without
    .venv/bin/python bench/claims.py --code before=/tmp/before/src after=src --rounds 3

Starts its own PostgreSQL (tests/pg.py: initdb, a free loopback port), migrates a ledger, loads
subscribers and an API key, and creates one flash-sale batch per run (16 stock shards, one coupon
per subscriber; every run claims for the same subscribers, its idempotency keys name its batch).
Then, for each round, for each `--code` (the server importing perkflow from that source tree,
e.g. a `git archive` of an earlier commit: two codes compared in the same run), each
`--fast-lane` setting (the server started with `PERKFLOW_CLAIM_FAST_LANE` on or off) and each
client count:

(a) perkflow: `uvicorn perkflow.main:create_app` (N worker processes) on 127.0.0.1; a load generator
    in its own process keeps C keep-alive connections busy with
    `POST /v1/coupon-batches/{id}/claims` (every request a different subscriber, device and
    idempotency key) until the stock is gone, plus 2 % more requests that must all be "sold out".
    Reported: claims/s (successes over the time to the last success), p50/p99 latency of the
    successful claims, the sold-out answers, and the check: coupons in the ledger == stock,
    no subscriber twice, every slot 0..stock-1 exactly once.
(b) raw PostgreSQL via pgbench with the same client count: a conditional UPDATE on one hot stock
    row + a claim INSERT per transaction, and the same on 16 shard rows chosen at random.

Each round ends with (b) for every client count. The load average (/proc/loadavg) is read before
each run. With several rounds the summary gives the median of each figure and every run's value.
Only loopback addresses are used; every run is bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-not-for-production-0123456789abcdef"


# ---- load generator (runs in its own process) ---------------------------------------------


async def _client(
    host: str,
    port: int,
    path: str,
    key: str,
    tag: str,
    ids: list[int],
    cursor: list[int],
    out: dict[str, Any],
    deadline: float,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
    )
    try:
        while cursor[0] < len(ids) and time.perf_counter() < deadline:
            sid = ids[cursor[0]]
            cursor[0] += 1
            body = json.dumps(
                {"subscriber_id": sid, "idempotency_key": f"{tag}-{sid:08d}"}
            ).encode()
            request = (
                head + f"X-Device-Id: dev-{sid}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            writer.write(request)
            first = await reader.readline()
            if not first:  # the server closed the connection: counted, and a new one opened
                out["codes"]["closed"] = out["codes"].get("closed", 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            status = int(first.split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            payload = await reader.readexactly(length) if length else b""
            ended = time.perf_counter()
            out["codes"][status] = out["codes"].get(status, 0) + 1
            if status == 201:
                out["latencies"].append(ended - started)
                out["last_ok"] = max(out["last_ok"], ended)
            elif status == 409 and b"sold_out" in payload:
                out["sold_out"] += 1
    finally:
        writer.close()


def _load(args: tuple[str, int, str, str, str, list[int], int, float]) -> dict[str, Any]:
    host, port, path, key, tag, ids, clients, max_seconds = args
    out: dict[str, Any] = {"codes": {}, "latencies": [], "last_ok": 0.0, "sold_out": 0}

    async def main() -> None:
        cursor = [0]
        out["start"] = time.perf_counter()
        deadline = out["start"] + max_seconds
        await asyncio.gather(
            *(
                _client(host, port, path, key, tag, ids, cursor, out, deadline)
                for _ in range(clients)
            )
        )
        out["end"] = time.perf_counter()

    cpu = time.process_time()
    # uvloop (installed with uvicorn) when present: the load generator shares the cores with the
    # server and the database, so its own cost per request is kept small (reported as load_cpu_ms).
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    out["cpu_s"] = time.process_time() - cpu
    return out


# ---- CPU accounting (Linux /proc) ---------------------------------------------------------


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of a process, its live descendants and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            # utime, stime, cutime, cstime are fields 14-17 (11-14 after the name).
            total += sum(int(f) for f in fields[11:15]) / tick
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _postmaster_pid(server: Any) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


# ---- setup --------------------------------------------------------------------------------


def _setup_ledger(url: str, subscribers_n: int) -> str:
    from datetime import date

    from perkflow.cli import migrate
    from perkflow.db import make_engine, make_session_factory
    from perkflow.kit.crypto import Vault
    from perkflow.org import service as org
    from perkflow.org.rules import SYSTEM
    from perkflow.subscribers import service as subscribers

    engine = make_engine(url)
    migrate.upgrade(engine)
    vault = Vault(SECRET.encode())
    sessions = make_session_factory(engine)
    with sessions() as s:
        for start in range(0, subscribers_n, 20_000):
            rows = [
                {
                    "id": i,
                    "phone": f"13{i:09d}",
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_fen": 9900,
                    "status": "active",
                    "joined_on": date(2024, 1, 1),
                }
                for i in range(start + 1, min(start + 20_000, subscribers_n) + 1)
            ]
            subscribers.register_subscribers(s, vault=vault, rows=rows)
            s.commit()
        _, key = org.create_api_key(
            s, actor=SYSTEM, name="bench", owner_kind="channel", scopes=["coupons:claim"]
        )
        s.commit()
    engine.dispose()
    return key


def _new_batch(url: str, code: str, stock: int, shards: int) -> int:
    from perkflow.coupons import service as coupons
    from perkflow.coupons.rules import BatchStatus
    from perkflow.coupons.schemas import BatchSpec
    from perkflow.db import make_engine, make_session_factory
    from perkflow.org.rules import SYSTEM

    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        batch = coupons.create_batch(
            s,
            actor=SYSTEM,
            spec=BatchSpec(
                code=code,
                name_zh="秒杀",
                name_en="Flash sale",
                amount_fen=1000,
                stock_total=stock,
                flash_sale=True,
                shard_count=shards,
            ),
        )
        coupons.set_batch_status(s, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE)
        s.commit()
        batch_id = batch.id
    engine.dispose()
    return batch_id


def _check(url: str, batch_id: int, stock: int, successes: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        n, distinct, lo, hi, slots = conn.execute(
            "SELECT count(*), count(DISTINCT subscriber_id), min(slot), max(slot),"
            " count(DISTINCT slot) FROM coupons WHERE batch_id = %s",
            (batch_id,),
        ).fetchone()  # type: ignore[misc]
        remaining = conn.execute(
            "SELECT sum(remaining) FROM coupon_stock_shards WHERE batch_id = %s", (batch_id,)
        ).fetchone()[0]  # type: ignore[index]
    # Every success is one coupon, one subscriber once, one slot once, and stock adds up.
    ok = n == successes and distinct == n and slots == n and n + remaining == stock
    ok = ok and (n == 0 or (lo >= 0 and hi < stock))
    return {"coupons": n, "remaining": remaining, "oversell_free": ok}


def _serve(
    url: str, home: Path, port: int, workers: int, fast_lane: str, src: str | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **({"PYTHONPATH": src} if src else {}),
        "PERKFLOW_DATABASE_URL": url,
        "PERKFLOW_HOME": str(home),
        "PERKFLOW_SECRET_KEY": SECRET,
        "PERKFLOW_CLAIM_FAST_LANE": "true" if fast_lane == "on" else "false",
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "perkflow.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
        # A worker on a saturated machine may answer the supervisor's ping late; not a crash.
        "--timeout-worker-healthcheck", "60",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    import httpx

    deadline = time.monotonic() + 180  # a busy machine imports the app slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def _pgbench(server: Any, dbname: str, clients: int, seconds: int, shards: int) -> float:
    from tests.pg import _bin

    script = Path(tempfile.mkdtemp()) / f"claim{shards}.sql"
    pick = f"\\set s random(0, {shards - 1})\n" if shards > 1 else "\\set s 0\n"
    script.write_text(
        pick + "BEGIN;\n"
        "UPDATE bench_stock SET remaining = remaining - 1 WHERE id = :s AND remaining > 0;\n"
        "INSERT INTO bench_claims (shard, subscriber_id) VALUES (:s, :client_id);\n"
        "END;\n"
    )
    out = subprocess.run(
        [
            _bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
            "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", str(script), dbname,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("tps"):
            return float(line.split("=")[1].split()[0])
    raise RuntimeError(out.stdout + out.stderr)


def _raw_setup(server: Any) -> None:
    server.execute("CREATE DATABASE rawbench")
    import psycopg

    with psycopg.connect(server.admin_dsn.replace("dbname=postgres", "dbname=rawbench")) as c:
        c.execute("CREATE TABLE bench_stock (id int PRIMARY KEY, remaining int NOT NULL)")
        c.execute(
            "CREATE TABLE bench_claims (id bigserial PRIMARY KEY, shard int NOT NULL,"
            " subscriber_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        )
        c.execute("INSERT INTO bench_stock SELECT g, 1000000000 FROM generate_series(0, 15) g")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _run(
    url: str, port: int, key: str, batch_id: int, ids: list[int], clients: int, args: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One load run against the server on `port`: the load generator's tally and the figures."""
    path = f"/v1/coupon-batches/{batch_id}/claims"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        out = pool.apply(
            _load,
            (("127.0.0.1", port, path, key, f"b{batch_id}", ids, clients, args.max_seconds),),
        )
    ok = out["codes"].get(201, 0)
    span = (out["last_ok"] or out["end"]) - out["start"]
    lat = sorted(out["latencies"])
    return out, {
        "claims": ok,
        "seconds": round(span, 2),
        "claims_per_s": round(ok / span) if span else 0,
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
        "sold_out": out["sold_out"],
    }


def _median(rows: list[dict[str, Any]], field: str) -> Any:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stock", type=int, default=100_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per HTTP run")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--fast-lane",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="PERKFLOW_CLAIM_FAST_LANE of the server, each in every round",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, interleaved")
    parser.add_argument(
        "--code",
        nargs="+",
        default=["this"],
        metavar="NAME=SRC",
        help="servers importing perkflow from SRC (e.g. a `git archive` of a commit), each in"
        " every round; `this`: the installed one",
    )
    args = parser.parse_args()

    from tests.pg import PgServer, free_port

    extra = max(50, args.stock // 50)
    server = PgServer()
    server.start()
    home = Path(tempfile.mkdtemp(prefix="perkflow-bench-"))
    results: list[dict[str, Any]] = []
    try:
        server.execute("CREATE DATABASE claims")
        url = server.url("claims")
        started = time.perf_counter()
        need = args.stock + extra
        key = _setup_ledger(url, need)
        print(f"ledger ready: {need:,} subscribers in {time.perf_counter() - started:.1f} s")
        _raw_setup(server)
        ids = list(range(1, need + 1))
        codes = [c.partition("=")[::2] for c in args.code]
        for round_no in range(1, args.rounds + 1):
            for (name, src), lane in itertools.product(codes, args.fast_lane):
                port = free_port()
                proc = _serve(url, home, port, args.workers, lane, src or None)
                try:
                    for clients in args.clients:
                        batch_id = _new_batch(
                            url,
                            f"flash-{round_no}-{name}-{lane}-{clients}",
                            args.stock,
                            args.shards,
                        )
                        loadavg = _loadavg()
                        cpu_before = (_tree_cpu_s(proc.pid), _tree_cpu_s(_postmaster_pid(server)))
                        out, figures = _run(url, port, key, batch_id, ids, clients, args)
                        cpu_after = (_tree_cpu_s(proc.pid), _tree_cpu_s(_postmaster_pid(server)))
                        answered = max(1, sum(out["codes"].values()))
                        row = {
                            "round": round_no,
                            "code": name,
                            "fast_lane": lane,
                            "clients": clients,
                            **figures,
                            # CPU per answered request, whatever else the machine was doing.
                            "server_cpu_ms": round(
                                1000 * (cpu_after[0] - cpu_before[0]) / answered, 3
                            ),
                            "db_cpu_ms": round(1000 * (cpu_after[1] - cpu_before[1]) / answered, 3),
                            "load_cpu_ms": round(1000 * out["cpu_s"] / answered, 3),
                            "loadavg": loadavg,
                            "codes": out["codes"],
                            **_check(url, batch_id, args.stock, figures["claims"]),
                        }
                        results.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            for clients in args.clients:
                one = _pgbench(server, "rawbench", clients, args.pgbench_seconds, 1)
                sharded = _pgbench(server, "rawbench", clients, args.pgbench_seconds, 16)
                row = {
                    "round": round_no,
                    "clients": clients,
                    "raw_one_row_tps": round(one),
                    "raw_16_shards_tps": round(sharded),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"\nmedians of {args.rounds} round(s)\n"
        "code | fast lane | clients | claims/s (each run) | p50 ms | p99 ms"
        " | CPU ms server/db/load | oversell-free | raw 1 row tps | raw 16 shards tps"
        " | raw16/perkflow"
    )
    for (name, _), lane, c in itertools.product(codes, args.fast_lane, args.clients):
        http = [
            r
            for r in results
            if r.get("code") == name and r.get("fast_lane") == lane and r["clients"] == c
        ]
        raw = [r for r in results if "raw_one_row_tps" in r and r["clients"] == c]
        rate, raw16 = _median(http, "claims_per_s"), _median(raw, "raw_16_shards_tps")
        cpu = "/".join(str(_median(http, f)) for f in ("server_cpu_ms", "db_cpu_ms", "load_cpu_ms"))
        print(
            f"{name} | {lane} | {c} | {rate} ({', '.join(str(r['claims_per_s']) for r in http)})"
            f" | {_median(http, 'p50_ms')} | {_median(http, 'p99_ms')} | {cpu} | "
            f"{all(r['oversell_free'] for r in http)} | "
            f"{_median(raw, 'raw_one_row_tps')} | {raw16} | "
            f"{round(raw16 / rate, 1) if rate and raw16 else None}"
        )
    print("load average per run:", "; ".join(r["loadavg"] for r in results if "loadavg" in r))


if __name__ == "__main__":
    main()
