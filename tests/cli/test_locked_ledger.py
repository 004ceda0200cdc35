"""A CLI command that meets a ledger another process is writing: one line, exit code 1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow import db
from perkflow.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["staff", "create", "bob", "analyst", "--region", "CN", "--password", "pw-long-enough-1"],
        ["member", "load-default"],
    ],
)
def test_a_write_behind_another_writers_lock_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(home))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    # The other command: a job in the middle of its write transaction.
    other = sqlite3.connect(home / "ledger.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        result = runner.invoke(app, args)
    finally:
        other.rollback()
        other.close()
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "database is locked" in lines[0], result.output
    assert runner.invoke(app, args).exit_code == 0  # the same command, once the lock is free
