"""Churn through the API, the console and the CLI ends membership, and the mart's status follows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.audience import service as audience
from perkflow.cli.main import app
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.membership import tasks
from perkflow.membership.models import Member, TierChange
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from perkflow.synth.service import generate_operator
from tests.conftest import TEST_SECRET
from tests.factories import make_api_key, make_staff
from tests.membership.helpers import default_program
from tests.web.helpers import csrf_of, sign_in

TEMPLATE = {
    "name": "Everyone but the churned",
    "columns": ["subscriber_id", "province_code"],
    "rule": {"all": [{"column": "plan_fee_yuan", "op": ">=", "value": 0}]},
    "exclude": ["churned"],
}


def _mart_status(mart: Mart, sids: list[int]) -> dict[int, str]:
    t = mart.table("subscriber_profile")
    rows = t.filter(t.subscriber_id.isin(sids)).select("subscriber_id", "status").to_pyarrow()
    return dict(
        zip(
            rows["subscriber_id"].to_pylist(),
            rows["status"].cast(pa.string()).to_pylist(),
            strict=True,
        )
    )


def _tiered(sessions: sessionmaker[Session], mart: Mart, n: int) -> list[int]:
    """Active subscribers holding a tier after a batch evaluation."""
    with sessions() as s:
        members = sorted(s.scalars(select(Member.subscriber_id).where(Member.tier_id.is_not(None))))
        statuses = subscribers.subscriber_statuses(s, subscriber_ids=members)
    found = [sid for sid in members if statuses[sid].value == "active"][:n]
    assert len(found) == n
    return found


@pytest.fixture
def operator(
    settings: Settings, web_sessions: sessionmaker[Session], vault: Vault, client: TestClient
) -> Mart:
    mart = Mart(settings.mart_dir)
    with web_sessions() as s:
        generate_operator(s, mart=mart, truth_dir=settings.truth_dir, vault=vault, n=400, seed=5)
        s.commit()
        default_program(s, vault)
    tasks.run_evaluation(web_sessions, mart=mart)
    return mart


def test_churn_from_every_entry_point_ends_membership_and_reaches_the_mart(
    client: TestClient,
    operator: Mart,
    settings: Settings,
    web_engine: Engine,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mart = operator
    by_api, by_console, by_cli, by_snapshot = _tiered(web_sessions, mart, 4)
    with web_sessions() as s:
        key = make_api_key(s, scopes=["subscribers:status"])
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")

    r = client.post(
        f"/v1/subscribers/{by_api}/status",
        json={"status": "churned", "reason": "ported out"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text

    sign_in(client, "hq")
    token = csrf_of(client.get(f"/console/subscribers/{by_console}").text)
    r = client.post(
        f"/console/subscribers/{by_console}/status",
        data={"status": "churned", "reason": "closed at the store", "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text

    monkeypatch.setenv("PERKFLOW_HOME", str(settings.home))
    monkeypatch.setenv("PERKFLOW_DATABASE_URL", str(web_engine.url))
    monkeypatch.setenv("PERKFLOW_SECRET_KEY", TEST_SECRET)
    result = CliRunner().invoke(
        app, ["subscriber", "set-status", str(by_cli), "--to", "churned", "--reason", "unpaid"]
    )
    assert result.exit_code == 0, result.output
    assert "left the membership tier" in result.output
    # The CLI syncs the mart right after its change; the others are synced by the jobs below.
    assert _mart_status(mart, [by_cli]) == {by_cli: "churned"}

    # The mart's snapshot says churned: `binding verify` reconciles through the same path.
    profile = mart.table("subscriber_profile").to_pyarrow()
    status = pa.array(
        [
            "churned" if sid == by_snapshot else st
            for sid, st in zip(
                profile["subscriber_id"].to_pylist(),
                profile["status"].cast(pa.string()).to_pylist(),
                strict=True,
            )
        ]
    ).cast(profile.schema.field("status").type)
    mart.write(
        "subscriber_profile",
        profile.set_column(profile.schema.get_field_index("status"), "status", status),
    )
    result = CliRunner().invoke(app, ["binding", "verify", "--json"])
    assert result.exit_code == 0, result.output

    churned = [by_api, by_console, by_cli, by_snapshot]
    with web_sessions() as s:
        rows = s.execute(
            select(Member.subscriber_id, Member.tier_id).where(Member.subscriber_id.in_(churned))
        )
        tiers = {sid: tier for sid, tier in rows}
        left = s.scalars(
            select(TierChange.subscriber_id).where(
                TierChange.subscriber_id.in_(churned), TierChange.kind == "leave"
            )
        ).all()
    assert tiers == dict.fromkeys(churned)
    assert sorted(left) == sorted(churned)

    # The next batch evaluation reads the mart: it sees them churned and gives no tier back.
    run, _ = tasks.run_evaluation(web_sessions, mart=mart)
    assert run.joined == 0
    assert _mart_status(mart, churned) == dict.fromkeys(churned, "churned")
    with web_sessions() as s:
        assert (
            s.scalars(select(Member.tier_id).where(Member.subscriber_id.in_(churned))).all()
            == [None] * 4
        )

        # An export that excludes the churned leaves them out.
        row = audience.save_template(s, mart=mart, actor=SYSTEM, raw=TEMPLATE)
        report = audience.run_extraction(
            s,
            mart=mart,
            actor=SYSTEM,
            vault=vault,
            template_id=row.id,
            params={},
            fmt="csv",
            out_dir=tmp_path / "out",
        )
    exported = set(pacsv.read_csv(report.path)["subscriber_id"].to_pylist())
    assert exported and not exported & set(churned)


def test_the_status_sync_writes_only_what_changed_since_the_last_run(
    operator: Mart, web_sessions: sessionmaker[Session]
) -> None:
    mart = operator
    [sid] = _tiered(web_sessions, mart, 1)
    with web_sessions() as s:
        subscribers.export_statuses(s, mart=mart)  # catches up with the generator's history
        assert subscribers.export_statuses(s, mart=mart) == 0
        subscribers.change_status(
            s,
            actor=SYSTEM,
            subscriber_id=sid,
            status=Status.SUSPENDED,
            reason="unpaid",
            source="test",
        )
        s.commit()
        before = mart.table("subscriber_profile").to_pyarrow()
        assert subscribers.export_statuses(s, mart=mart) == 1
    after = mart.table("subscriber_profile").to_pyarrow()
    assert _mart_status(mart, [sid]) == {sid: "suspended"}
    assert after.num_rows == before.num_rows
    assert after.schema.field("status").type == before.schema.field("status").type
    changed = [
        i
        for i, (a, b) in enumerate(
            zip(before["status"].to_pylist(), after["status"].to_pylist(), strict=True)
        )
        if a != b
    ]
    assert len(changed) == 1
