"""The demo campaign's evaluation costs what its offers and messages cost, not ¥0."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow.catalog import service as catalog
from perkflow.cli.context import get_context
from perkflow.cli.demo import OFFER_BENEFIT, run_demo_campaign
from perkflow.cli.main import app
from perkflow.kit.money import format_fen
from perkflow.org.rules import SYSTEM

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    return path


def test_the_demo_campaign_costs_its_offers_taken_up_at_the_catalog_cost(home: Path) -> None:
    result = runner.invoke(app, ["demo", "--subscribers", "20000", "--seed", "5", "--no-serve"])
    assert result.exit_code == 0, result.output
    ctx = get_context()
    report = run_demo_campaign(ctx, seed=5).report  # the first run's evaluation, again
    with ctx.uow() as session:
        benefit = catalog.find_benefit(session, actor=SYSTEM, code=OFFER_BENEFIT)
        unit = benefit.cost_price_fen
    responders = report["cells"]["target"]["responses"]
    assert unit > 0 and responders > 0
    # The demo's channels (in-app, e-mail) cost nothing per message: the offers are the cost.
    assert report["cost_fen"] == unit * responders
    assert f"cost {format_fen(report['cost_fen'])}" in result.output
