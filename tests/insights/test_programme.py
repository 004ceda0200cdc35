"""Programme-level uplift: all marketing against the universal control group, API/page/CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.audience import holdout
from perkflow.audience import service as audience
from perkflow.cli.main import app
from perkflow.coupons import service as coupons
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from tests.audience.helpers import profile
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_api_key, make_staff, make_subscribers
from tests.web.helpers import sign_in

NOW = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _claim(session: Session, vault: Vault, batch_id: int, sid: int) -> None:
    coupons.claim_coupon(
        session,
        actor=coupons.subscriber_actor(sid),
        vault=vault,
        batch_id=batch_id,
        subscriber_id=sid,
        idempotency_key=f"p-{sid}",
        channel="h5",
        device_id=f"dev-{sid}",
        zone=ZONE,
    )


def _world(session: Session, vault: Vault, mart: Mart) -> tuple[list[int], frozenset[int]]:
    audience.set_universal_control(session, actor=SYSTEM, share_bp=2_000, rotation_days=90)
    ids = make_subscribers(session, vault, [(f"1370000{i:04d}", "GD", "GD01") for i in range(60)])
    profile(mart, [{"subscriber_id": i, "province_code": "GD"} for i in ids])
    setting = audience.get_universal_control(session)
    held = holdout.members(setting, key=vault.assignment_key, subscriber_ids=ids, on=NOW.date())
    assert 0 < len(held) < 30
    batch = make_batch(session, stock_total=100)
    # Marketed subscribers: every other one claims; the held-out group: one in four.
    marketed = [s for s in ids if s not in held]
    for k, sid in enumerate(marketed):
        if k % 2 == 0:
            _claim(session, vault, batch.id, sid)
    for k, sid in enumerate(sorted(held)):
        if k % 4 == 0:
            _claim(session, vault, batch.id, sid)
    session.commit()
    return ids, held


def test_the_api_and_the_page_compare_marketed_subscribers_with_the_universal_control(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings, vault: Vault
) -> None:
    mart = Mart(settings.mart_dir)
    with web_sessions() as s:
        ids, held = _world(s, vault, mart)
        key = make_api_key(s, scopes=["campaigns:read"])
        weak = make_api_key(s, scopes=["coupons:read"])
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
    marketed = len(ids) - len(held)
    r = client.get("/v1/insights/programme", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["marketed"]["subscribers"] == marketed
    assert body["marketed"]["responders"] == (marketed + 1) // 2
    assert body["universal_control"]["subscribers"] == len(held)
    assert body["universal_control"]["responders"] == (len(held) + 3) // 4
    want = (marketed + 1) // 2 / marketed - (len(held) + 3) // 4 / len(held)
    assert body["uplift"]["absolute"] == pytest.approx(want)
    assert body["first_day"] <= "2026-11-02" == body["last_day"]
    # A period outside one rotation, or backwards, is refused naming the field.
    bad = client.get(
        "/v1/insights/programme?since=2026-11-02&until=2026-10-01",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert bad.status_code == 422 and "until" in bad.text
    refused = client.get("/v1/insights/programme", headers={"Authorization": f"Bearer {weak}"})
    assert refused.status_code == 403

    sign_in(client, "analyst")
    page = client.get("/console/insights/programme")
    assert page.status_code == 200, page.text
    assert (
        'id="programme-marketed"' in page.text and 'id="programme-universal_control"' in page.text
    )
    assert 'href="/console/insights/programme"' in client.get("/console/campaigns").text


def test_the_cli_prints_the_programme_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    from perkflow.cli.context import get_context

    ctx = get_context()
    with ctx.uow() as session:
        ids, held = _world(session, ctx.vault, ctx.mart)
    out = runner.invoke(app, ["insights", "programme", "--json"])
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.stdout)
    assert data["universal_control"]["subscribers"] == len(held)
    assert data["marketed"]["subscribers"] == len(ids) - len(held)
    table = runner.invoke(app, ["insights", "programme"], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "universal control" in table.stdout
    bad = runner.invoke(app, ["insights", "programme", "--since", "yesterday"])
    assert bad.exit_code != 0 and "since" in bad.output
