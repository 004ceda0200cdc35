"""Messages name the subscriber's province and city in the message's language, never a code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import rules
from perkflow.channels.models import InboxMessage
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.settings import Settings
from tests.campaigns.helpers import NOW, dispatcher, everyone, run, started, write_profile
from tests.campaigns.helpers import spec as base_spec


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _spec(segment_id: int, **over: Any) -> dict[str, Any]:
    """Chinese copy for GD (odd ids), English copy for everyone else (ZJ)."""
    return base_spec(
        segment_id,
        variants=[
            {
                "key": "zh",
                "channel": "in_app",
                "subject": "{{ province }}专享",
                "body": "{{ city }}的用户，{{ province }}专享福利",
                "match": [{"column": "province_code", "op": "=", "value": "GD"}],
            },
            {
                "key": "en",
                "channel": "in_app",
                "locale": "en",
                "subject": "For {{ province }}",
                "body": "A gift for {{ city }}, {{ province }}",
            },
        ],
        **over,
    )


def test_dispatched_messages_carry_region_names_in_their_language(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
) -> None:
    write_profile(mart, 40)
    seg = everyone(session, mart)
    started(session, mart, vault, _spec(seg))
    run(sessions, dispatcher(vault, settings), mart)
    inbox = session.scalars(select(InboxMessage).order_by(InboxMessage.subscriber_id)).all()
    assert inbox
    by_text = {(m.title, m.body) for m in inbox}
    assert by_text == {
        ("广东专享", "广州的用户，广东专享福利"),
        ("For Zhejiang", "A gift for Hangzhou, Zhejiang"),
    }
    assert all("GD" not in m.body and "ZJ" not in m.body for m in inbox)


def test_a_campaign_locale_is_its_variants_default_and_unknown_ones_are_refused() -> None:
    raw = _spec(1, locale="en")
    raw["variants"][0].pop("match")
    raw["variants"] = raw["variants"][:1]
    assert [v.locale for v in rules.parse_spec(raw).variants] == ["en"]
    raw["variants"][0]["locale"] = "fr"
    with pytest.raises(rules.InvalidSpec) as err:
        rules.parse_spec(raw)
    assert [p.path for p in err.value.problems] == ["variants[0].locale"]


def test_region_names_are_the_short_forms_copy_uses() -> None:
    names = rules.region_names(
        [
            ("GD", "广东省", "Guangdong"),
            ("GX", "广西壮族自治区", "Guangxi"),
            ("BJ", "北京市", "Beijing"),
            ("GD01", "广州市", "Guangzhou"),
            ("BJ01", "东城区", "Dongcheng"),
            ("JL24", "延边州", "Yanbian"),
        ]
    )
    assert {c: n["zh_CN"] for c, n in names.items()} == {
        "GD": "广东",
        "GX": "广西",
        "BJ": "北京",
        "GD01": "广州",
        "BJ01": "东城区",
        "JL24": "延边州",
    }
    fields = rules.message_fields(
        {"province": "GD", "city": "XX99", "plan_fee_yuan": 79}, regions=names, locale="en"
    )
    assert fields == {"province": "Guangdong", "city": "XX99", "plan_fee_yuan": 79}
