"""Benchmark campaign dispatch through the whole pipeline, beside raw SQLite statements.

    .venv/bin/python bench/dispatch.py --subscribers 200000 --runs 1
    .venv/bin/python bench/dispatch.py --subscribers 1000000 --events 500

In a fresh home (embedded default: SQLite ledger + DuckDB mart) it generates a synthetic operator
of N subscribers, then:

(a) batch dispatch — a campaign over every active subscriber (10% control, in-app channel) is
    created, approved and started; `tasks.run_worker` plans the wave (target list → control split →
    contact policy → variant match → contact rows) and dispatches it (lease, render, inbox insert,
    settle). Reported: contacts per second over the target list (planning and sending apart);
    beside raw sqlite3 doing the least the same work needs: insert the contact rows (control
    rows held) with one executemany into a table indexed on (status, id), then per batch of 1,000
    one SELECT of the next queued ids, one UPDATE to lease, one executemany INSERT of the inbox
    rows and one executemany UPDATE to settle, in a scratch file beside the ledger.
(b) trigger latency — a running in-app trigger campaign listens to `recharge`; for each of
    `--events` events: `record_event` (committed; an in-app contact policy allows is delivered in
    that transaction), then — only if the contact is not delivered yet — one dispatch batch;
    latency from before the event to the contact's inbox message committed. p50 and p99.
Only loopback and files under a temporary directory are used; loops are bounded by counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup(home: Path, n: int) -> None:
    os.environ["PERKFLOW_HOME"] = str(home)
    os.environ.pop("PERKFLOW_DATABASE_URL", None)
    from typer.testing import CliRunner

    from perkflow.cli.main import app

    out = CliRunner().invoke(
        app, ["demo", "--subscribers", str(n), "--no-serve", "--no-campaign", "--seed", "7"]
    )
    if out.exit_code != 0:
        raise SystemExit(out.output)


def _batch(ctx: Any) -> dict[str, float]:
    from perkflow.audience import service as audience
    from perkflow.campaigns import service as campaigns
    from perkflow.campaigns import tasks
    from perkflow.channels.inbox import InAppChannel
    from perkflow.org.rules import SYSTEM, Actor, Role

    author = Actor(kind="staff", id="a", name="bench-a", role=Role.HQ_ADMIN, scope_path="CN")
    approver = Actor(kind="staff", id="b", name="bench-b", role=Role.HQ_ADMIN, scope_path="CN")
    with ctx.uow() as s:
        audience.set_universal_control(s, actor=SYSTEM, share_bp=0, rotation_days=90)
        seg = audience.create_segment(
            s, mart=ctx.mart, actor=author, name="everyone active", raw={"exclude": ["churned"]}
        )
        raw = {
            "name": "bench batch",
            "segment_id": seg.id,
            "goal": {"kind": "order", "window_days": 7},
            "variants": [
                {
                    "key": "A",
                    "channel": "in_app",
                    "subject": "{{ campaign_name }}",
                    "body": "Your {{ plan_fee_yuan }}-yuan plan in {{ province }}",
                    "match": [{"column": "plan_fee_yuan", "op": ">=", "value": 129}],
                },
                {"key": "B", "channel": "in_app", "subject": "Hi", "body": "A gift for you"},
            ],
            "control_share": 10,
            "throttle": {"in_app": 100_000},
        }
        c = campaigns.create_campaign(s, actor=author, mart=ctx.mart, raw=raw)
        campaigns.submit_campaign(s, actor=author, campaign_id=c.id)
        campaigns.approve_campaign(s, actor=approver, campaign_id=c.id)
        campaigns.start_campaign(s, actor=author, mart=ctx.mart, vault=ctx.vault, campaign_id=c.id)
        s.commit()
    d = tasks.Dispatcher(
        channels={"in_app": InAppChannel()}, vault=ctx.vault, settings=ctx.settings
    )
    started = time.perf_counter()
    planned_at: list[float] = []

    def on_round(report: tasks.WorkerReport) -> None:
        if report.planned and not planned_at:
            planned_at.append(time.perf_counter())

    report = tasks.run_worker(
        ctx.sessions, d, mart=ctx.mart, batch_size=1000, idle_s=0.01, on_round=on_round
    )
    total = time.perf_counter() - started
    plan_s = (planned_at[0] if planned_at else started) - started
    return {
        "contacts": float(report.planned),
        "sent": float(report.dispatch.sent),
        "total_s": total,
        "plan_s": plan_s,
        "per_s": report.planned / total,
    }


def _raw(path: Path, n: int) -> float:
    """The least SQL the same work needs, through sqlite3, in a scratch file beside the ledger."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, sid INTEGER, cell TEXT, status TEXT, "
        "lease REAL, ref TEXT, UNIQUE(sid))"
    )
    # Like the ledger's (wave_id, status, id) index: each batch finds the next queued rows without
    # reading past the ones already sent (without it the raw side is quadratic in the list).
    con.execute("CREATE INDEX c_status_id ON c (status, id)")
    con.execute(
        "CREATE TABLE i (id INTEGER PRIMARY KEY, sid INTEGER, cid INTEGER UNIQUE, body TEXT)"
    )
    started = time.perf_counter()
    with con:
        con.executemany(
            "INSERT INTO c (sid, cell, status) VALUES (?, ?, ?)",
            (
                (s, "control", "held") if s % 10 == 0 else (s, "target", "queued")
                for s in range(1, n + 1)
            ),
        )
    while True:
        with con:
            ids = [
                r[0]
                for r in con.execute(
                    "SELECT id FROM c WHERE status = 'queued' ORDER BY id LIMIT 1000"
                )
            ]
            if not ids:
                break
            marks = ",".join("?" * len(ids))
            con.execute(f"UPDATE c SET status = 'sending', lease = 1 WHERE id IN ({marks})", ids)
        with con:
            con.executemany(
                "INSERT INTO i (sid, cid, body) VALUES (?, ?, ?)",
                ((i, i, f"Your plan {i}") for i in ids),
            )
            con.executemany(
                "UPDATE c SET status = 'delivered', ref = ? WHERE id = ? AND status = 'sending'",
                ((f"inbox-{i}", i) for i in ids),
            )
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def _trigger(ctx: Any, events: int) -> tuple[float, float]:
    from sqlalchemy import select

    from perkflow.campaigns import service as campaigns
    from perkflow.campaigns import tasks
    from perkflow.campaigns.models import CampaignContact
    from perkflow.channels.inbox import InAppChannel
    from perkflow.org.rules import SYSTEM, Actor, Role

    author = Actor(kind="staff", id="a", name="bench-a", role=Role.HQ_ADMIN, scope_path="CN")
    approver = Actor(kind="staff", id="b", name="bench-b", role=Role.HQ_ADMIN, scope_path="CN")
    with ctx.uow() as s:
        raw = {
            "name": "bench trigger",
            "goal": {"kind": "order", "window_days": 7},
            "trigger": {"events": ["recharge"]},
            "variants": [{"key": "A", "channel": "in_app", "subject": "Hi", "body": "Thanks"}],
            "control_share": 10,
            "throttle": {"in_app": 100_000},
        }
        c = campaigns.create_campaign(s, actor=author, mart=ctx.mart, raw=raw)
        campaigns.submit_campaign(s, actor=author, campaign_id=c.id)
        campaigns.approve_campaign(s, actor=approver, campaign_id=c.id)
        campaigns.start_campaign(s, actor=author, mart=ctx.mart, vault=ctx.vault, campaign_id=c.id)
        campaign_id = c.id
        s.commit()
    d = tasks.Dispatcher(
        channels={"in_app": InAppChannel()}, vault=ctx.vault, settings=ctx.settings
    )
    latencies = []
    from datetime import UTC, datetime

    for k in range(events):
        sid = 10 + k * 7
        t0 = time.perf_counter()
        with ctx.uow() as s:
            campaigns.record_event(
                s,
                actor=SYSTEM,
                vault=ctx.vault,
                type="recharge",
                subscriber_id=sid,
                occurred_at=datetime.now(UTC),
                idempotency_key=f"bench-{k}",
                attributes={"amount_yuan": 50},
            )
            s.commit()

        def status_of(sid: int = sid) -> str | None:
            with ctx.uow() as s:
                return s.scalar(
                    select(CampaignContact.status).where(
                        CampaignContact.campaign_id == campaign_id,
                        CampaignContact.subscriber_id == sid,
                    )
                )

        status = status_of()
        if status == "queued":  # left to the worker (over the rate, or a deferral)
            tasks.dispatch_batch(ctx.sessions, d, batch_size=200)
            status = status_of()
        if status == "delivered":
            latencies.append(time.perf_counter() - t0)
    latencies.sort()
    if not latencies:
        return float("nan"), float("nan")
    return statistics.median(latencies), latencies[
        min(len(latencies) - 1, int(0.99 * len(latencies)))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        tmp = Path(tempfile.mkdtemp(prefix="pf-dispatch-"))
        try:
            _setup(tmp / "home", args.subscribers)
            from perkflow.cli.context import get_context

            ctx = get_context()
            b = _batch(ctx)
            raw_s = _raw(tmp / "raw.sqlite3", int(b["contacts"]))
            p50, p99 = _trigger(ctx, args.events)
            rows.append((b, raw_s, p50, p99))
            print(
                f"run {run + 1}: {int(b['contacts']):,} contacts in {b['total_s']:.1f} s "
                f"(plan {b['plan_s']:.1f} s) = {b['per_s']:,.0f}/s; raw sqlite3 {raw_s:.1f} s "
                f"= {b['contacts'] / raw_s:,.0f}/s (ratio {b['total_s'] / raw_s:.1f}); "
                f"trigger p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms",
                flush=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    per_s = statistics.median(r[0]["per_s"] for r in rows)
    print(f"median contacts/s {per_s:,.0f}")


if __name__ == "__main__":
    main()
