"""Audience console pages and JSON API through the real app (no browser)."""

from __future__ import annotations

import io
import os
import re
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from fastapi.responses import FileResponse
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import marts
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.models import AuditEntry
from perkflow.org.rules import Role
from perkflow.settings import Settings
from perkflow.synth.service import generate_operator
from tests.audience.helpers import features
from tests.factories import make_api_key, make_staff
from tests.web.helpers import csrf_of, sign_in


@pytest.fixture
def home(client: TestClient, settings: Settings, web_sessions: sessionmaker[Session]) -> TestClient:
    vault = Vault(settings.master_secret)
    with web_sessions() as s:
        generate_operator(
            s,
            mart=Mart(settings.mart_dir),
            truth_dir=settings.truth_dir,
            vault=vault,
            n=1200,
            seed=3,
        )
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
    return client


def _csrf(client: TestClient) -> str:
    return csrf_of(client.get("/console/segments/new").text)


def _count(html: str) -> int:
    found = re.search(r'id="segment-count">([\d,]+)<', html)
    assert found, html
    return int(found.group(1).replace(",", ""))


def test_builder_previews_saves_and_builds_a_target_list(home: TestClient) -> None:
    client = home
    sign_in(client, "admin")
    page = client.get("/console/segments/new")
    assert page.status_code == 200 and 'id="segment-form"' in page.text
    token = csrf_of(page.text)
    everyone = client.post("/console/segments/preview", data={"csrf_token": token, "match": "all"})
    total = _count(everyone.text)
    assert total == 1200
    form = {
        "csrf_token": token,
        "match": "all",
        "column": ["province_code", "plan_fee_yuan"],
        "op": ["in", ">="],
        "value": ["GD, ZJ", "79"],
        "exclude": ["churned"],
    }
    narrowed = _count(client.post("/console/segments/preview", data=form).text)
    assert 0 < narrowed < total
    bad = client.post("/console/segments/preview", data={**form, "value": ["GD, XX", "cheap"]})
    assert "rule.all[1].value" in bad.text and 'id="preview-errors"' in bad.text
    row = client.get("/console/segments/builder/row")
    assert 'name="column"' in row.text
    saved = client.post(
        "/console/segments", data={**form, "name": "GD and ZJ, 79+"}, follow_redirects=False
    )
    assert saved.status_code == 303
    detail = client.get(saved.headers["location"])
    assert "GD and ZJ, 79+" in detail.text and "v1" in detail.text
    built = client.post(
        saved.headers["location"] + "/target-lists",
        data={"csrf_token": token, "channel": "sms", "control_percent": "10", "send_at": ""},
        follow_redirects=False,
    )
    assert built.status_code == 303
    tl = client.get(built.headers["location"])
    assert tl.status_code == 200
    assert 'id="split"' in tl.text and 'id="reason-frequency_cap"' in tl.text
    lists = client.get("/console/target-lists")
    assert 'id="universal-control"' in lists.text and "GD and ZJ, 79+" in lists.text


