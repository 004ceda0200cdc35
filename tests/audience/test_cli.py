"""`perkflow segment | target-list | optout | extract | control` against a real home."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from perkflow.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-home")
    env = {"PERKFLOW_HOME": str(path), "PERKFLOW_SECRET_KEY": "cli-test-secret-0123456789abcdef"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("PERKFLOW_DATABASE_URL", raising=False)
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["synth", "--subscribers", "800", "--seed", "4"])
        assert result.exit_code == 0, result.output
    return path


@pytest.fixture(autouse=True)
def _env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERKFLOW_HOME", str(home))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", "cli-test-secret-0123456789abcdef")
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)


def test_segment_count_prints_json(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "seg.yaml"
    f.write_text("rule: {column: plan_fee_yuan, op: '>=', value: 99}\nexclude: [churned]\n")
    result = runner.invoke(app, ["segment", "count", str(f)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"count", "by_province"}
    assert out["count"] == sum(out["by_province"].values()) > 0
    j = tmp_path / "all.json"
    j.write_text("{}")
    assert json.loads(runner.invoke(app, ["segment", "count", str(j)]).output)["count"] == 800


def test_an_invalid_definition_exits_2_naming_the_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("rule:\n  all:\n    - {column: plan_fee, op: '>', value: 1}\n")
    result = runner.invoke(app, ["segment", "count", str(f)])
    assert result.exit_code == 2
    assert "rule.all[0].column" in result.output and "plan_fee" in result.output


def test_save_build_optout_and_extract(home: Path, tmp_path: Path) -> None:
    seg = tmp_path / "seg.yaml"
    seg.write_text("name: Everyone active\nrule: {column: status, op: '=', value: active}\n")
    saved = runner.invoke(app, ["segment", "save", str(seg)])
    assert saved.exit_code == 0, saved.output
    sid = saved.output.split()[1]
    assert runner.invoke(app, ["optout", "add", "3", "--channel", "sms"]).exit_code == 0
    assert "3" in runner.invoke(app, ["optout", "list"]).output
    built = runner.invoke(
        app,
        [
            "target-list",
            "build",
            sid,
            "--control-share",
            "0.2",
            "--salt",
            "cli-1",
            "--send-at",
            "2026-11-02T10:00+08:00",
        ],
    )
    assert built.exit_code == 0, built.output
    assert "control" in built.output and "cli-1" in built.output
    assert runner.invoke(app, ["control", "show"]).exit_code == 0

    tpl = tmp_path / "tpl.yaml"
    tpl.write_text(
        "name: Phones of one city\ncolumns: [subscriber_id, phone, city_code]\n"
        "rule: {column: city_code, op: '=', value: {param: city}}\n"
        "parameters: [{name: city, type: string}]\n"
    )
    assert runner.invoke(app, ["extract", "save", str(tpl)]).exit_code == 0
    missing = runner.invoke(app, ["extract", "run", "Phones of one city"])
    assert missing.exit_code == 2 and "params.city" in missing.output
    out = tmp_path / "exports"
    ran = runner.invoke(
        app,
        [
            "extract",
            "run",
            "Phones of one city",
            "-p",
            "city=GD01",
            "--format",
            "parquet",
            "--out",
            str(out),
        ],
    )
    assert ran.exit_code == 0, ran.output
    files = list(out.glob("*.parquet"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600  # the user's own file, owner-only
    table = pq.read_table(files[0])
    assert set(table["city_code"].to_pylist()) == {"GD01"}
    assert all("****" in p for p in table["phone"].to_pylist())  # masked unless --reveal


def test_revealed_exports_in_the_home_are_owner_only_and_pruned_after_their_time(
    home: Path, tmp_path: Path
) -> None:
    tpl = tmp_path / "tpl.yaml"
    tpl.write_text(
        "name: Revealed ZJ\ncolumns: [subscriber_id, phone]\n"
        "rule: {column: province_code, op: '=', value: ZJ}\n"
    )
    assert runner.invoke(app, ["extract", "save", str(tpl)]).exit_code == 0
    exports = home / "exports"
    exports.mkdir(exist_ok=True)
    exports.chmod(0o755)
    ran = runner.invoke(app, ["extract", "run", "Revealed ZJ", "--reveal"])
    assert ran.exit_code == 0, ran.output
    [made] = [p for p in exports.iterdir() if p.name.startswith("revealed-zj-")]
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE(exports.stat().st_mode) == 0o700
    # Young exports stay; one older than PERKFLOW_EXPORT_TTL_S (24 h) goes, audited.
    assert "deleted 0 exports" in runner.invoke(app, ["extract", "prune"]).output
    day_ago = time.time() - 24 * 3600 - 1
    os.utime(made, (day_ago, day_ago))
    pruned = runner.invoke(app, ["extract", "prune"])
    assert pruned.exit_code == 0 and "deleted 1 exports older than 24 h" in pruned.output
    assert not made.exists()
    engine = create_engine(f"sqlite:///{home / 'ledger.sqlite3'}")
    with engine.connect() as conn:
        expired = conn.execute(
            text(
                "SELECT actor_name FROM audit_log"
                " WHERE action = 'extraction.expire' AND target_id = :f"
            ),
            {"f": made.name},
        ).all()
    engine.dispose()
    assert len(expired) == 1
