"""`perkflow channels send-test` through the configured adapters, against the loopback peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow.channels.smsc_sim import SmscSim
from perkflow.channels.smtp_sink import SmtpSink
from perkflow.cli.main import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", "cli-test-secret-0123456789abcdef0123456789")
    for name in ("DATABASE_URL", "SMPP_HOST", "SMTP_HOST", "WEBHOOK_URL"):
        monkeypatch.delenv(f"PERKFLOW_{name}", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0  # a home that is set up
    return path


def test_send_test_sms_prints_the_result_and_the_receipt(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmscSim(password="pw") as sim:
        monkeypatch.setenv("PERKFLOW_SMPP_HOST", "127.0.0.1")
        monkeypatch.setenv("PERKFLOW_SMPP_PORT", str(sim.port))
        monkeypatch.setenv("PERKFLOW_SMPP_PASSWORD", "pw")
        result = runner.invoke(app, ["channels", "send-test", "sms", "13800000001"])
        assert result.exit_code == 0, result.output
        assert "sms to 138****0001: accepted" in result.output
        assert "13800000001" not in result.output  # the phone is masked
        assert "delivered" in result.output.split("receipt for", 1)[1]
        [sms] = sim.messages
        assert sms.destination == "13800000001" and "测试" in sms.text


def test_send_test_email(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpSink() as sink:
        monkeypatch.setenv("PERKFLOW_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("PERKFLOW_SMTP_PORT", str(sink.port))
        result = runner.invoke(
            app, ["channels", "send-test", "email", "a@mail.example.net", "--subject", "测试"]
        )
        assert result.exit_code == 0, result.output
        assert "accepted" in result.output
        assert [(m.to, m.subject) for m in sink.wait_for(1)] == [("a@mail.example.net", "测试")]


def test_an_unconfigured_channel_is_reported(home: Path) -> None:
    result = runner.invoke(app, ["channels", "send-test", "webhook", "42"])
    assert result.exit_code == 2
    assert "channel not configured" in result.output


def test_an_unreachable_smsc_exits_non_zero(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SmscSim().start()
    port = sim.port
    sim.stop()
    monkeypatch.setenv("PERKFLOW_SMPP_HOST", "127.0.0.1")
    monkeypatch.setenv("PERKFLOW_SMPP_PORT", str(port))
    result = runner.invoke(app, ["channels", "send-test", "sms", "13800000001"])
    assert result.exit_code == 1
    assert "failed, retryable" in result.output
