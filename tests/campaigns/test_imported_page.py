"""An imported campaign's console page: what it is and where it came from, with no run controls."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.insights import service as insights
from perkflow.org.rules import SYSTEM, Role
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in


def _import(sessions: sessionmaker[Session], tmp_path: Path) -> int:
    lines = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    lines += [f"{i},target,mens,2026-03-01T10:00:00+08:00,{int(i % 5 == 0)}," for i in range(1, 41)]
    lines += [f"{i},control,,2026-03-01T10:00:00+08:00,{int(i % 10 == 0)}," for i in range(41, 61)]
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with sessions() as s:
        campaign = insights.import_history_csv(
            s, actor=SYSTEM, path=path, name="Hillstrom e-mail test", source="hillstrom"
        )
        s.commit()
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")
        return campaign.id


def test_imported_campaign_page_shows_its_source_and_cells_without_run_controls(
    client: TestClient, web_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    campaign_id = _import(web_sessions, tmp_path)
    sign_in(client, "hq")
    page = client.get(f"/console/campaigns/{campaign_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="import-source"' in html and "hillstrom" in html
    assert 'id="imported-at"' in html
    assert 'id="cell-target"' in html and 'id="cell-control"' in html
    assert 'id="variant-mens"' in html
    assert f'href="/console/campaigns/{campaign_id}/evaluation"' in html
    for control in ("start-campaign", "pause-campaign", "approve-campaign", "submit-campaign"):
        assert control not in html
    assert client.get(f"/console/campaigns/{campaign_id}/evaluation").status_code == 200
    assert client.get(f"/console/campaigns/{campaign_id}/monitor").status_code == 200
    listing = client.get("/console/campaigns")
    assert listing.status_code == 200 and f'id="campaign-row-{campaign_id}"' in listing.text

    # A run step sent by hand is refused, and the page says why instead of failing.
    token = csrf_of(html)
    refused = client.post(
        f"/console/campaigns/{campaign_id}/start",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert refused.status_code == 409, refused.text
    assert 'id="action-error"' in refused.text and 'id="import-source"' in refused.text


def test_imported_campaign_page_in_chinese(
    client: TestClient, web_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    campaign_id = _import(web_sessions, tmp_path)
    sign_in(client, "hq")
    page = client.get(f"/console/campaigns/{campaign_id}", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 200
    assert "历史来源" in page.text and "已匹配到本网用户" in page.text
