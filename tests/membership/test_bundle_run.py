"""The monthly bundle run: set-based chunks, stopped by Ctrl-C between them, resumed by a rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.grants.models import Grant
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership import tasks
from perkflow.membership.models import BundleGrant
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from tests.conftest import TEST_SECRET
from tests.membership.helpers import ZONE, frozen

PER_MEMBER = 6  # November 2026 for silver: cloud storage, coupons; 2026's visits, SIM swap, data


def _silver(sessions: sessionmaker[Session], vault: Vault, n: int) -> None:
    with sessions() as s:
        membership.load_default_program(s, actor=SYSTEM, vault=vault)
        subscribers.register_subscribers(
            s,
            vault=vault,
            rows=[
                {
                    "id": i,
                    "phone": f"1391{i:07d}",
                    "province_code": "GD",
                    "city_code": "GD01",
                    "plan_fee_fen": 9900,
                    "status": "active",
                    "joined_on": date(2024, 5, 1),
                }
                for i in range(1, n + 1)
            ],
        )
        membership.apply_tier_targets(
            s,
            actor=SYSTEM,
            targets=dict.fromkeys(range(1, n + 1), 1),
            reason="load",
            source="test",
        )
        s.commit()


def test_a_chunk_costs_the_same_statements_for_ten_members_or_a_hundred(
    engine: Engine, sessions: sessionmaker[Session], vault: Vault
) -> None:
    """Set-based: the statements of a chunk do not grow with its members (one per table)."""
    _silver(sessions, vault, 110)
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    per_chunk = []
    with frozen():
        for size in (10, 100):
            statements.clear()
            event.listen(engine, "before_cursor_execute", seen)
            try:
                with sessions() as s:
                    page = membership.members_page(s, after=0 if size == 10 else 10, limit=size)
                    count = membership.issue_bundles_for(
                        s, actor=SYSTEM, members=page, month="2026-11", zone=ZONE
                    )
                    s.commit()
            finally:
                event.remove(engine, "before_cursor_execute", seen)
            assert count.issued == PER_MEMBER * size
            per_chunk.append(len(statements))
    # The grants, events, counters and bundle rows go straight to the driver, not through
    # before_cursor_execute; what is counted here are the reads and the checks around them.
    assert per_chunk[0] == per_chunk[1], per_chunk
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Grant)) == PER_MEMBER * 110


def _perkflow() -> str:
    return str(Path(sys.executable).with_name("perkflow"))


def test_ctrl_c_stops_between_chunks_within_a_second_and_a_rerun_finishes_the_month(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vault: Vault
) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PERKFLOW_HOME": str(home),
        "PERKFLOW_SECRET_KEY": TEST_SECRET,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PERKFLOW_DATABASE_URL", None)
    for k in ("PERKFLOW_HOME", "PERKFLOW_SECRET_KEY"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(f"sqlite:///{home / 'ledger.sqlite3'}")
    sessions = make_session_factory(engine)
    members = 4000
    _silver(sessions, Vault(TEST_SECRET.encode()), members)
    run = [_perkflow(), "member", "issue-bundles", "--month", "2026-11", "--chunk", "20"]
    proc = subprocess.Popen(
        [*run, "--every", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # no terminal: one plain progress line per chunk
        lines.append(line)
        if line.startswith("bundles 2026-11: 200 /"):
            break
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("stopped"):
            break
    # The run stops after the chunk in hand (the interpreter's own exit is not counted).
    took = time.monotonic() - asked
    rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert took < 1.0, took
    assert "run the same command again to continue: nothing is granted twice" in output
    with sessions() as s:
        done = s.execute(
            select(BundleGrant.subscriber_id, func.count()).group_by(BundleGrant.subscriber_id)
        ).all()
        grants = s.scalar(select(func.count()).select_from(Grant))
    # Whole chunks only: every member touched has all six benefits, and each its grant.
    assert done and all(n == PER_MEMBER for _, n in done)
    assert len(done) % 20 == 0 and len(done) < members
    assert grants == PER_MEMBER * len(done)
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"granted {PER_MEMBER * (members - len(done)):,}," in again.stdout
    assert f"already granted {PER_MEMBER * len(done):,}," in again.stdout
    with sessions() as s:
        keys = s.scalars(select(Grant.idempotency_key)).all()
        assert len(keys) == len(set(keys)) == PER_MEMBER * members
        assert s.scalar(select(func.count()).select_from(BundleGrant)) == PER_MEMBER * members
    engine.dispose()


def test_the_task_stops_before_the_next_chunk_when_asked(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    _silver(sessions, vault, 30)
    stop = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        stop.set()  # as if Ctrl-C came during the first chunk

    with frozen():
        first = tasks.issue_bundles(
            sessions, month="2026-11", zone=ZONE, chunk=10, progress=progress, stop=stop
        )
        rest = tasks.issue_bundles(sessions, month="2026-11", zone=ZONE, chunk=10)
    assert (first.stopped, first.issued, calls) == (True, PER_MEMBER * 10, [10])
    assert (rest.stopped, rest.issued, rest.replayed) == (False, PER_MEMBER * 20, PER_MEMBER * 10)
