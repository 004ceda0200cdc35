"""What the evaluation page says about its own design: the sample-ratio check, which wave the
headline is (and the test wave and pooled figure beside it), treated-on-treated labelled as such,
and which control each variant is compared with."""

from __future__ import annotations

import html as markup
import re
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns.models import Campaign
from perkflow.insights import service as insights
from perkflow.kit.money import format_fen
from perkflow.org.rules import SYSTEM, Role
from tests.factories import make_staff
from tests.insights.test_service import _campaign, _contacts, _run_campaign, _wave
from tests.web.helpers import sign_in


def _text(fragment: str) -> str:
    return markup.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip())


def _element(html: str, id_: str) -> str:
    found = re.search(rf'<(\w+)[^>]*id="{id_}"[^>]*>(.*?)</\1>', html, re.S)
    assert found, f"no #{id_}"
    return _text(found.group(2))


def _page(
    client: TestClient, web_sessions: sessionmaker[Session], build: object, user: str = "analyst"
) -> str:
    with web_sessions() as s:
        campaign_id = build(s).id  # type: ignore[operator]
        s.commit()
        make_staff(s, username=user, role=Role.ANALYST, region="CN")
    sign_in(client, user)
    client.get("/lang/en?next=/console")
    page = client.get(f"/console/campaigns/{campaign_id}/evaluation")
    assert page.status_code == 200, page.text
    return page.text


def test_a_rolled_out_campaign_shows_its_design_and_the_other_readings(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    html = _page(client, web_sessions, _run_campaign)
    # Rollout: 60 targets, 20 controls against a planned 20 %: chi-square p 0.26, as planned.
    assert _element(html, "srm-ok") == "Split as planned: 25.0% control (planned 20%)"
    assert 'id="srm-warning"' not in html
    headline = _element(html, "headline-wave")
    assert "Headline: the rollout wave, the confirmatory estimate" in headline
    assert 'data-wave="rollout"' in html
    # The test wave decided (20/40 against 1/10: +40 points); every wave pooled: 29/100 − 3/30.
    test_wave = _element(html, "reading-test-wave")
    assert test_wave.startswith("Test wave (decided the rollout) 50.00% / 40 10.00% / 10 +40.00")
    pooled = _element(html, "reading-pooled")
    assert pooled.startswith("All waves pooled 29.00% / 100 10.00% / 30 +19.00")
    # Treated-on-treated: 59 of the 60 rollout targets went out (one failed), 9 responded.
    treated = _element(html, "reading-treated-on-treated")
    assert treated.startswith(
        "Among those actually reached (treated-on-treated, not the headline) 15.25% / 59"
    )
    assert "+5.25" in treated
    assert "the 59 targets whose message went out, of 60 assigned" in _element(html, "treated-note")
    # The headline itself stays intent to treat: 9 of 60 against 2 of 20, +5.00 points.
    assert _element(html, "uplift") == "+5.00"
    # Variant B against its own 20 control rows.
    variants = html[html.index('id="variants"') :]
    assert "its own controls (20)" in _text(variants)
    assert 'data-own="yes"' in variants and 'data-own="no"' not in variants
    assert "compared with its own control rows" in _element(html, "variant-control")


def _skewed(session: Session) -> Campaign:
    campaign = _campaign(session)  # plans a 20 % control
    test = _wave(session, campaign, "test")
    _contacts(session, campaign, test, cell="target", variant="A", province="GD", n=200,
              responders=20, first_id=1)  # fmt: skip
    _contacts(session, campaign, test, cell="control", variant="A", province="GD", n=10,
              responders=1, first_id=1_000)  # fmt: skip
    return campaign


def test_a_skewed_split_shows_the_sample_ratio_warning(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    html = _page(client, web_sessions, _skewed)
    # 10 controls of 210 against a planned 20 %: chi-square 30.1, p < 0.0001.
    warning = _element(html, "srm-warning")
    assert warning.startswith("Sample ratio mismatch")
    assert "4.8% control (planned 20%), chi-square p = < 0.0001" in warning
    assert "do not act on the uplift" in warning
    assert 'id="srm-ok"' not in html
    assert _element(html, "headline-wave").startswith("Headline: every wave together.")
    assert 'id="reading-test-wave"' not in html and 'id="reading-pooled"' not in html


def test_an_imported_history_says_its_variants_share_the_control(
    client: TestClient, web_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    lines = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    for i in range(100):
        lines.append(f"{i + 1},target,A,2026-03-01 10:00,{int(i < 30)},")
        lines.append(f"{i + 101},target,B,2026-03-01 10:00,{int(i < 12)},")
        lines.append(f"{i + 201},control,,2026-03-01 10:00,{int(i < 10)},")
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def build(s: Session) -> object:
        return insights.import_history_csv(
            s, actor=SYSTEM, path=path, name="spring", source="spring"
        )

    html = _page(client, web_sessions, build)
    variants = _text(html[html.index('id="variants"') :])
    assert variants.count("the shared control (100)") == 2
    assert "fair only if the variants were assigned at random" in _element(html, "variant-control")
    # No planned share for an outside history, and nobody was sent anything by us.
    assert 'id="srm-ok"' not in html and 'id="srm-warning"' not in html
    assert 'id="reading-treated-on-treated"' not in html


def test_the_design_lines_read_in_chinese(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        campaign_id = _run_campaign(s).id
        s.commit()
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "admin")
    client.get("/lang/zh_CN?next=/console")
    html = client.get(f"/console/campaigns/{campaign_id}/evaluation").text
    assert _element(html, "srm-ok") == "分组符合计划：对照组占 25.0%（计划 20%）"
    assert "主要结果：推广波次" in _element(html, "headline-wave")
    assert "实际触达的用户中" in _element(html, "reading-treated-on-treated")
    assert "本版本的对照组（20）" in html


def test_the_page_shows_the_revenue_interval_or_why_there_is_none(
    client: TestClient, web_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    import numpy as np

    # 300 targets and 300 controls, every one of them spending: enough spenders for Welch.
    rng = np.random.default_rng(7)
    target = np.round(rng.lognormal(3.0, 1.0, 300) * 100)
    control = np.round(rng.lognormal(2.8, 1.0, 300) * 100)
    lines = ["subscriber_id,cell,variant,contacted_at,responded,revenue"]
    for i, fen in enumerate(target):
        lines.append(f"{i + 1},target,A,2026-03-01 10:00,1,{fen / 100:.2f}")
    for i, fen in enumerate(control):
        lines.append(f"{i + 1_001},control,,2026-03-01 10:00,1,{fen / 100:.2f}")
    path = tmp_path / "spend.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def build(s: Session) -> Campaign:
        return insights.import_history_csv(s, actor=SYSTEM, path=path, name="spend", source="s")

    html = _page(client, web_sessions, build)
    d = target.mean() - control.mean()
    half = 1.959963984540054 * np.sqrt(target.var(ddof=1) / 300 + control.var(ddof=1) / 300)
    low, high = (round((d - half) * 300), round((d + half) * 300))
    assert _element(html, "revenue-ci") == f"95% CI {format_fen(low)} – {format_fen(high)}"

    client.cookies.clear()
    small = _page(client, web_sessions, _run_campaign, user="analyst2")  # 9 spenders against 2
    assert _element(small, "revenue-ci") == (
        "sample too small for an interval: fewer than 100 contacts who spent in a cell"
    )
