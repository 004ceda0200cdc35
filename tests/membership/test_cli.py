"""`perkflow member` against a real home with a small synthetic operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow.cli.main import app

runner = CliRunner()


@pytest.fixture
def bare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def home(bare_home: Path) -> Path:
    result = runner.invoke(app, ["synth", "--subscribers", "500", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return bare_home


def test_the_demo_programme_from_load_to_bundles_and_points(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["member", "load-default"])
    assert result.exit_code == 0, result.output
    assert "¥2,835.00" in result.output
    result = runner.invoke(app, ["member", "evaluate"])
    assert result.exit_code == 0, result.output
    assert "evaluated 500" in result.output
    first = runner.invoke(app, ["member", "issue-bundles", "--month", "2026-11"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["member", "issue-bundles", "--month", "2026-11"])
    assert "granted 0," in again.output
    earn = runner.invoke(app, ["member", "earn", "--month", "2026-10"])
    assert earn.exit_code == 0 and "points earned" in earn.output
    assert (
        runner.invoke(app, ["member", "earn", "--month", "2026-10"]).output.count(" 0 points") == 1
    )
    shown = runner.invoke(app, ["member", "show", "1", "--json"])
    assert shown.exit_code == 0, shown.output
    assert "points" in json.loads(shown.output)
    prepaid = runner.invoke(app, ["member", "prepay", "1", "5000", "--key", "cli-1"])
    assert prepaid.exit_code == 0, prepaid.output


def test_a_bad_programme_file_names_the_field_and_exits_2(bare_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers:\n  - {code: silver, name_zh: 银, name_en: S, level: 0}\n", "utf-8")
    result = runner.invoke(app, ["member", "define", str(bad)])
    assert result.exit_code == 2
    assert "tiers[0].level" in result.output
    assert runner.invoke(app, ["member", "issue-bundles", "--month", "2026-13"]).exit_code == 2
