"""A real worker process killed mid-campaign and restarted: every target contacted exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import CampaignContact
from perkflow.channels.models import InboxMessage
from perkflow.db import make_engine, make_session_factory
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.settings import Settings
from tests.campaigns.helpers import HQ, everyone, spec, started, write_profile
from tests.conftest import TEST_SECRET

SUBSCRIBERS = 200


def test_a_killed_worker_resumes_without_double_contact_or_gap(
    ledger_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "worker-home"
    settings = Settings(home=home, secret_key=TEST_SECRET, database_url=ledger_url)
    vault = Vault(settings.master_secret)
    mart = Mart(settings.mart_dir)
    engine = make_engine(ledger_url)
    sessions = make_session_factory(engine)
    write_profile(mart, SUBSCRIBERS)
    with sessions() as s:
        seg = everyone(s, mart)
        # 50 in-app messages a second: the run takes a few seconds, long enough to kill it.
        c = started(s, mart, vault, spec(seg, throttle={"in_app": 50}))
        target_list = audience.get_target_list(s, actor=HQ, target_list_id=c.target_list_id or 0)
        targets, controls = target_list.target, target_list.control
        campaign_id = c.id
    assert targets + controls == SUBSCRIBERS and controls == 20

    env = {
        **os.environ,
        "PERKFLOW_HOME": str(home),
        "PERKFLOW_SECRET_KEY": TEST_SECRET,
        "PERKFLOW_DATABASE_URL": ledger_url,
        "PYTHONUNBUFFERED": "1",
    }
    perkflow = str(Path(sys.executable).parent / "perkflow")
    cli = [perkflow, "campaign", "work", "--batch", "10", "--lease-s", "2", "--quiet"]

    def inbox_count() -> int:
        with sessions() as s:
            return int(s.scalar(select(func.count()).select_from(InboxMessage)) or 0)

    first = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while inbox_count() < 40:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the worker sent nothing"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # mid-run: contacts queued, some leased
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    killed_at = inbox_count()
    assert 40 <= killed_at < targets, "the worker finished before it was killed"

    second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr

    with sessions() as s:
        rows = s.scalars(
            select(CampaignContact).where(CampaignContact.campaign_id == campaign_id)
        ).all()
        inbox = s.scalars(select(InboxMessage)).all()
        campaign = campaigns.get_campaign(s, actor=HQ, campaign_id=campaign_id)
        assert campaign.status == "finished"
    # No gap: every member of the list has one row; every target was delivered, once.
    assert len(rows) == SUBSCRIBERS
    target_rows = [r for r in rows if r.cell == "target"]
    control_rows = [r for r in rows if r.cell == "control"]
    assert len(target_rows) == targets and len(control_rows) == controls
    assert {r.status for r in target_rows} == {"delivered"}
    assert {r.status for r in control_rows} == {"held"}
    # No double contact: one inbox message per target subscriber, none for control.
    per_subscriber = [m.subscriber_id for m in inbox]
    assert len(per_subscriber) == len(set(per_subscriber)) == targets
    assert set(per_subscriber) == {r.subscriber_id for r in target_rows}
    assert {m.contact_id for m in inbox} == {r.id for r in target_rows}
    # Contacts the dead worker held were taken again once their lease ran out.
    assert max(r.attempts for r in target_rows) <= 2
    engine.dispose()
