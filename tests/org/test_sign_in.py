"""The sign-in throttle under parallel guesses, and which proxies' addresses are believed."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.cli import home as cli
from perkflow.main import create_app
from perkflow.org.models import LoginAttempt
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.factories import make_staff
from tests.web.helpers import csrf_of

GUESSES = 30


def test_parallel_wrong_guesses_are_verified_only_up_to_the_limit(
    engine: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    app = create_app(settings, engine=engine)
    clients = [TestClient(app, base_url="http://127.0.0.1") for _ in range(GUESSES)]
    tokens = [csrf_of(c.get("/login").text) for c in clients]
    start = threading.Barrier(GUESSES)

    def guess(i: int) -> int:
        start.wait()
        r = clients[i].post(
            "/login",
            data={"username": "admin", "password": f"wrong-guess-{i}", "csrf_token": tokens[i]},
            follow_redirects=False,
        )
        return r.status_code

    with ThreadPoolExecutor(GUESSES) as pool:
        answers = Counter(pool.map(guess, range(GUESSES)))
    limit = settings.login_max_failures
    # Every verified password leaves one attempt row; refused tries never reach argon2.
    with sessions() as s:
        verified = s.scalar(select(func.count()).select_from(LoginAttempt))
    assert verified == limit == 5
    assert answers == {401: limit, 429: GUESSES - limit}


def _serve_kwargs(
    monkeypatch: pytest.MonkeyPatch, home: Path, url: str, proxies: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setenv("PERKFLOW_HOME", str(home))
    monkeypatch.setenv("PERKFLOW_DATABASE_URL", url)
    monkeypatch.setenv("PERKFLOW_TRUSTED_PROXIES", proxies)
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kw: seen.update(kw))
    cli.serve(host=None, port=None)
    return seen


def test_forwarded_addresses_are_believed_only_from_configured_proxies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str
) -> None:
    # uvicorn's default believes X-Forwarded-For from 127.0.0.1: any local caller could pick
    # the address the per-address sign-in limit counts.
    plain = _serve_kwargs(monkeypatch, tmp_path / "home", sqlite_url, "")
    assert uvicorn.Config(app=None, **plain).proxy_headers is False
    proxied = _serve_kwargs(monkeypatch, tmp_path / "home", sqlite_url, "10.0.0.5,10.0.0.6")
    config = uvicorn.Config(app=None, **proxied)
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == "10.0.0.5,10.0.0.6"
