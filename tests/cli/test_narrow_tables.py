"""The CLI's tables in an 80-column terminal: no line longer, ids, codes and figures whole."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perkflow.cli import context
from perkflow.cli.demo import DemoResult, print_result
from perkflow.cli.main import app

runner = CliRunner()
CODES = (
    "broadband-visit",
    "cloud-storage-month",
    "video-bilibili-month",
    "video-tencent-month",
    "coupon-pack-150",
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    # The console is made once, at import: give it the terminal's width as a shell would.
    monkeypatch.setattr(context.console, "width", 80)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    return path


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _fits(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), [
        (len(line), line) for line in lines if len(line) > 80
    ]
    assert "…" not in re.sub(r"[+-]\d+\.\d\d…[+-]\d+\.\d\d", "", output), output
    return lines


def test_catalog_list_keeps_every_code_and_price_whole(home: Path) -> None:
    _run("member", "load-default")
    lines = _fits(_run("catalog", "list"))
    for code in CODES:
        [row] = [line for line in lines if re.search(rf"\s{re.escape(code)}\s", line)]
        assert re.search(r"¥\d[\d,]*\.\d\d", row) and "unlimited" in row, row


def _history(path: Path, n: int = 2000) -> Path:
    rng = random.Random(5)
    rows = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    for i in range(1, n + 1):
        control = i % 10 == 0
        variant = "" if control else rng.choice(["email-autumn-upgrade", "in-app"])
        responded = rng.random() < (0.08 if control else 0.14)
        revenue = "12.50" if responded else "0"
        rows.append(
            f"{i},{'control' if control else 'target'},{variant},"
            f"2026-10-01T10:00:00+08:00,{int(responded)},{revenue}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def test_campaign_report_fits_80_columns_with_whole_figures(home: Path, tmp_path: Path) -> None:
    out = _run(
        "campaign",
        "import-history",
        str(_history(tmp_path / "history.csv")),
        "--name",
        "Autumn upgrade (秋季升级) for heavy video users",
        "--source",
        "crm_2025",
    )
    campaign_id = json.loads(out)["campaign_id"]
    report = json.loads(_run("campaign", "report", str(campaign_id), "--json"))
    lines = _fits(_run("campaign", "report", str(campaign_id)))
    header = next(line for line in lines if "p-value" in line)
    for column in ("group", "contacts", "rate", "uplift", "95% CI", "relative", "sig."):
        assert column in header
    for v in report["variants"]:
        # The uplift table's row (the multiplicity table below names the variants again).
        row = next(line for line in lines if line.split()[:1] == [v["variant"]])
        assert f"{v['contacts']:,}" in row and f"{v['rate'] * 100:.2f}%" in row, row
        low, high = v["uplift"]["ci95"]
        assert f"{low * 100:+.2f}…{high * 100:+.2f}" in row, row

    # The demo's closing table, over the same evaluation.
    context.console.begin_capture()
    print_result(
        DemoResult(campaign_id=campaign_id, report=report, true_uplift=0.05, created=True),
        base_url="http://127.0.0.1:8000",
    )
    demo_lines = _fits(context.console.end_capture())
    for v in report["variants"]:
        [row] = [line for line in demo_lines if line.split()[:1] == [v["variant"]]]
        assert f"{v['contacts']:,}" in row and f"{v['responses']:,}" in row, row
