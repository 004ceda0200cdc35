"""The evaluation page shows the CUPED line and a table per breakdown, in English and Chinese."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.factories import make_staff
from tests.insights import mart_campaign
from tests.insights.test_service import _run_campaign
from tests.web.helpers import sign_in


def test_page_shows_cuped_and_breakdowns_in_both_languages(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    with web_sessions() as s:
        b = mart_campaign.build(s, settings.mart_dir)
        unsynced = _run_campaign(s).id  # in the ledger after the sync: not in the mart
        s.commit()
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
    sign_in(client, "analyst")
    client.get("/lang/en?next=/console")
    html = client.get(f"/console/campaigns/{b.campaign.id}/evaluation").text
    line = re.search(
        r'<p class="cuped-line" data-variant="A" data-state="figure">(.*?)</p>', html, re.S
    )
    assert line, html
    assert "CUPED-adjusted uplift" in line.group(1) and "variance reduced by" in line.group(1)
    assert re.search(r"variance reduced by \d+%", line.group(1))
    assert 'id="breakdown-plan_band"' in html and 'id="breakdown-activity"' in html
    plan = re.search(r'id="breakdown-plan_band".*?</table>', html, re.S)
    assert plan and "under 59 yuan" in plan.group(0) and "129 yuan and over" in plan.group(0)
    assert "adjusted p (BH)" in plan.group(0) and "not-enough-data" in plan.group(0)  # unknown

    none = client.get(f"/console/campaigns/{unsynced}/evaluation").text
    assert 'data-state="not-enough-data"' in none and 'id="breakdowns-none"' in none
    assert "sync the history to the mart" in none

    client.get("/lang/zh_CN?next=/console")
    zh = client.get(f"/console/campaigns/{b.campaign.id}/evaluation").text
    assert "CUPED 校正后提升" in zh and "方差缩减" in zh
    assert "59 元以下" in zh and "活跃度分组" in zh and "高响应" in zh
    assert (
        "数据集市的历史中还没有这个活动"
        in client.get(f"/console/campaigns/{unsynced}/evaluation").text
    )


def test_page_splits_by_a_chosen_saved_segment(
    client: TestClient, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    from perkflow.audience import service as audience
    from perkflow.mart import Mart
    from perkflow.org.rules import SYSTEM

    with web_sessions() as s:
        b = mart_campaign.build(s, settings.mart_dir)
        high = audience.create_segment(
            s,
            mart=Mart(settings.mart_dir),
            actor=SYSTEM,
            name="High plans",
            raw={"rule": {"column": "plan_fee_yuan", "op": ">=", "value": 100}},
        )
        s.commit()
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
    sign_in(client, "analyst")
    client.get("/lang/en?next=/console")
    url = f"/console/campaigns/{b.campaign.id}/evaluation"
    plain = client.get(url).text
    assert 'id="segment-split"' in plain and "High plans" in plain
    assert f'id="breakdown-segment-{high.id}"' not in plain
    # The picker's empty choice asks for no split.
    assert f'id="breakdown-segment-{high.id}"' not in client.get(url + "?segment=").text
    html = client.get(f"{url}?segment={high.id}").text
    table = re.search(rf'id="breakdown-segment-{high.id}".*?</table>', html, re.S)
    assert table, html
    assert "in the segment" in table.group(0) and "not in the segment" in table.group(0)
    members = sum(1 for fee in b.fee if fee is not None and fee >= 100)
    targets_in = sum(
        1 for fee, cell in zip(b.fee, b.cell, strict=True) if cell == "target" and (fee or 0) >= 100
    )
    assert members > targets_in > 0
    assert f"/ {targets_in:,}<" in table.group(0)
    bad = client.get(f"{url}?segment=abc")
    assert bad.status_code == 422 and "segment" in bad.text
    assert client.get(f"{url}?segment={high.id + 99}").status_code == 404
    client.get("/lang/zh_CN?next=/console")
    zh = client.get(f"{url}?segment={high.id}").text
    assert "按客户群拆分" in zh and "在客户群内" in zh and "不在客户群内" in zh
