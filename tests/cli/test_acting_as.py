"""`--as USER` needs that user's password, throttled like the console's sign-in; approval holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from perkflow.campaigns.models import Campaign
from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.mart import Mart
from perkflow.org.models import AuditEntry, LoginAttempt
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.campaigns.helpers import everyone, write_profile
from tests.factories import PASSWORD, make_staff

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


@dataclass
class Home:
    sessions: sessionmaker[Session]
    spec: Path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    path = tmp_path / "cli-home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", SECRET)
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_PASSWORD", raising=False)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    settings = Settings(home=path, secret_key=SECRET)
    mart = Mart(settings.mart_dir)
    write_profile(mart, 40)
    engine = make_engine(settings.ledger_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        make_staff(s, username="author", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="boss", role=Role.HQ_ADMIN, region="CN")
        seg = everyone(s, mart)
    spec = tmp_path / "campaign.yaml"
    spec.write_text(SPEC.format(segment=seg), encoding="utf-8")
    yield Home(sessions=sessions, spec=spec)
    engine.dispose()


def run(args: list[str], *, password: str | None = None, env: str | None = None) -> Result:
    """One command; a password typed at the prompt, or given in PERKFLOW_PASSWORD."""
    runner = CliRunner()
    extra = {"PERKFLOW_PASSWORD": env} if env is not None else None
    return runner.invoke(app, args, input=None if password is None else password + "\n", env=extra)


def _status(home: Home) -> str:
    with home.sessions() as s:
        return str(s.scalars(select(Campaign.status).where(Campaign.id == 1)).one())


def test_acting_as_a_person_takes_their_password(home: Home) -> None:
    typed = run(["campaign", "create", str(home.spec), "--as", "author"], password=PASSWORD)
    assert typed.exit_code == 0, typed.output
    assert "password for author" in typed.output
    assert PASSWORD not in typed.output  # the prompt hides what is typed
    assert run(["campaign", "submit", "1", "--as", "author"], env=PASSWORD).exit_code == 0

    # Knowing a username is no longer enough to act as that person.
    guessed = run(["campaign", "approve", "1", "--as", "boss"], password="not-the-password-1")
    assert guessed.exit_code == 2
    assert "wrong username or password" in guessed.output
    assert _status(home) == "pending_approval"
    unknown = run(["campaign", "approve", "1", "--as", "nobody"], password=PASSWORD)
    assert unknown.exit_code == 2 and "wrong username or password" in unknown.output

    # The two-person rule holds at the command line: the submitter cannot approve.
    own = run(["campaign", "approve", "1", "--as", "author"], env=PASSWORD)
    assert own.exit_code == 2 and "second person" in own.output
    ok = run(["campaign", "approve", "1", "--as", "boss", "--note", "fine"], env=PASSWORD)
    assert ok.exit_code == 0 and "approved" in ok.output, ok.output
    assert _status(home) == "approved"

    with home.sessions() as s:
        approval = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "campaign.approve")
        ).one()
        attempts = s.scalars(select(LoginAttempt).order_by(LoginAttempt.id)).all()
    assert (approval.actor_kind, approval.actor_name) == ("staff", "boss")
    assert approval.ip.startswith("cli:")
    # Every try is recorded, as a console sign-in is.
    assert [(a.username, a.success) for a in attempts] == [
        ("author", True),
        ("author", True),
        ("boss", False),
        ("nobody", False),
        ("author", True),
        ("boss", True),
    ]


def test_guesses_are_throttled_like_console_sign_ins(home: Home) -> None:
    assert (
        run(["campaign", "create", str(home.spec), "--as", "author"], env=PASSWORD).exit_code == 0
    )
    assert run(["campaign", "submit", "1", "--as", "author"], env=PASSWORD).exit_code == 0
    for n in range(5):
        wrong = run(["campaign", "approve", "1", "--as", "boss"], env=f"guess-number-{n}")
        assert "wrong username or password" in wrong.output
    # The window is spent: even the right password is not checked until it passes.
    locked = run(["campaign", "approve", "1", "--as", "boss"], env=PASSWORD)
    assert locked.exit_code == 2 and "too many failed sign-ins" in locked.output
    assert _status(home) == "pending_approval"


def test_without_as_the_command_is_the_systems_and_the_audit_says_so(home: Home) -> None:
    result = run(["campaign", "create", str(home.spec)])
    assert result.exit_code == 0, result.output
    assert "password" not in result.output
    with home.sessions() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.create")).one()
    assert entry.actor_kind == "system"
