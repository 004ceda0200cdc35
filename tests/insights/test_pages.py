"""The evaluation page (tables, verdict, chart data) and its JSON twin under /v1."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.org.rules import Role
from tests.factories import make_api_key, make_staff
from tests.insights.test_service import _run_campaign
from tests.web.helpers import sign_in


def _chart(html: str, name: str) -> dict:  # type: ignore[type-arg]
    found = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert found, f"no {name}"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_evaluation_page_shows_cells_uplift_verdicts_and_charts(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        campaign_id = _run_campaign(s).id
        s.commit()
        make_staff(s, username="analyst", role=Role.ANALYST, region="CN")
        make_staff(s, username="zj", role=Role.PROVINCE_MARKETER, region="ZJ")
        key = make_api_key(s, scopes=["campaigns:read"])
        weak = make_api_key(s, scopes=["coupons:read"])
    url = f"/console/campaigns/{campaign_id}/evaluation"
    assert client.get(url, follow_redirects=False).status_code == 303  # sign in first

    sign_in(client, "analyst")
    page = client.get(url)
    assert page.status_code == 200, page.text
    html = page.text
    # The headline of a campaign that rolled out is its rollout wave: variant B in ZJ, 60 targets.
    assert 'id="cell-target"' in html and ">60<" in html
    assert "/static/insights.js" in html
    cumulative = _chart(html, "chart-cumulative-data")
    assert cumulative["days"] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert cumulative["series"][0]["data"][-1] == 0.15
    uplift = _chart(html, "chart-uplift-data")
    assert uplift["categories"][1:] == ["B"]  # after "All", in the page's language
    bars = zip(uplift["uplift"], uplift["low"], uplift["high"], strict=True)
    assert all(lo < u < hi for u, lo, hi in bars)
    assert uplift["significant"] == [False, False]
    # The rollout's uplift is noise, and the page says so next to it.
    # The headline, variant B and province ZJ (the other readings have a table of their own).
    readings = re.search(r'<table class="data" id="readings">.*?</table>', html, re.S)
    assert readings and "not-significant" in readings.group(0)  # treated-on-treated
    assert html.replace(readings.group(0), "").count("not-significant") == 3
    assert 'id="provinces"' in html
    test_wave = client.get(url + "?wave=test").text
    assert _chart(test_wave, "chart-uplift-data")["significant"] == [True, True]

    rollout = client.get(url + "?wave=rollout")
    assert rollout.status_code == 200 and "not-significant" in rollout.text
    assert client.get(url + "?wave=later").status_code == 422

    api = client.get(f"/v1/campaigns/{campaign_id}/evaluation")  # the signed-in browser
    assert api.status_code == 200
    assert api.json()["cells"]["target"]["contacts"] == 60

    client.cookies.clear()
    keyed = client.get(
        f"/v1/campaigns/{campaign_id}/evaluation?wave=test",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert keyed.status_code == 200, keyed.text
    body = keyed.json()
    assert body["wave"] == "test" and body["cells"]["control"]["contacts"] == 10
    assert set(body["uplift"]) >= {"absolute", "relative", "ci95", "p_value"}
    refused = client.get(
        f"/v1/campaigns/{campaign_id}/evaluation", headers={"Authorization": f"Bearer {weak}"}
    )
    assert refused.status_code == 403
    assert client.get(f"/v1/campaigns/{campaign_id}/evaluation").status_code == 401

    sign_in(client, "zj")  # a national campaign is not a province marketer's
    assert client.get(url).status_code == 403


def test_the_page_speaks_chinese_and_english(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        campaign_id = _run_campaign(s).id
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "admin")
    client.get("/lang/zh_CN?next=/console")
    html = client.get(f"/console/campaigns/{campaign_id}/evaluation").text
    assert "效果评估" in html and "不显著" in html and "目标组" in html
    # Provinces by name in the page's language, never as codes.
    provinces = html[html.index('id="provinces"') :]
    assert "<td>浙江省</td>" in provinces and "<td>ZJ</td>" not in provinces
    client.get("/lang/en?next=/console")
    html = client.get(f"/console/campaigns/{campaign_id}/evaluation").text
    assert (
        "Evaluation" in html
        and "not significant" in html
        and "Uplift with its 95% interval" in html
    )
    assert "<td>Zhejiang" in html[html.index('id="provinces"') :]
