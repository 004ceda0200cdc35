"""`perkflow campaign import-history | report` on a real home, and the Hillstrom experiment."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from perkflow.campaigns.models import Campaign, CampaignContact
from perkflow.cli.main import app
from perkflow.db import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parents[2]


def _hillstrom() -> Path:
    """The shared dataset: beside the checkout (`../shared`), or where PERKFLOW_DATASETS says."""
    candidates = [ROOT / ".." / "shared" / "datasets" / "hillstrom.csv"]
    if os.environ.get("PERKFLOW_DATASETS"):
        candidates.insert(0, Path(os.environ["PERKFLOW_DATASETS"]) / "hillstrom.csv")
    # A clone elsewhere (CI clones main into a temporary directory) still finds the workspace's.
    candidates.append(Path("/work/shared/datasets/hillstrom.csv"))
    return next((p for p in candidates if p.exists()), candidates[0])


HILLSTROM = _hillstrom()
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return path


def _converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hillstrom_to_history", ROOT / "examples" / "hillstrom_to_history.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _campaigns(home: Path) -> tuple[int, int]:
    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    with sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Campaign)) or 0,
            s.scalar(select(func.count()).select_from(CampaignContact)) or 0,
        )


def test_import_prints_the_id_and_report_prints_the_json_shape(home: Path, tmp_path: Path) -> None:
    history = tmp_path / "h.csv"
    rows = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    rows += [f"{i},target,A,2026-03-01T10:00:00+08:00,{int(i % 4 == 0)},9.9" for i in range(1, 401)]
    rows += [
        f"{i},control,A,2026-03-01T10:00:00+08:00,{int(i % 10 == 0)}," for i in range(401, 601)
    ]
    history.write_text("\n".join(rows).replace(",0,9.9", ",0,") + "\n")
    result = runner.invoke(
        app, ["campaign", "import-history", str(history), "--name", "t", "--source", "t"]
    )
    assert result.exit_code == 0, result.output
    campaign_id = json.loads(result.stdout)["campaign_id"]

    report = runner.invoke(app, ["campaign", "report", str(campaign_id), "--json"])
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    assert set(data["cells"]) == {"target", "control"}
    for cell in data["cells"].values():
        assert {"contacts", "responses", "rate"} <= set(cell)
    assert data["cells"]["target"] == {
        "contacts": 400,
        "responses": 100,
        "rate": 0.25,
        "revenue_fen": 100 * 990,
    }
    assert {"absolute", "relative", "ci95", "p_value"} <= set(data["uplift"])
    assert len(data["uplift"]["ci95"]) == 2
    assert data["uplift"]["absolute"] == pytest.approx(0.15)
    [variant] = data["variants"]
    assert variant["variant"] == "A"
    assert {"variant", "contacts", "responses", "rate", "uplift"} <= set(variant)
    assert {"absolute", "relative", "ci95", "p_value"} <= set(variant["uplift"])

    table = runner.invoke(app, ["campaign", "report", str(campaign_id)], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "+15.00" in table.stdout and "sequential test" in table.stdout

    missing = runner.invoke(app, ["campaign", "report", "999", "--json"])
    assert missing.exit_code == 2 and "no campaign 999" in missing.output
    no_wave = runner.invoke(app, ["campaign", "report", str(campaign_id), "--wave", "test"])
    assert no_wave.exit_code == 2 and "no test wave" in no_wave.output


def test_bad_rows_exit_2_with_their_line_numbers_and_load_nothing(
    home: Path, tmp_path: Path
) -> None:
    history = tmp_path / "bad.csv"
    history.write_text(
        "subscriber_id,cell,variant,contacted_at,responded,revenue\n"
        "1,target,A,2026-03-01,1,\n"
        "2,target,A,soon,1,\n"
        "3,placebo,A,2026-03-01,1,\n"
        "1,control,,2026-03-01,0,\n"
    )
    result = runner.invoke(
        app, ["campaign", "import-history", str(history), "--name", "bad", "--source", "t"]
    )
    assert result.exit_code == 2
    for expected in ("line 3 [contacted_at]", "line 4 [cell]", "line 5 [subscriber_id]"):
        assert expected in result.output
    assert result.stdout == ""  # nothing that a pipe would take for an id
    assert _campaigns(home) == (0, 0)


def test_hillstrom_email_experiment_end_to_end(home: Path, tmp_path: Path) -> None:
    assert HILLSTROM.exists(), f"the shared dataset is missing: {HILLSTROM}"
    history = tmp_path / "hillstrom_history.csv"
    assert _converter().convert(str(HILLSTROM), str(history)) == 64_000
    result = runner.invoke(
        app,
        [
            "campaign",
            "import-history",
            str(history),
            "--name",
            "Hillstrom e-mail",
            "--source",
            "hillstrom",
        ],
    )
    assert result.exit_code == 0, result.output
    campaign_id = json.loads(result.stdout)["campaign_id"]
    report = runner.invoke(app, ["campaign", "report", str(campaign_id), "--json"])
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    assert data["cells"]["target"]["contacts"] == 42_694
    assert data["cells"]["control"] == {
        "contacts": 21_306,
        "responses": 2_262,
        "rate": pytest.approx(2_262 / 21_306),
        "revenue_fen": 1_390_833,
    }
    variants = {v["variant"]: v for v in data["variants"]}
    # The classic result: a visit uplift of about 7.7 points (men's) and 4.5 points (women's).
    assert variants["mens"]["uplift"]["absolute"] == pytest.approx(0.0766, abs=5e-4)
    assert variants["womens"]["uplift"]["absolute"] == pytest.approx(0.0452, abs=5e-4)
    for v in variants.values():
        low, high = v["uplift"]["ci95"]
        assert 0 < low < v["uplift"]["absolute"] < high
        assert v["uplift"]["p_value"] < 1e-10 and v["verdict"] == "significant"
    assert variants["mens"]["responses"] == 3_894 and variants["womens"]["responses"] == 3_238

    # The revenue interval, from the ledger's per-contact spend detail, against numpy on the
    # raw file: Welch's interval of mean spend per contact (zeros included), times the targets.
    import csv

    import numpy as np

    with HILLSTROM.open(encoding="utf-8", newline="") as f:
        raw = [(r["segment"], round(float(r["spend"]) * 100)) for r in csv.DictReader(f)]
    segments = np.array([seg for seg, _ in raw])
    fen = np.array([spend for _, spend in raw], dtype=np.float64)
    control = fen[segments == "No E-Mail"]
    for key, segment, spenders in (("mens", "Mens E-Mail", 267), ("womens", "Womens E-Mail", 189)):
        target = fen[segments == segment]
        assert int((target > 0).sum()) == spenders and int((control > 0).sum()) == 122
        d = target.mean() - control.mean()
        half = 1.959963984540054 * np.sqrt(
            target.var(ddof=1) / target.size + control.var(ddof=1) / control.size
        )
        inc = variants[key]["incremental"]
        assert inc["revenue_interval"] == "welch"
        assert inc["revenue_ci95"] == pytest.approx(
            [(d - half) * target.size, (d + half) * target.size], rel=1e-9
        )
    # The docs' figures: the men's ¥10,337 … ¥22,468, the women's ¥3,614 … ¥14,540.
    assert [round(x / 100) for x in variants["mens"]["incremental"]["revenue_ci95"]] == [
        10_337,
        22_468,
    ]
    assert [round(x / 100) for x in variants["womens"]["incremental"]["revenue_ci95"]] == [
        3_614,
        14_540,
    ]


def _ledger_campaign(home: Path, build: Callable[[Session], Campaign]) -> int:
    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    with sessions() as s:
        campaign_id = build(s).id
        s.commit()
    return campaign_id


def _report_text(campaign_id: int) -> str:
    out = runner.invoke(app, ["campaign", "report", str(campaign_id)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    return " ".join(out.stdout.split())


def test_report_prints_the_split_check_the_headline_wave_and_the_other_readings(
    home: Path,
) -> None:
    from tests.insights.test_pages_design import _skewed
    from tests.insights.test_service import _run_campaign

    text = _report_text(_ledger_campaign(home, _run_campaign))
    assert "split as planned: 25.0% control (planned 20%)" in text
    assert "SAMPLE RATIO MISMATCH" not in text
    assert "headline: the rollout wave (confirmatory; the test wave decided the rollout)" in text
    assert (
        "test wave (decided the rollout): 40 targets 50.00% against 10 controls 10.00%, "
        "uplift +40.00 pts" in text
    )
    assert "all waves pooled: 100 targets 29.00% against 30 controls 10.00%, uplift +19.00" in text
    assert (
        "among those actually reached (treated-on-treated, not the headline): 59 targets "
        "15.25% against 20 controls 10.00%, uplift +5.25 pts" in text
    )
    assert "variants compared with: B its own controls (20)" in text
    assert "incremental revenue 95% CI none: sample too small (few_spenders)" in text

    skewed = _report_text(_ledger_campaign(home, _skewed))
    assert "SAMPLE RATIO MISMATCH: 4.8% control (planned 20%), chi-square p <0.0001" in skewed
    assert "do not act on the uplift" in skewed and "split as planned" not in skewed
    assert "headline: every wave together" in skewed


def test_report_prints_the_cuped_line_and_the_breakdowns(home: Path) -> None:
    from tests.insights import mart_campaign

    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    with sessions() as s:
        campaign_id = mart_campaign.build(s, home / "mart").campaign.id
        s.commit()
    shown = runner.invoke(app, ["campaign", "report", str(campaign_id)], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "CUPED (pre-period mean bill" in shown.output
    assert "variance reduced by" in shown.output
    assert "Uplift by plan band" in shown.output and "Uplift by activity" in shown.output
    assert "lt59" in shown.output and "adj. p" in shown.output
    body = json.loads(runner.invoke(app, ["campaign", "report", str(campaign_id), "--json"]).output)
    assert 0 < body["cuped"]["variance_reduction"] < 1
    assert [t["name"] for t in body["breakdowns"]["tables"]] == ["plan_band", "activity"]
