"""`perkflow campaign …` against a real home: create from YAML, approve as a second person, run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.campaigns.helpers import everyone, write_profile
from tests.factories import PASSWORD, make_staff

runner = CliRunner()
SECRET = "cli-test-secret-0123456789abcdef"

SPEC = """\
name: Autumn video month
segment_id: {segment}
goal: {{kind: claim, window_days: 14}}
offer: {{kind: none, name: 视频会员月卡}}
control_share: 10
variants:
  - key: A
    channel: in_app
    subject: "{{{{ offer_name }}}}"
    body: "Your {{{{ plan_fee_yuan }}}}-yuan plan earns a gift"
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli-home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", SECRET)
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("PERKFLOW_PASSWORD", PASSWORD)  # `--as USER` proves who acts
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    return path


def test_create_approve_start_work_progress(home: Path, tmp_path: Path) -> None:
    settings = Settings(home=home, secret_key=SECRET)
    mart = Mart(settings.mart_dir)
    write_profile(mart, 40)
    engine = make_engine(settings.ledger_url)
    with make_session_factory(engine)() as s:
        make_staff(s, username="author", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="boss", role=Role.HQ_ADMIN, region="CN")
        seg = everyone(s, mart)
    engine.dispose()
    f = tmp_path / "campaign.yaml"
    f.write_text(SPEC.format(segment=seg), encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.format(segment=seg).replace("window_days: 14", "window_days: 400"))
    result = runner.invoke(app, ["campaign", "create", str(bad), "--as", "author"])
    assert result.exit_code == 2 and "goal.window_days" in result.output
    result = runner.invoke(app, ["campaign", "create", str(f), "--as", "author"])
    assert result.exit_code == 0, result.output
    assert "campaign 1" in result.output and "draft" in result.output
    assert runner.invoke(app, ["campaign", "submit", "1", "--as", "author"]).exit_code == 0
    refused = runner.invoke(app, ["campaign", "approve", "1", "--as", "author"])
    assert refused.exit_code == 2 and "second person" in refused.output
    ok = runner.invoke(app, ["campaign", "approve", "1", "--as", "boss", "--note", "fine"])
    assert ok.exit_code == 0 and "approved" in ok.output, ok.output
    assert runner.invoke(app, ["campaign", "start", "1"]).exit_code == 0
    worked = runner.invoke(app, ["campaign", "work", "--quiet"])
    assert worked.exit_code == 0, worked.output
    assert "sent 36" in worked.output
    out = runner.invoke(app, ["campaign", "progress", "1", "--json"])
    body = json.loads(out.output)
    assert body["status"] == "finished"
    assert body["waves"][0]["by_status"] == {"delivered": 36, "held": 4}
    listed = runner.invoke(app, ["campaign", "list"])
    assert "Autumn video month" in listed.output and "finished" in listed.output
    shown = json.loads(runner.invoke(app, ["campaign", "show", "1"]).output)
    assert shown["approved_by"] == "boss" and shown["created_by"] == "author"
