"""`perkflow binding verify`, `grants expire`, `subscriber set-status` against a real home."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from perkflow.catalog.rules import FulfilmentKind
from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.grants import service as grants
from perkflow.grants.models import Grant
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers.models import Subscriber
from tests.factories import make_benefit, make_partner
from tests.grants.helpers import ZONE

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["synth", "--subscribers", "300", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return path


def _mart_statuses(mart: Mart, changes: dict[int, str]) -> None:
    table = mart.table("subscriber_profile").to_pyarrow()
    ids = table["subscriber_id"].to_pylist()
    statuses = table["status"].cast(pa.string()).to_pylist()
    new = [changes.get(i, s) for i, s in zip(ids, statuses, strict=True)]
    col = table.schema.get_field_index("status")
    mart.write(
        "subscriber_profile", table.set_column(col, "status", pc.cast(pa.array(new), pa.string()))
    )


def test_binding_verify_reconciles_with_the_mart_and_binds_grants(home: Path) -> None:
    settings = Settings(home=home)
    engine = make_engine(settings.ledger_url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        active = s.scalars(
            select(Subscriber.id).where(Subscriber.status == "active").order_by(Subscriber.id)
        ).all()
        churned = s.scalars(select(Subscriber.id).where(Subscriber.status == "churned")).first()
        a, b, c = active[:3]
        benefit = make_benefit(s, partner=make_partner(s), kind=FulfilmentKind.COUPON)
        made = {}
        for sid in (a, b, c):
            made[sid] = grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit.id,
                source="t",
                idempotency_key=f"v-{sid}",
                zone=ZONE,
            ).grant.id
        # c was suspended by a bulk load that bypassed binding: its grant is still live.
        s.execute(update(Subscriber).where(Subscriber.id == c).values(status="suspended"))
        s.commit()
    assert churned is not None
    _mart_statuses(
        Mart(settings.mart_dir), {a: "churned", b: "suspended", c: "suspended", churned: "active"}
    )
    result = runner.invoke(app, ["binding", "verify", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {r["subscriber_id"]: r for r in report["rows"]}
    assert (rows[a]["action"], rows[a]["revoked"]) == ("status changed", 1)
    assert (rows[b]["action"], rows[b]["paused"]) == ("status changed", 1)
    assert (rows[c]["action"], rows[c]["paused"]) == ("grants bound", 1)
    assert rows[churned]["action"] == "skipped" and "churned" in rows[churned]["note"]
    assert report["summary"]["grants_revoked"] == 1 and report["summary"]["grants_paused"] == 2
    with sessions() as s:
        status = dict(s.execute(select(Grant.id, Grant.status)).all())
        assert [status[made[x]] for x in (a, b, c)] == ["revoked", "paused", "paused"]
        assert s.get(Subscriber, a).status == "churned"  # type: ignore[union-attr]
    again = runner.invoke(app, ["binding", "verify"])
    assert again.exit_code == 0 and "subscribers changed 0" in again.output
    assert "skipped 1" in again.output
    result = runner.invoke(
        app, ["subscriber", "set-status", str(b), "--to", "active", "--reason", "paid"]
    )
    assert result.exit_code == 0 and "resumed 1" in result.output, result.output
    assert "expired 0" in runner.invoke(app, ["grants", "expire"]).output
    engine.dispose()


def test_binding_verify_without_a_mart_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["binding", "verify"])
    assert result.exit_code == 2 and "subscriber_profile" in result.output
