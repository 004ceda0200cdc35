"""The wizard's segment-size fragment reveals nothing of other provinces' segments."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import service as audience
from perkflow.mart import Mart
from perkflow.org.rules import Role
from perkflow.settings import Settings
from tests.campaigns.helpers import staff, write_profile
from tests.factories import make_staff
from tests.web.helpers import sign_in

ZJ = staff(Role.PROVINCE_MARKETER, "CN/ZJ", "zj")


def test_another_provinces_segment_answers_as_one_that_does_not_exist(
    client: TestClient, settings: Settings, web_sessions: sessionmaker[Session]
) -> None:
    mart = Mart(settings.mart_dir)
    write_profile(mart, 20)
    with web_sessions() as s:
        zj_segment = audience.create_segment(s, mart=mart, actor=ZJ, name="ZJ big plans", raw={})
        gd_segment = audience.create_segment(
            s, mart=mart, actor=staff(Role.PROVINCE_MARKETER, "CN/GD", "gd"), name="GD", raw={}
        )
        s.commit()
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="clerk", role=Role.CLERK, region="GD01S1")
        foreign, own = zj_segment.id, gd_segment.id
    sign_in(client, "gd")
    url = "/console/campaigns/segment-size"
    mine = client.get(url, params={"segment_id": own})
    assert re.search(r'id="segment-size-count">10<', mine.text), mine.text  # GD's half
    theirs = client.get(url, params={"segment_id": foreign})
    missing = client.get(url, params={"segment_id": foreign + 1000})
    assert theirs.status_code == missing.status_code == 200
    assert theirs.text == missing.text
    assert "segment-size-count" not in theirs.text and "province" not in theirs.text
    # Someone who cannot build campaigns is refused the wizard's fragment as the wizard itself.
    clerk = TestClient(client.app, base_url="http://127.0.0.1")
    sign_in(clerk, "clerk")
    assert clerk.get(url, params={"segment_id": own}).status_code == 403
    assert clerk.get("/console/campaigns/new").status_code == 403
