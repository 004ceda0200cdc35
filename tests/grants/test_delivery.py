"""Fulfilment through a real partner simulator on loopback: chaos, callbacks, a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.grants import service as grants
from perkflow.grants.models import Grant, OutboxMessage, PartnerCallback
from perkflow.grants.partner_sim import PartnerSim, SimConfig, SimServer
from perkflow.grants.tasks import OutboxWorker, WorkerConfig
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import make_benefit, make_partner, make_subscribers
from tests.grants.helpers import SECRET, ZONE, fulfilled_events, phones, stock_of
from tests.pg import free_port


@pytest.fixture
def partner_server() -> Iterator[SimServer]:
    server = SimServer(PartnerSim(SimConfig(secret=SECRET)), port=free_port()).start()
    yield server
    server.stop()


def _serve(settings: Settings, engine: Engine) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                settings.model_copy(update={"database_url": str(engine.url)}), engine=engine
            ),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "perkflow did not start"
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def _issue_many(s: Session, vault: Vault, *, benefit_id: int, n: int) -> list[int]:
    sids = make_subscribers(s, vault, phones(n))
    ids = []
    for i, sid in enumerate(sids):
        issued = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=sid,
            benefit_id=benefit_id,
            source="test",
            idempotency_key=f"chaos-{i}",
            zone=ZONE,
        )
        ids.append(issued.grant.id)
    s.commit()
    return ids


def _settled(s: Session) -> bool:
    s.expire_all()
    pending_grants = s.scalar(
        select(func.count()).select_from(Grant).where(Grant.status == "pending")
    )
    pending_messages = s.scalar(
        select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "pending")
    )
    return pending_grants == 0 and pending_messages == 0


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_chaos_every_grant_ends_fulfilled_or_failed_with_stock_back_never_twice(
    engine: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
    vault: Vault,
    partner_server: SimServer,
) -> None:
    sim = partner_server.sim
    sim.config = SimConfig(
        secret=SECRET,
        latency_ms=5,
        error_rate=0.3,
        timeout_rate=0.1,
        timeout_sleep_s=0.8,
        accept_rate=0.3,
        duplicate_callbacks=0.5,
        callback_delay_ms=30,
        seed=7,
    )
    n, stock = 60, 80
    with sessions() as s:
        partner = make_partner(
            s,
            connector_url=partner_server.url,
            secret=SECRET,
            vault=vault,
            max_attempts=4,
            timeout_ms=250,
            supports_revoke=True,
        )
        benefit = make_benefit(s, partner=partner, stock=stock)
        benefit_id = benefit.id
        ids = _issue_many(s, vault, benefit_id=benefit_id, n=n)
    base, server, thread = _serve(settings, engine)
    worker = OutboxWorker(
        sessions=sessions,
        vault=vault,
        config=WorkerConfig(
            callback_base=base,
            lease_s=10,
            concurrency=8,
            backoff_base_s=0.05,
            callback_wait_s=0.3,
            breaker_threshold=4,
            breaker_cooldown_s=0.2,
            idle_s=0.05,
        ),
    )
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, kwargs={"stop": stop, "max_seconds": 45})
    runner.start()
    try:
        deadline = time.monotonic() + 45
        with sessions() as s:
            while not _settled(s):
                assert time.monotonic() < deadline, f"not settled: {worker.tally}"
                time.sleep(0.2)
        time.sleep(0.5)  # late duplicate callbacks arrive and must change nothing
    finally:
        stop.set()
        runner.join(timeout=30)
        worker.close()
        server.should_exit = True
        thread.join(timeout=10)
    stats = sim.stats()
    with sessions() as s:
        rows = s.scalars(select(Grant).where(Grant.id.in_(ids))).all()
        by_status = {g.status for g in rows}
        fulfilled = [g for g in rows if g.status == "fulfilled"]
        failed = [g for g in rows if g.status == "failed"]
        # None lost: every grant ended, and only in one of the two ends.
        assert len(rows) == n and by_status <= {"fulfilled", "failed"}
        assert len(fulfilled) + len(failed) == n and len(fulfilled) > n // 2
        # Failed grants gave their stock back.
        assert stock_of(s, benefit_id) == stock - len(fulfilled)
        # Never fulfilled twice: one event per grant here, one order per grant at the partner.
        assert all(fulfilled_events(s, g.id) == 1 for g in fulfilled)
        assert stats["max_orders_per_grant"] <= 1 and stats["max_orders_per_key"] <= 1
        assert all(g.partner_order_id for g in fulfilled)
        # A failed grant's possible order (a stalled attempt) was cancelled at the partner.
        orders = sim.state.orders
        for g in failed:
            revoke = s.scalar(
                select(OutboxMessage.status).where(
                    OutboxMessage.grant_id == g.id, OutboxMessage.kind == "revoke"
                )
            )
            order = orders.get(g.idempotency_key)
            assert revoke in ("done", "dead")
            assert revoke == "dead" or order is None or order.state == "revoked"
        callbacks = s.scalar(select(func.count()).select_from(PartnerCallback))
        dead = grants.dead_letters(s, actor=SYSTEM, limit=100)[1]
        assert dead >= len(failed)
    # The chaos really happened: errors, stalls, callbacks, and duplicates among them.
    assert stats["errors"] > 0 and stats["timeouts"] > 0
    assert callbacks is not None and 0 < callbacks < stats["callbacks_sent"]
    assert worker.tally["retry"] > 0


@pytest.fixture
def home(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "worker-home"
    path.mkdir()
    shutil.copyfile(sqlite_template, path / "ledger.sqlite3")
    return path


def test_a_worker_killed_mid_delivery_is_resumed_from_the_outbox(
    home: Path, partner_server: SimServer
) -> None:
    sim = partner_server.sim
    settings = Settings(home=home, secret_key=TEST_SECRET)
    vault = Vault(settings.master_secret)
    engine = make_engine(settings.ledger_url)
    sessions = make_session_factory(engine)
    sim.config = replace(sim.config, latency_ms=1500)  # every delivery is in flight a while
    with sessions() as s:
        partner = make_partner(
            s,
            connector_url=partner_server.url,
            secret=SECRET,
            vault=vault,
            timeout_ms=10_000,
        )
        benefit = make_benefit(s, partner=partner, stock=10)
        ids = _issue_many(s, vault, benefit_id=benefit.id, n=4)
    env = {
        **os.environ,
        "PERKFLOW_HOME": str(home),
        "PERKFLOW_SECRET_KEY": TEST_SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PERKFLOW_DATABASE_URL", None)
    # The installed `perkflow` script, beside the interpreter running the tests.
    perkflow = str(Path(sys.executable).parent / "perkflow")
    cli = [perkflow, "grants", "worker", "--callback-base", "http://127.0.0.1:9"]
    first = subprocess.Popen(
        [*cli, "--lease-s", "3"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while sim.stats()["requests"] < 4:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the worker never called the partner"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-delivery: the partner is still answering
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    with sessions() as s:
        messages = s.scalars(select(OutboxMessage)).all()
        assert all(m.status == "pending" and m.leased_by for m in messages)
        assert all(m.attempts == 1 for m in messages)
        assert {g.status for g in s.scalars(select(Grant))} == {"pending"}
        lease_end = max(clock.as_utc(m.leased_until) for m in messages if m.leased_until)
    # The partner finishes the orders the dead worker asked for; the answers are lost.
    sim.config = replace(sim.config, latency_ms=0)
    while clock.now() <= lease_end:
        time.sleep(0.1)
    second = subprocess.run(
        [*cli, "--once", "--max-seconds", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert second.returncode == 0, second.stderr
    with sessions() as s:
        assert {g.status for g in s.scalars(select(Grant).where(Grant.id.in_(ids)))} == {
            "fulfilled"
        }
        assert {(m.status, m.attempts) for m in s.scalars(select(OutboxMessage))} == {("done", 2)}
    stats = sim.stats()
    # Both workers called the partner for every grant; the idempotency key made it one order.
    assert stats["requests"] >= 8 and stats["orders"] == 4 and stats["max_orders_per_grant"] == 1
    engine.dispose()
