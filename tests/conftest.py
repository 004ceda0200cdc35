"""Fixtures: a fresh migrated ledger per test on SQLite and on a real PostgreSQL, app and client."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.cli import migrate
from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.settings import Settings
from tests import factories
from tests.pg import PgServer

TEST_SECRET = "test-secret-not-for-production-0123456789abcdef"
_counter = itertools.count()


@pytest.fixture(autouse=True)
def fresh_factory_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's factory ids start over, whatever ran before it in the process.

    A subscriber's id decides its keyed-hash cells (campaign control, universal control group), so
    ids carried over from earlier tests made a test's outcome depend on which tests ran first.
    """
    monkeypatch.setattr(factories, "_ids", itertools.count(1))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    server.start()
    template = "perkflow_template"
    server.execute(f"CREATE DATABASE {template}")
    engine = make_engine(server.url(template))
    migrate.upgrade(engine)
    engine.dispose()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ledger.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def _fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "ledger.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    server: PgServer = request.getfixturevalue("pg_server")
    name = f"t{next(_counter)}"
    # A copy of the migrated template per test: real commits, real concurrency, nothing shared.
    server.execute(f"CREATE DATABASE {name} TEMPLATE perkflow_template STRATEGY FILE_COPY")
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated ledger on each backend in turn."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    return _fresh_url(request.param, request, tmp_path)


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated SQLite ledger (for tests about pages rather than storage)."""
    return _fresh_url("sqlite", request, tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", secret_key=TEST_SECRET)


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return Vault(settings.master_secret)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    eng = make_engine(ledger_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    s = sessions()
    yield s
    s.rollback()
    s.close()


@pytest.fixture
def web_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def web_sessions(web_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(web_engine)


@pytest.fixture
def client(settings: Settings, web_engine: Engine) -> Iterator[TestClient]:
    app = create_app(
        settings.model_copy(update={"database_url": str(web_engine.url)}), engine=web_engine
    )
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
