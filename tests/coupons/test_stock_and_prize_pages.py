"""Stock additions over the API, console and CLI; credited prizes on the H5 pages (SQLite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.cli.main import app
from perkflow.coupons import service as coupons
from perkflow.org.rules import SYSTEM, Role
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_staff
from tests.web.helpers import csrf_of, sign_in


def _remaining(web_sessions: sessionmaker[Session], batch_id: int) -> tuple[int, int]:
    with web_sessions() as s:
        view = coupons.stock_of(s, actor=SYSTEM, batch_id=batch_id)
        return view.remaining, view.total


def test_api_stock_addition_names_the_field_and_changes_nothing_on_bad_input(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        batch = make_batch(s, stock_total=10, code_charset="digits", code_length=6)
        draft = make_batch(s, activate=False, stock_total=10)
    sign_in(client, "admin")
    headers = {"x-csrf-token": csrf_of(client.get("/console/coupons").text)}
    url = f"/v1/coupon-batches/{batch.id}/stock-additions"
    for body in ({"quantity": 0}, {"quantity": "lots"}, {}, {"quantity": 5, "extra": 1}):
        bad = client.post(url, json=body, headers=headers)
        assert bad.status_code == 422, body
        assert bad.json()["error"]["field"] in ("quantity", "extra")
    full = client.post(url, json={"quantity": 991}, headers=headers)  # 1,000 fit the pattern
    assert full.status_code == 409 and full.json()["error"]["field"] == "quantity"
    assert _remaining(web_sessions, batch.id) == (10, 10)
    ok = client.post(url, json={"quantity": 990}, headers=headers)
    assert ok.status_code == 201, ok.text
    assert (ok.json()["total"], ok.json()["remaining"]) == (1000, 1000)
    not_running = client.post(
        f"/v1/coupon-batches/{draft.id}/stock-additions", json={"quantity": 1}, headers=headers
    )
    assert not_running.status_code == 409 and not_running.json()["error"]["field"] == "status"
    with web_sessions() as s:
        key = make_api_key(s, scopes=["coupons:claim", "coupons:read"])
    client.cookies.clear()
    refused = client.post(url, json={"quantity": 1}, headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 403
    assert _remaining(web_sessions, batch.id) == (1000, 1000)


def test_console_batch_page_adds_stock(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        batch = make_batch(s, stock_total=10)
    sign_in(client, "admin")
    page = client.get(f"/console/coupons/{batch.id}")
    assert 'id="add-stock"' in page.text
    token = csrf_of(page.text)
    url = f"/console/coupons/{batch.id}/stock-additions"
    bad = client.post(url, data={"csrf_token": token, "quantity": "ten"})
    assert bad.status_code == 422 and "quantity" in bad.text
    assert _remaining(web_sessions, batch.id) == (10, 10)
    ok = client.post(url, data={"csrf_token": token, "quantity": "1,000"}, follow_redirects=False)
    assert ok.status_code == 303
    assert _remaining(web_sessions, batch.id) == (1010, 1010)
    assert "1,010" in client.get(f"/console/coupons/{batch.id}").text


def test_cli_adds_stock_and_runs_housekeeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    made = runner.invoke(
        app,
        [
            *("coupons", "create", "cli-batch", "--name-zh", "券", "--name-en", "Coupon"),
            *("--stock", "10", "--amount-fen", "500", "--activate"),
        ],
    )
    assert made.exit_code == 0, made.output
    batch_id = re.search(r"batch (\d+)", made.output)
    assert batch_id
    bad = runner.invoke(app, ["coupons", "add-stock", batch_id.group(1), "--quantity", "0"])
    assert bad.exit_code != 0 and "quantity" in bad.output
    added = runner.invoke(app, ["coupons", "add-stock", batch_id.group(1), "--quantity", "5"])
    assert added.exit_code == 0 and "15 of 15" in added.output, added.output
    swept = runner.invoke(app, ["coupons", "housekeeping"])
    assert swept.exit_code == 0 and "dropped 0 rate windows" in swept.output, swept.output
