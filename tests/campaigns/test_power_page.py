"""Power before the start: the campaign page shows what its split can detect, or warns."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.insights import presentation
from perkflow.insights.stats import power
from tests.campaigns.test_pages import frozen, home, wizard_form  # noqa: F401  (fixtures)
from tests.web.helpers import csrf_of, sign_in


def test_the_campaign_page_shows_the_mde_and_warns_of_a_small_control(
    client: TestClient,
    home: int,  # noqa: F811  (the fixture imported above)
    web_sessions: sessionmaker[Session],
) -> None:
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post("/console/campaigns/new", data=wizard_form(token, home), follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"]).text
    assert 'id="power"' in page and 'id="power-test"' in page and 'id="power-all"' in page
    # The GD marketer's segment counts GD's 30 subscribers: 20 % control, a 50 % test wave.
    cells = re.search(r'id="power-all"><td>[^<]*</td><td class="num">([\d,]+)</td>'
                      r'<td class="num">([\d,]+)</td>', page)  # fmt: skip
    assert cells is not None
    target, control = int(cells[1]), int(cells[2])
    assert (target, control) == (24, 6)
    mde = power.mde(base_rate=power.DEFAULT_BASE_RATE, target=24, control=6)
    shown = "—" if mde is None else f"{mde * 100:+.2f}"
    assert shown in page
    assert 'class="badge bad control-too-small"' in page  # 6 controls at 5 % expect 0.3
    # The API's campaign JSON carries the same plan.
    cid = r.headers["location"].rsplit("/", 1)[1]
    api = client.get(f"/v1/campaigns/{cid}").json()["power"]
    assert api["control_too_small"] and api["base_rate_source"] == "default"
    everything = next(row for row in api["rows"] if row["wave"] == "all")
    assert (everything["target"], everything["control"]) == (24, 6)
    assert everything["mde"] == mde


def test_power_plan_of_a_large_list_does_not_warn() -> None:
    plan = presentation.power_plan(members=200_000, control_share_bp=1_000, test_share_bp=2_000)
    assert plan is not None and not plan["control_too_small"]
    test, everything = plan["rows"]
    assert (test["target"], test["control"]) == (36_000, 4_000)
    assert everything["mde"] < test["mde"] < 0.02
    assert presentation.power_plan(members=0, control_share_bp=1_000, test_share_bp=0) is None
