"""A channel this installation has not configured: a warning at create, a refusal at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import CampaignWave
from perkflow.cli.main import app
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.campaigns.helpers import HQ2, everyone, spec, write_profile
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in

EMAIL_VARIANT = {"key": "M", "channel": "email", "subject": "Hi", "body": "A gift for you"}


def _email_spec(segment_id: int) -> dict[str, object]:
    raw = spec(segment_id)
    raw["variants"] = [raw["variants"][0], EMAIL_VARIANT]  # type: ignore[index]
    return raw


def _as(client: TestClient, username: str) -> dict[str, str]:
    client.cookies.clear()
    sign_in(client, username)
    return {"x-csrf-token": csrf_of(client.get("/console").text)}


def _waves(web_sessions: sessionmaker[Session]) -> int:
    with web_sessions() as s:
        return int(s.scalar(select(func.count()).select_from(CampaignWave)) or 0)


def test_api_warns_at_create_and_refuses_the_start_naming_the_channel(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    assert settings.smtp_host is None  # e-mail has no peer in this installation
    mart = Mart(settings.mart_dir)
    write_profile(mart, 20)
    with web_sessions() as s:
        make_staff(s, username="author", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="boss", role=Role.HQ_ADMIN, region="CN")
        seg = everyone(s, mart)
    h = _as(client, "author")
    r = client.post("/v1/campaigns", json=spec(seg), headers=h)
    assert r.status_code == 201 and r.json()["warnings"] == []  # in-app needs no peer
    r = client.post("/v1/campaigns", json=_email_spec(seg), headers=h)
    assert r.status_code == 201, r.text
    [warning] = r.json()["warnings"]
    assert warning["channel"] == "email" and warning["setting"] == "PERKFLOW_SMTP_HOST"
    assert warning["field"] == "variants[1].channel"
    assert "email" in warning["message"] and "PERKFLOW_SMTP_HOST" in warning["message"]
    cid = r.json()["id"]
    client.post(f"/v1/campaigns/{cid}/submit", headers=h)
    h = _as(client, "boss")
    assert client.post(f"/v1/campaigns/{cid}/approve", headers=h).status_code == 200

    # The console says so on the campaign's page, in the reader's language.
    page = client.get(f"/console/campaigns/{cid}", headers={"accept-language": "zh-CN"})
    assert 'id="channel-gap-email"' in page.text and "PERKFLOW_SMTP_HOST" in page.text
    assert "尚未配置渠道 email" in page.text

    r = client.post(f"/v1/campaigns/{cid}/start", headers=h)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["field"] == "variants[1].channel"
    assert "channel email" in error["message"] and "PERKFLOW_SMTP_HOST" in error["message"]
    assert client.get(f"/v1/campaigns/{cid}", headers=h).json()["status"] == "approved"
    assert _waves(web_sessions) == 0  # nothing planned, no contact burnt

    # The console's start button is refused the same way.
    page = client.get(f"/console/campaigns/{cid}")
    r = client.post(f"/console/campaigns/{cid}/start", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 409 and "PERKFLOW_SMTP_HOST" in r.text
    assert _waves(web_sessions) == 0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    for name in ("PERKFLOW_DATABASE_URL", "PERKFLOW_SECRET_KEY", "PERKFLOW_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_cli_warns_at_create_and_start_exits_2_naming_the_channel(
    home: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    from perkflow.cli.context import get_context

    ctx = get_context()
    write_profile(ctx.mart, 20)
    with ctx.uow() as session:
        seg = everyone(session, ctx.mart)
    file = tmp_path / "spec.yaml"
    file.write_text(yaml.safe_dump(_email_spec(seg), allow_unicode=True))
    out = runner.invoke(app, ["campaign", "create", str(file)])
    assert out.exit_code == 0, out.output
    assert "warning [variants[1].channel]: channel email is not configured" in out.output
    assert "PERKFLOW_SMTP_HOST" in out.output
    assert runner.invoke(app, ["campaign", "submit", "1"]).exit_code == 0
    with ctx.uow() as session:
        campaigns.approve_campaign(session, actor=HQ2, campaign_id=1)
        session.commit()
    out = runner.invoke(app, ["campaign", "start", "1"])
    assert out.exit_code == 2, out.output
    assert "[variants[1].channel]" in out.output and "PERKFLOW_SMTP_HOST" in out.output
    assert "Traceback" not in out.output
