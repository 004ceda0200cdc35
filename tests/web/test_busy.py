"""Sign-ins while a batch job writes the SQLite ledger; a lock that outlasts the wait is a 503."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow import db
from perkflow.kit.crypto import Vault
from perkflow.org.rules import Role
from tests.factories import PASSWORD, make_api_key, make_staff, make_subscribers
from tests.web.helpers import csrf_of

SIGN_INS = 20
# Shorter than the default so the test is quick; still far above what a paced batch holds.
SERVER_WAIT_MS = 3_000


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
