"""`perkflow catalog` against a real home: partners, benefits, lifecycle, code import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from perkflow.catalog.models import Benefit, CardCode, Partner
from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory
from perkflow.org.models import ApiKey

runner = CliRunner()

BENEFIT = [
    "catalog",
    "benefit-add",
    "tv-codes",
    "--partner",
    "tv",
    "--name-zh",
    "视频月卡",
    "--name-en",
    "Video month",
    "--category",
    "video",
    "--kind",
    "card_code",
    "--face-value-fen",
    "2500",
    "--cost-price-fen",
    "1000",
    "--sale-price-fen",
    "1500",
    "--valid-days",
    "30",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_partner_benefit_codes_and_listing_from_the_cli(home: Path) -> None:
    _ok(
        [
            "catalog",
            "partner-add",
            "tv",
            "--name",
            "TV Co",
            "--connector-url",
            "http://127.0.0.1:9/partner",
            "--connector-secret",
            "cli-secret-1",
            "--supports-revoke",
        ]
    )
    _ok(BENEFIT)
    codes = home / "codes.csv"
    codes.write_text("code,pin,expiry\nCLI-1,11,2099-01-01\nCLI-2\nCLI-1\n", encoding="utf-8")
    out = _ok(["catalog", "import-codes", "tv-codes", str(codes), "--unit-cost-fen", "950"])
    assert "2 codes imported, 1 duplicates skipped" in out and "stock 2 / 2" in out
    assert "listed" in _ok(["catalog", "list-benefit", "tv-codes"])
    listing = _ok(["catalog", "list", "--status", "listed"])
    assert "tv-codes" in listing and "¥15.00" in listing and "2 / 2" in listing
    assert "delisted" in _ok(["catalog", "delist-benefit", "tv-codes"])
    key = _ok(
        [
            "apikey",
            "create",
            "tv-key",
            "--owner",
            "partner",
            "--partner",
            "tv",
            "--scope",
            "catalog:read",
        ]
    )
    assert "pk_pa" in key
    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    with sessions() as s:
        partner = s.scalar(select(Partner))
        assert partner is not None and partner.supports_revoke
        assert partner.connector_secret_enc and b"cli-secret-1" not in partner.connector_secret_enc
        assert s.scalar(select(func.count()).select_from(CardCode)) == 2
        assert s.scalar(select(ApiKey.owner_ref)) == "tv"


def test_bad_cli_input_names_the_field_and_exits_2(home: Path) -> None:
    _ok(["catalog", "partner-add", "tv", "--name", "TV Co"])
    bad_price = runner.invoke(app, [*BENEFIT[:-6], "--cost-price-fen", "9999", *BENEFIT[-4:]])
    assert bad_price.exit_code == 2 and "cost_price_fen" in bad_price.output
    unknown = runner.invoke(app, ["catalog", "list-benefit", "nope"])
    assert unknown.exit_code == 2 and "benefit_code" in unknown.output
    _ok(BENEFIT)
    bad = home / "bad.csv"
    bad.write_text("GOOD-1\nbad code\nGOOD-2,,2099-99-99\n", encoding="utf-8")
    result = runner.invoke(
        app, ["catalog", "import-codes", "tv-codes", str(bad), "--unit-cost-fen", "1"]
    )
    assert result.exit_code == 2 and "[file]" in result.output
    assert "line 2:" in result.output and "line 3:" in result.output
    no_partner = runner.invoke(
        app,
        ["apikey", "create", "k", "--owner", "partner", "--partner", "x", "--scope", "h5:link"],
    )
    assert no_partner.exit_code == 2 and "partner" in no_partner.output
    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CardCode)) == 0
        benefit = s.scalar(select(Benefit))
        assert benefit is not None and benefit.stock_total == 0
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 0