def test_the_builder_offers_response_features_and_previews_on_them(
    home: TestClient, settings: Settings
) -> None:
    client = home
    sign_in(client, "admin")
    assert 'value="contacts_30d"' not in client.get("/console/segments/builder/row").text
    mart = Mart(settings.mart_dir)
    ids = mart.table(marts.PROFILE).to_pyarrow()["subscriber_id"].to_pylist()[:6]
    features(
        mart,
        [{"subscriber_id": sid, "contacts_30d": n} for n, sid in enumerate(ids)],
        at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    # The rule row's column list (the console speaks Chinese by default) has them as a group.
    row = client.get("/console/segments/builder/row").text
    assert 'label="响应特征"' in row and '<option value="contacts_30d"' in row
    assert "近 30 天消息数（疲劳度）" in row
    page = client.get("/console/segments/new")
    form = {
        "csrf_token": csrf_of(page.text),
        "match": "all",
        "column": ["contacts_30d"],
        "op": [">="],
        "value": ["3"],
    }
    assert _count(client.post("/console/segments/preview", data=form).text) == 3


def test_a_bad_save_is_refused_with_the_path_and_nothing_is_stored(home: TestClient) -> None:
    client = home
    sign_in(client, "admin")
    token = _csrf(client)
    r = client.post(
        "/console/segments",
        data={
            "csrf_token": token,
            "name": "broken",
            "mode": "json",
            "definition_json": '{"rule": {"column": "plan_fee", "op": ">", "value": 1}}',
        },
    )
    assert r.status_code == 422
    assert "rule.column" in r.text and "plan_fee" in r.text
    assert "broken" not in client.get("/console/segments").text


def test_a_marketer_previews_their_province_only(home: TestClient) -> None:
    client = home
    sign_in(client, "gd")
    token = _csrf(client)
    html = client.post("/console/segments/preview", data={"csrf_token": token}).text
    assert 0 < _count(html) < 1200
    api = client.post(
        "/v1/segments/count",
        json={"definition": {}},
        headers={"X-CSRF-Token": token},
    )
    assert api.status_code == 200
    assert set(api.json()["by_province"]) == {"GD"}
    assert client.get("/console/extractions").status_code == 403


def test_api_count_and_errors(home: TestClient) -> None:
    client = home
    sign_in(client, "admin")
    token = _csrf(client)
    headers = {"X-CSRF-Token": token}
    r = client.post(
        "/v1/segments/count", json={"definition": {"exclude": ["churned"]}}, headers=headers
    )
    body = r.json()
    assert r.status_code == 200 and body["count"] == sum(body["by_province"].values())
    bad = client.post(
        "/v1/segments/preview",
        json={"definition": {"rule": {"all": [{"column": "gender", "op": "<", "value": "x"}]}}},
        headers=headers,
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["field"] == "rule.all[0].op"
    assert error["details"]["errors"][0]["op"] == "<"
    made = client.post(
        "/v1/segments",
        json={
            "name": "api",
            "definition": {"rule": {"column": "gender", "op": "=", "value": "male"}},
        },
        headers=headers,
    )
    assert made.status_code == 201
    sid = made.json()["id"]
    tl = client.post(
        "/v1/target-lists",
        json={"segment_id": sid, "channel": "email", "control_share": 0.2, "salt": "api-1"},
        headers=headers,
    )
    assert tl.status_code == 201
    out = tl.json()
    assert out["control_share_bp"] == 2000 and out["members"] > 0
    rows = client.get(f"/v1/target-lists/{out['id']}/rows?cell=control&limit=5").json()
    assert len(rows) == 5 and {r["cell"] for r in rows} == {"control"}
    assert client.get("/v1/universal-control").json()["share_bp"] == 500


def test_a_channel_key_adds_opt_outs_and_the_mart_follows(
    home: TestClient, settings: Settings, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        key = make_api_key(s, scopes=["optouts:write"])
        weak = make_api_key(s, scopes=["subscribers:read"])
    auth = {"Authorization": f"Bearer {key}"}
    r = home.post("/v1/contact-lists", json={"subscriber_id": 5, "channel": "sms"}, headers=auth)
    assert r.status_code == 201, r.text
    mart = Mart(settings.mart_dir)
    rows = mart.table(marts.CONTACT_LISTS).to_pyarrow().to_pylist()
    assert [(x["subscriber_id"], x["channel"]) for x in rows] == [(5, "sms")]
    denied = home.post(
        "/v1/contact-lists", json={"subscriber_id": 6}, headers={"Authorization": f"Bearer {weak}"}
    )
    assert denied.status_code == 403
    gone = home.delete("/v1/contact-lists/5?channel=sms", headers=auth)
    assert gone.status_code == 204
    assert mart.table(marts.CONTACT_LISTS).count().to_pyarrow().as_py() == 0


def test_extraction_page_saves_a_template_and_downloads_masked_rows(
    home: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    client = home
    sign_in(client, "analyst")
    page = client.get("/console/extractions")
    assert page.status_code == 200
    token = csrf_of(page.text)
    source = """
name: Guangdong heavy data users
columns: [subscriber_id, phone, city_code, data_mb]
rule:
  all:
    - {column: province_code, op: "=", value: GD}
    - {column: data_mb, op: ">=", value: {param: min_mb}}
parameters:
  - {name: min_mb, type: number, default: 1000}
"""
    saved = client.post(
        "/console/extractions", data={"csrf_token": token, "source": source}, follow_redirects=False
    )
    assert saved.status_code == 303
    page = client.get("/console/extractions")
    assert "Guangdong heavy data users" in page.text and 'name="param_min_mb"' in page.text
    assert "reveal" not in page.text  # an analyst may not reveal phones
    tid = int(re.search(r"/console/extractions/(\d+)/run", page.text).group(1))  # type: ignore[union-attr]
    r = client.post(
        f"/console/extractions/{tid}/run",
        data={"csrf_token": token, "param_min_mb": "2000", "format": "csv"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(r.content))
    assert table.column_names == ["subscriber_id", "phone", "city_code", "data_mb"]
    assert all("****" in p for p in table["phone"].to_pylist())
    assert min(table["data_mb"].to_pylist()) >= 2000
    with web_sessions() as s:
        export, download = s.scalars(
            select(AuditEntry).order_by(AuditEntry.id.desc()).limit(2)
        ).all()[::-1]
        assert export.action == "extraction.export"
        assert export.details["rows"] == table.num_rows
        assert download.action == "extraction.download"
        assert download.target_id == export.details["file"]
    bad = client.post(
        "/console/extractions", data={"csrf_token": token, "source": "name: x\ncolumns: [salary]"}
    )
    assert bad.status_code == 422 and "columns[0]" in bad.text


def test_a_revealed_export_is_owner_only_and_gone_once_downloaded(
    home: TestClient, settings: Settings, web_sessions: sessionmaker[Session]
) -> None:
    exports = settings.exports_dir
    exports.chmod(0o755)  # as an older version left it
    stale = exports / "Old-20261101T000000Z-1.csv"
    stale.write_text("subscriber_id,phone\n1,13800000001\n")
    os.utime(stale, (time.time() - settings.export_ttl_s - 60,) * 2)
    seen: dict[str, int] = {}
    real_replace = Path.replace

    def spy(self: Path, target: Path) -> Path:
        # The moment the export is complete on disk, before it is sent.
        seen["file"] = stat.S_IMODE(self.stat().st_mode)
        seen["folder"] = stat.S_IMODE(self.parent.stat().st_mode)
        return real_replace(self, target)

    sign_in(home, "admin")
    token = _csrf(home)
    source = (
        "name: Reveal GD\ncolumns: [subscriber_id, phone]\n"
        "rule: {column: province_code, op: '=', value: GD}\n"
    )
    home.post("/console/extractions", data={"csrf_token": token, "source": source})
    page = home.get("/console/extractions")
    tid = int(re.search(r"/console/extractions/(\d+)/run", page.text).group(1))  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "replace", spy)
        r = home.post(
            f"/console/extractions/{tid}/run",
            data={"csrf_token": token, "format": "csv", "reveal": "1"},
        )
    assert r.status_code == 200
    phones = pacsv.read_csv(io.BytesIO(r.content))["phone"].to_pylist()
    assert phones and all(len(str(p)) == 11 and "*" not in str(p) for p in phones)
    assert seen == {"file": 0o600, "folder": 0o700}
    assert stat.S_IMODE(exports.stat().st_mode) == 0o700
    # Sent, then deleted; the stale export of yesterday went with this one's start.
    assert list(exports.iterdir()) == []
    with web_sessions() as s:
        audit = s.scalars(
            select(AuditEntry).where(AuditEntry.action.like("extraction.%")).order_by(AuditEntry.id)
        ).all()
    assert [(a.action, a.target_id) for a in audit] == [
        ("extraction.expire", stale.name),
        ("extraction.export", str(tid)),
        ("extraction.download", audit[1].details["file"]),
    ]


def test_a_download_cut_short_still_deletes_the_file(
    home: TestClient, settings: Settings, web_sessions: sessionmaker[Session]
) -> None:
    sign_in(home, "admin")
    token = _csrf(home)
    source = (
        "name: Cut\ncolumns: [subscriber_id, phone]\n"
        "rule: {column: province_code, op: '=', value: GD}\n"
    )
    home.post("/console/extractions", data={"csrf_token": token, "source": source})
    page = home.get("/console/extractions")
    tid = int(re.search(r"/console/extractions/(\d+)/run", page.text).group(1))  # type: ignore[union-attr]

    with pytest.MonkeyPatch.context() as mp:
        # The file's body never reaches the client: the response is cut after it started.
        mp.setattr(FileResponse, "__call__", _failing_call)
        with pytest.raises(OSError):
            home.post(
                f"/console/extractions/{tid}/run",
                data={"csrf_token": token, "format": "csv", "reveal": "1"},
            )
    assert list(settings.exports_dir.iterdir()) == []
    with web_sessions() as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert last is not None and last.action == "extraction.download_failed"


async def _failing_call(self: FileResponse, scope: object, receive: object, send: object) -> None:
    assert Path(self.path).exists()  # the export is there while it is being sent
    raise OSError("connection reset by peer")
