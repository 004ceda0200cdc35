"""The `perkflow` command line against real homes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.org.models import ApiKey, StaffUser
from perkflow.subscribers.models import StatusEvent, Subscriber
from tests.pg import PgServer

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return path


def _sessions(home: Path):  # type: ignore[no-untyped-def]
    return make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))


def test_db_upgrade_creates_the_ledger_and_a_secret_in_the_home(home: Path) -> None:
    assert (home / "ledger.sqlite3").exists()
    secret = (home / "secret.key").read_text()
    assert len(secret) >= 32
    # Running again keeps the secret and the data.
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert (home / "secret.key").read_text() == secret


def test_two_homes_never_touch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b"):
        monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / name))
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert (tmp_path / "a" / "secret.key").read_text() != (
        tmp_path / "b" / "secret.key"
    ).read_text()
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "a"))
    result = runner.invoke(app, ["synth", "--subscribers", "500", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "mart" / "subscriber_profile.parquet").exists()
    assert not (tmp_path / "b" / "mart" / "subscriber_profile.parquet").exists()
    with _sessions(tmp_path / "b")() as s:
        assert s.scalars(select(Subscriber)).first() is None


def test_status_change_from_the_cli_is_an_event(home: Path) -> None:
    assert runner.invoke(app, ["synth", "--subscribers", "300", "--seed", "3"]).exit_code == 0
    result = runner.invoke(
        app, ["subscriber", "set-status", "5", "--to", "suspended", "--reason", "unpaid bill"]
    )
    assert result.exit_code == 0, result.output
    with _sessions(home)() as s:
        events = s.scalars(select(StatusEvent).where(StatusEvent.subscriber_id == 5)).all()
        assert [(e.to_status, e.source) for e in events] == [("suspended", "cli")]
    shown = runner.invoke(app, ["subscriber", "show", "5"])
    assert "****" in shown.output and "unpaid bill" in shown.output


def test_bad_cli_input_names_the_field_and_changes_nothing(home: Path) -> None:
    assert runner.invoke(app, ["synth", "--subscribers", "300", "--seed", "3"]).exit_code == 0
    bad_status = runner.invoke(
        app, ["subscriber", "set-status", "5", "--to", "asleep", "--reason", "x"]
    )
    assert bad_status.exit_code == 2 and "--to" in bad_status.output
    unknown = runner.invoke(
        app, ["subscriber", "set-status", "13800000000", "--to", "churned", "--reason", "x"]
    )
    assert unknown.exit_code == 2 and "[subscriber]" in unknown.output
    bad_scope = runner.invoke(
        app, ["apikey", "create", "crm", "--owner", "channel", "--scope", "everything"]
    )
    assert bad_scope.exit_code == 2 and "[scopes]" in bad_scope.output
    weak = runner.invoke(
        app, ["staff", "create", "bob", "hq_admin", "--region", "CN", "--password", "short"]
    )
    assert weak.exit_code == 2 and "[password]" in weak.output
    with _sessions(home)() as s:
        assert s.scalars(select(StatusEvent)).all() == []
        assert s.scalars(select(ApiKey)).all() == []
        assert s.scalars(select(StaffUser)).all() == []


def test_api_key_is_printed_once_and_stored_hashed(home: Path) -> None:
    result = runner.invoke(
        app, ["apikey", "create", "sms", "--owner", "channel", "--scope", "h5:link"]
    )
    assert result.exit_code == 0, result.output
    plaintext = next(w for w in result.output.split() if w.startswith("pk_ch_"))
    with _sessions(home)() as s:
        key = s.scalars(select(ApiKey)).one()
        assert key.key_hash != plaintext and plaintext not in key.key_hash
    listed = runner.invoke(app, ["apikey", "list"])
    assert plaintext not in listed.output


def test_login_link_for_a_subscriber(home: Path) -> None:
    assert runner.invoke(app, ["synth", "--subscribers", "200", "--seed", "3"]).exit_code == 0
    with _sessions(home)() as s:
        sub = s.get(Subscriber, 1)
        assert sub is not None
    from perkflow.kit.crypto import Vault
    from perkflow.subscribers.service import phone_of

    vault = Vault((home / "secret.key").read_text().strip().encode())
    result = runner.invoke(app, ["subscriber", "login-link", phone_of(vault, sub)])
    assert result.exit_code == 0 and "/h5/enter?t=" in result.output


def test_db_upgrade_on_postgresql(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_server.execute("CREATE DATABASE cli_upgrade")
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "pg-home"))
    monkeypatch.setenv("PERKFLOW_DATABASE_URL", pg_server.url("cli_upgrade"))
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "postgresql" in result.output
    assert not (tmp_path / "pg-home" / "ledger.sqlite3").exists()
    result = runner.invoke(app, ["synth", "--subscribers", "300", "--seed", "2"])
    assert result.exit_code == 0, result.output
    with make_session_factory(make_engine(pg_server.url("cli_upgrade")))() as s:
        assert len(s.scalars(select(Subscriber.id)).all()) == 300


def test_demo_sets_up_a_home_and_prints_logins_once(home: Path) -> None:
    first = runner.invoke(app, ["demo", "--subscribers", "400", "--seed", "5", "--no-serve"])
    assert first.exit_code == 0, first.output
    assert "gd.marketer" in first.output and "/h5/enter?t=" in first.output
    with _sessions(home)() as s:
        assert {u.username for u in s.scalars(select(StaffUser))} >= {"admin", "gd.marketer"}
        assert len(s.scalars(select(Subscriber.id)).all()) == 400
    again = runner.invoke(app, ["demo", "--no-serve"])
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "Demo console accounts" not in text and "already has 400 subscribers" in text
    assert "perkflow staff set-password" in text


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fresh"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--subscribers", "50"],
        ["staff", "list"],
        ["subscriber", "show", "1"],
        ["coupons", "housekeeping"],
        ["extract", "list"],
    ],
)
def test_a_command_on_a_never_migrated_home_says_what_to_run(
    fresh_home: Path, argv: list[str]
) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"error: the ledger at sqlite:///{fresh_home.resolve() / 'ledger.sqlite3'} is not set up:"
        " run `perkflow db upgrade`"
    ]
    # Nothing was generated into a home that cannot hold it.
    assert not (fresh_home / "mart" / "subscriber_profile.parquet").exists()
    # What it says to run works, and then the command does.
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["staff", "list"]).exit_code == 0


def test_a_ledger_behind_this_version_is_refused(home: Path) -> None:
    engine = make_engine(f"sqlite:///{home / 'ledger.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    engine.dispose()
    result = runner.invoke(app, ["staff", "list"])
    assert result.exit_code == 1
    assert "is behind this version: run `perkflow db upgrade`" in result.output
    assert "Traceback" not in result.output


def test_an_unusable_setting_is_one_line_naming_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERKFLOW_SMPP_PASSWORD", "longer-than-8")
    result = runner.invoke(app, ["staff", "list"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error [PERKFLOW_SMPP_PASSWORD]: at most 8 characters in SMPP 3.4, got 13"
    )
    assert "longer-than-8" not in result.output  # the secret itself is not echoed


def test_a_domain_error_in_a_command_without_its_own_handler_is_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perkflow.errors import NotFound
    from perkflow.org import service as org

    def refuse(*args: object, **kwargs: object) -> None:
        raise NotFound("no such staff list", field="staff")

    monkeypatch.setattr(org, "list_staff", refuse)
    result = runner.invoke(app, ["staff", "list"])
    assert result.exit_code == 2
    assert result.output.strip() == "error [staff]: no such staff list"
