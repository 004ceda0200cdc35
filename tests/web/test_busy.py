"""Sign-ins while a batch job writes the SQLite ledger; a lock that outlasts the wait is a 503."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow import db
from perkflow.cli.main import app as cli
from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.coupons.factories import make_batch
from tests.factories import PASSWORD, make_api_key, make_staff, make_subscribers
from tests.live import LiveServer
from tests.web.helpers import csrf_of

SIGN_INS = 20
# Shorter than the default so the test is quick; still far above what a paced batch holds.
SERVER_WAIT_MS = 3_000


@pytest.fixture
def batch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a synthetic operator, the default programme and its members evaluated."""
    home = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(home))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    runner = CliRunner()
    for args in (
        ["db", "upgrade"],
        ["synth", "--subscribers", "6000", "--seed", "3"],
        ["member", "load-default"],
        ["member", "evaluate"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return home


def _points_written(ledger: Path) -> int:
    with sqlite3.connect(ledger) as conn:
        return int(conn.execute("SELECT count(*) FROM points_entries").fetchone()[0])


def test_sign_ins_succeed_while_a_batch_job_writes_the_ledger(
    batch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server gives up on the lock sooner than by default: before batch jobs committed in
    # short transactions, one chunk held it for many seconds and sign-ins answered 500.
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", SERVER_WAIT_MS)
    settings = Settings()
    engine = make_engine(settings.ledger_url)
    with make_session_factory(engine)() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    server = LiveServer(create_app(settings, engine=engine))
    base = server.url
    ledger = batch_home / "ledger.sqlite3"
    job = subprocess.Popen(
        [Path(sys.executable).with_name("perkflow"), "member", "earn", "--month", "2026-10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PERKFLOW_HOME": str(batch_home)},
    )
    answers: Counter[int] = Counter()
    during = 0
    try:
        while job.poll() is None and during < SIGN_INS:
            writing = _points_written(ledger) > 0
            with httpx.Client(base_url=base, timeout=30) as c:
                token = csrf_of(c.get("/login").text)
                r = c.post(
                    "/login",
                    data={"username": "admin", "password": PASSWORD, "csrf_token": token},
                )
            answers[r.status_code] += 1
            # Counted only once the job writes and while it still runs: a sign-in that overlapped.
            during += writing and job.poll() is None
            if not writing:
                time.sleep(0.05)
        # Enough overlap seen: the job need not finish (it resumes where it stopped).
        failed = job.poll()
        job.kill()
        output, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
        server.stop()
        engine.dispose()
    assert answers == {303: sum(answers.values())}, answers
    # Only sign-ins made while the job was writing count: enough of them must have overlapped it.
    assert during >= SIGN_INS, (during, failed, answers, output)


@pytest.fixture
def held_lock(web_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Another connection holds the ledger's write lock; the app's connections wait 0.2 s for it."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    web_engine.dispose()  # connections made from here on get the short wait
    path = web_engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield
    other.rollback()
    other.close()


def test_a_write_that_cannot_get_the_lock_is_a_503_with_retry_after(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    request: pytest.FixtureRequest,
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        [sid] = make_subscribers(s, vault, [("13812345678", "GD", "GD01")])
        headers = {"authorization": f"Bearer {make_api_key(s, scopes=['subscribers:status'])}"}
    token = csrf_of(client.get("/login").text)
    request.getfixturevalue("held_lock")
    started = time.monotonic()
    page = client.post(
        "/login",
        data={"username": "admin", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
        headers={"accept-language": "zh-CN"},
    )
    assert time.monotonic() - started >= 0.2  # it waited for the lock before giving up
    assert page.status_code == 503, page.text
    assert page.headers["retry-after"] == "1"
    assert "账本正忙" in page.text
    api = client.post(
        f"/v1/subscribers/{sid}/status",
        headers=headers,
        json={"status": "suspended", "reason": "unpaid"},
    )
    assert api.status_code == 503, api.text
    assert api.headers["retry-after"] == "1"
    assert api.json()["error"]["code"] == "busy"


def test_a_flash_sale_claim_that_cannot_get_the_lock_is_a_503_too(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    request: pytest.FixtureRequest,
) -> None:
    with web_sessions() as s:
        [sid] = make_subscribers(s, vault, [("13812345678", "GD", "GD01")])
        batch = make_batch(s)
        key = make_api_key(s, scopes=["coupons:claim"])
    request.getfixturevalue("held_lock")
    # The claim lane answers before the framework: it must map a held lock the same way.
    r = client.post(
        f"/v1/coupon-batches/{batch.id}/claims",
        headers={"authorization": f"Bearer {key}"},
        json={"subscriber_id": sid, "idempotency_key": "busy-claim-1"},
    )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "busy"
