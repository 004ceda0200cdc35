"""Campaign console pages through the real app (no browser): wizard, lifecycle, monitor, scope."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign, CampaignContact, CampaignWave
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.settings import Settings
from tests.campaigns.helpers import GD, HQ, HQ2, NOW, everyone, spec, write_profile
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


@pytest.fixture
def home(client: TestClient, settings: Settings, web_sessions: sessionmaker[Session]) -> int:
    """60 subscribers (odd ids in GD, even in ZJ), a national segment, staff; the segment id."""
    mart = Mart(settings.mart_dir)
    write_profile(mart, 60)
    with web_sessions() as s:
        segment_id = everyone(s, mart)
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="admin2", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        make_staff(s, username="zj", role=Role.PROVINCE_MARKETER, region="ZJ")
    return segment_id


def wizard_form(token: str, segment_id: int, **over: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf_token": token,
        "name": "Video month, GD",
        "kind": "batch",
        "goal_kind": "claim",
        "window_days": "7",
        "segment_id": str(segment_id),
        "control_percent": "20",
        "test_percent": "50",
        "offer": "none",
        "offer_name": "视频会员月卡",
        "v_key": ["A", "B"],
        "v_channel": ["in_app", "in_app"],
        "v_subject": ["{{ offer_name }}", "Hello"],
        "v_body": ["Your {{ plan_fee_yuan }}-yuan plan earns a gift", "A gift for you"],
        "v_match_column": ["plan_fee_yuan", ""],
        "v_match_op": [">=", "="],
        "v_match_value": ["100", ""],
        "weekdays": ["1", "2", "3", "4", "5", "6", "7"],
        "slots": "",
        "budget_yuan": "500",
        "throttle_in_app": "200",
    }
    form.update(over)
    return form


def campaign_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Campaign)) or 0


def test_wizard_errors_name_the_field_keep_the_input_and_save_nothing(
    client: TestClient, home: int, web_sessions: sessionmaker[Session]
) -> None:
    sign_in(client, "gd")
    page = client.get("/console/campaigns/new")
    assert page.status_code == 200 and 'id="campaign-form"' in page.text
    assert page.text.count('class="variant-row"') == 2
    token = csrf_of(page.text)
    bad = wizard_form(
        token,
        home,
        window_days="abc",
        budget_yuan="12.345",
        v_body=["", "Hi {{ nickname }}"],
        slots="9am",
    )
    r = client.post("/console/campaigns/new", data=bad)
    assert r.status_code == 422
    for path in ("goal.window_days", "budget_fen", "variants[0].body", "variants[1].body"):
        assert f"<code>{path}</code>" in r.text, path
    assert "schedule.slots[0]" in r.text
    assert "unknown field &#39;nickname&#39;" in r.text  # shown beside the variant's body
    assert 'value="Video month, GD"' in r.text and 'value="12.345"' in r.text
    assert campaign_count(web_sessions) == 0
    # An unknown profile column in a variant's condition is refused the same way.
    r = client.post(
        "/console/campaigns/new",
        data=wizard_form(token, home, v_match_column=["shoe_size", ""]),
    )
    assert r.status_code == 422 and "variants[0].match[0].column" in r.text
    assert campaign_count(web_sessions) == 0
    row = client.get("/console/campaigns/wizard/variant")
    assert 'name="v_body"' in row.text and 'class="variant-row"' in row.text
    size = client.get("/console/campaigns/segment-size", params={"segment_id": home})
    assert re.search(r'id="segment-size-count">30<', size.text), size.text  # GD's half


def test_create_submit_approve_start_dispatch_and_roll_out(
    client: TestClient, home: int, web_sessions: sessionmaker[Session], settings: Settings
) -> None:
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post("/console/campaigns/new", data=wizard_form(token, home), follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    cid = int(url.rsplit("/", 1)[1])
    page = client.get(url)
    assert "Your {{ plan_fee_yuan }}-yuan plan earns a gift" in page.text  # the template text
    assert 'id="spec-budget">¥500.00<' in page.text
    edit = client.get(f"{url}/edit")
    assert 'value="Video month, GD"' in edit.text and 'value="500.00"' in edit.text
    r = client.post(
        f"{url}/edit",
        data={**wizard_form(token, home, name="Video month, GD v2"), "version": "1"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert client.post(f"{url}/submit", data={"csrf_token": token}).status_code == 200
    page = client.get(url)
    assert 'data-status="pending_approval"' in page.text and 'id="awaiting-approval"' in page.text
    assert 'id="approve-campaign"' not in page.text  # a marketer does not approve

    # The author of a campaign may not approve it, even with the right.
    sign_in(client, "admin")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post(
        "/console/campaigns/new",
        data=wizard_form(token, home, name="HQ's own"),
        follow_redirects=False,
    )
    own = int(r.headers["location"].rsplit("/", 1)[1])
    client.post(f"/console/campaigns/{own}/submit", data={"csrf_token": token})
    queue = client.get("/console/campaigns/approvals")
    assert f'id="approval-{cid}"' in queue.text and f'id="approval-{own}"' not in queue.text
    refused = client.post(f"/console/campaigns/{own}/approve", data={"csrf_token": token})
    assert refused.status_code == 403 and "第二人审批" in refused.text  # the page is in Chinese
    r = client.post(
        f"/console/campaigns/{cid}/approve",
        data={"csrf_token": token, "note": "ok", "next_url": "/console/campaigns/approvals"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/console/campaigns/approvals")

    sign_in(client, "gd")
    token = csrf_of(client.get(url).text)
    assert 'id="start-campaign"' in client.get(url).text
    r = client.post(f"{url}/start", data={"csrf_token": token}, follow_redirects=False)
    assert r.headers["location"] == f"{url}/monitor"
    monitor = client.get(f"{url}/monitor")
    assert 'id="wave-test"' in monitor.text and 'data-live="yes"' in monitor.text
    assert 'hx-trigger="every 2s"' in monitor.text
    # The TestClient runs the background dispatch before it returns.
    r = client.post(f"{url}/dispatch", data={"csrf_token": token}, follow_redirects=False)
    assert r.headers["location"] == f"{url}/monitor?dispatched=1"
    live = client.get(f"{url}/monitor/live").text
    with web_sessions() as s:
        by_status = dict(
            s.execute(
                select(CampaignContact.status, func.count())
                .where(CampaignContact.campaign_id == cid)
                .group_by(CampaignContact.status)
            ).all()
        )
    assert set(by_status) <= {"delivered", "held"} and by_status["delivered"] > 0
    assert f'id="test-delivered">{by_status["delivered"]}<' in live
    assert f'id="test-held">{by_status.get("held", 0)}<' in live
    assert 'id="test-sent-in_app"' in live and 'data-wave-status="done"' in live
    assert 'data-live="no"' in live  # nothing left to poll for

    # Responses of the test wave, so its evaluation has numbers beside the Roll out button.
    with web_sessions() as s:
        rows = s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == cid)).all()
        for i, c in enumerate(rows):
            if c.cell == "target" or i % 2:
                campaigns.record_response(
                    s,
                    actor=SYSTEM,
                    subscriber_id=c.subscriber_id,
                    kind="claim",
                    occurred_at=NOW + timedelta(hours=1),
                    idempotency_key=f"t-{c.id}",
                    source="test",
                )
        s.commit()
    page = client.get(url)
    assert 'id="rollout-form"' in page.text and 'id="test-cells"' in page.text
    assert 'id="test-p"' in page.text and 'id="test-verdict"' in page.text
    assert f"/console/campaigns/{cid}/evaluation?wave=test" in page.text
    refused = client.post(f"{url}/rollout", data={"csrf_token": token, "note": " "})
    assert refused.status_code == 422 and "why you roll out" in refused.text
    # The gate: the response window is still open, so a plain rollout is refused, saying why.
    gated = client.post(
        f"{url}/rollout",
        data={"csrf_token": token, "note": "uplift holds", "confirm": "yes"},
        follow_redirects=False,
    )
    assert gated.status_code == 409 and "response window" in gated.text
    r = client.post(
        f"{url}/rollout",
        data={
            "csrf_token": token,
            "note": "uplift holds",
            "confirm": "yes",
            "against_evidence": "yes",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == f"{url}/monitor"
    client.post(f"{url}/dispatch", data={"csrf_token": token})
    live = client.get(f"{url}/monitor/live").text
    assert 'id="wave-rollout"' in live and 'id="rollout-delivered">' in live
    page = client.get(url)
    assert 'data-status="finished"' in page.text and 'id="rollout-done"' in page.text
    assert "uplift holds" in page.text  # the decision's note, in the audit trail
    with web_sessions() as s:
        actions = set(
            s.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(cid))).all()
        )
    assert {"campaign.approve", "campaign.rollout", "campaign.dispatch_now"} <= actions


def test_a_province_marketer_sees_only_their_province(client: TestClient, home: int) -> None:
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    r = client.post(
        "/console/campaigns/new",
        data=wizard_form(token, home, name="GD only"),
        follow_redirects=False,
    )
    url = r.headers["location"]
    listing = client.get("/console/campaigns")
    assert "GD only" in listing.text and 'id="filter-draft"' in listing.text
    assert "GD only" in client.get("/console/campaigns?status=draft").text
    assert "GD only" not in client.get("/console/campaigns?status=running").text
    sign_in(client, "zj")
    assert "GD only" not in client.get("/console/campaigns").text
    assert client.get(url).status_code == 403
    assert client.get(f"{url}/monitor").status_code == 403
    token = csrf_of(client.get("/console/campaigns/new").text)
    assert client.post(f"{url}/submit", data={"csrf_token": token}).status_code == 403
    assert client.get("/console/campaigns/approvals").status_code == 403  # no approval right
    assert client.post(f"{url}/submit", data={}).status_code == 403  # and no CSRF token


def test_reject_with_a_reason_then_pause_resume_and_finish(client: TestClient, home: int) -> None:
    sign_in(client, "gd")
    token = csrf_of(client.get("/console/campaigns/new").text)
    url = client.post(
        "/console/campaigns/new", data=wizard_form(token, home), follow_redirects=False
    ).headers["location"]
    client.post(f"{url}/submit", data={"csrf_token": token})
    sign_in(client, "admin")
    token = csrf_of(client.get(url).text)
    refused = client.post(f"{url}/reject", data={"csrf_token": token, "note": " "})
    assert refused.status_code == 422 and 'data-status="pending_approval"' in refused.text
    client.post(f"{url}/reject", data={"csrf_token": token, "note": "budget too high"})
    sign_in(client, "gd")
    page = client.get(url)
    assert 'data-status="draft"' in page.text and "budget too high" in page.text
    token = csrf_of(page.text)
    client.post(f"{url}/submit", data={"csrf_token": token})
    sign_in(client, "admin2")
    client.post(f"{url}/approve", data={"csrf_token": csrf_of(client.get(url).text)})
    sign_in(client, "gd")
    token = csrf_of(client.get(url).text)
    assert client.get(f"{url}/edit", follow_redirects=False).status_code == 303  # not a draft
    client.post(f"{url}/start", data={"csrf_token": token})
    assert 'data-status="paused"' in client.post(f"{url}/pause", data={"csrf_token": token}).text
    paused = client.get(f"{url}/monitor").text
    assert 'data-live="no"' in paused and 'id="dispatch-now"' not in paused
    assert 'data-status="running"' in client.post(f"{url}/resume", data={"csrf_token": token}).text
    finished = client.post(f"{url}/finish", data={"csrf_token": token})
    assert 'data-status="finished"' in finished.text and 'id="pause-campaign"' not in finished.text
    again = client.post(f"{url}/pause", data={"csrf_token": token})
    assert again.status_code == 409 and "finished campaign cannot pause" in again.text


def _start(
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    author: Actor,
    name: str,
    segment_id: int,
) -> int:
    """A running campaign by `author` (approved by hq2); its id."""
    with sessions() as s:
        c = campaigns.create_campaign(s, actor=author, mart=mart, raw=spec(segment_id, name=name))
        campaigns.submit_campaign(s, actor=author, campaign_id=c.id)
        campaigns.approve_campaign(s, actor=HQ2, campaign_id=c.id)
        campaigns.start_campaign(s, actor=author, mart=mart, vault=vault, campaign_id=c.id)
        s.commit()
        return c.id


def _statuses(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, int]:
    with sessions() as s:
        return dict(
            s.execute(
                select(CampaignContact.status, func.count())
                .where(CampaignContact.campaign_id == campaign_id)
                .group_by(CampaignContact.status)
            ).all()
        )


def test_dispatch_now_sends_only_the_campaign_it_was_pressed_on(
    client: TestClient,
    home: int,
    web_sessions: sessionmaker[Session],
    settings: Settings,
    vault: Vault,
) -> None:
    mart = Mart(settings.mart_dir)
    gd_own = _start(web_sessions, mart, vault, GD, "GD's own", home)
    national = _start(web_sessions, mart, vault, HQ, "National", home)
    sign_in(client, "gd")
    token = csrf_of(client.get(f"/console/campaigns/{gd_own}").text)
    # A campaign outside the marketer's region is neither shown nor dispatched.
    refused = client.post(f"/console/campaigns/{national}/dispatch", data={"csrf_token": token})
    assert refused.status_code == 403
    assert _statuses(web_sessions, national) == {} and _statuses(web_sessions, gd_own) == {}
    # The TestClient runs the background dispatch before it returns.
    r = client.post(
        f"/console/campaigns/{gd_own}/dispatch",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/console/campaigns/{gd_own}/monitor?dispatched=1"
    sent = _statuses(web_sessions, gd_own)
    assert set(sent) <= {"delivered", "held"} and sent["delivered"] > 0
    # The other running campaign was not planned, let alone sent.
    assert _statuses(web_sessions, national) == {}
    with web_sessions() as s:
        waves = {w.campaign_id: w.status for w in s.scalars(select(CampaignWave)).all()}
        assert waves == {gd_own: "done", national: "planning"}
        assert s.get(Campaign, national).status == "running"  # type: ignore[union-attr]
    # Pressed on the national campaign by someone who may, it goes out in turn.
    sign_in(client, "admin")
    token = csrf_of(client.get(f"/console/campaigns/{national}").text)
    client.post(f"/console/campaigns/{national}/dispatch", data={"csrf_token": token})
    assert _statuses(web_sessions, national).get("delivered", 0) > 0
    assert _statuses(web_sessions, gd_own) == sent


def test_fixed_paths_are_routed_before_campaign_ids() -> None:
    """The pages' parts register in order, so /console/campaigns/new is never taken for an id."""
    from perkflow.campaigns.pages import router

    paths = [getattr(r, "path", "") for r in router.routes]
    first_id = min(i for i, p in enumerate(paths) if "{campaign_id}" in p)
    fixed = [p for p in paths if p.startswith("/console/campaigns/") and "{" not in p]
    assert {"/console/campaigns/new", "/console/campaigns/approvals"} <= set(fixed)
    assert all(paths.index(p) < first_id for p in fixed), paths
