"""Pure campaign rules: the spec's validation, templates, timing, the lifecycle table."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest

from perkflow.campaigns import rules
from perkflow.campaigns.rules import Action, CampaignStatus, Schedule

COLUMNS = {"plan_fee_yuan": "integer", "province_code": "string", "churn_risk": "number"}


def good(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "Autumn video",
        "segment_id": 3,
        "goal": {"kind": "claim", "window_days": 14},
        "offer": {"kind": "coupon_batch", "id": 7, "category": "video", "cost_fen": 500},
        "variants": [
            {
                "key": "A",
                "channel": "sms",
                "body": "{{ plan_fee_yuan }} yuan plan: {{ offer_name }}",
                "match": [{"column": "plan_fee_yuan", "op": ">=", "value": 100}],
            },
            {"key": "B", "channel": "in_app", "subject": "Hi", "body": "For you"},
        ],
        "schedule": {
            "starts_at": "2026-11-01T09:00:00+08:00",
            "ends_at": "2026-11-30T21:00:00+08:00",
            "weekdays": [1, 2, 3, 4, 5],
            "slots": [["09:00", "12:00"], ["14:00", "20:00"]],
            "skip_holidays": True,
        },
        "control_share": 10,
        "test_share": "5%",
        "throttle": {"sms": 200},
        "budget_fen": 100_000,
        "stock_cap": 150,
    }
    raw.update(over)
    return raw


def problems(raw: Any) -> dict[str, str]:
    with pytest.raises(rules.InvalidSpec) as exc:
        rules.parse_spec(raw, columns=COLUMNS)
    return {p.path: p.message for p in exc.value.problems}


def test_a_good_spec_parses_into_its_parts() -> None:
    spec = rules.parse_spec(good(), columns=COLUMNS)
    assert spec.control_share_bp == 1000 and spec.test_share_bp == 500
    assert spec.kind == rules.CampaignKind.BATCH and spec.channels == ("sms", "in_app")
    assert spec.schedule.slots == ((time(9), time(12)), (time(14), time(20)))
    assert spec.schedule.starts_at == datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    # The stock for 150; the budget for 2,000 at the prior take-up (coupons paid when redeemed).
    assert rules.contact_cap(spec) == 150
    # The stored form parses back to the same spec.
    assert rules.spec_of(rules.spec_columns(spec)) == spec
    assert rules.parse_spec(good(control_share_bp=1500), columns=COLUMNS).control_share_bp == 1500


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"segment_id": "three"}, "segment_id"),
        ({"segment_id": None}, "segment_id"),
        ({"goal": {"kind": "click", "window_days": 3}}, "goal.kind"),
        ({"goal": {"kind": "claim", "window_days": 0}}, "goal.window_days"),
        ({"offer": {"kind": "voucher"}}, "offer.kind"),
        ({"offer": {"kind": "benefit"}}, "offer.id"),
        ({"offer": {"kind": "benefit", "id": 2, "category": 5}}, "offer.category"),
        ({"offer": {"kind": "benefit", "id": 2, "cost_fen": -1}}, "offer.cost_fen"),
        ({"variants": []}, "variants"),
        ({"control_share": 60}, "control_share"),
        ({"control_share": "ten"}, "control_share"),
        ({"test_share": 51}, "test_share"),
        ({"throttle": {"fax": 3}}, "throttle.fax"),
        ({"throttle": {"sms": 0}}, "throttle.sms"),
        ({"budget_fen": -5}, "budget_fen"),
        ({"stock_cap": 0}, "stock_cap"),
        ({"trigger": {"events": ["birthday"]}}, "trigger.events"),
        (
            {"trigger": {"events": ["recharge"], "where": [{"attribute": "x", "op": "~"}]}},
            "trigger.where[0].op",
        ),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    assert field in problems(good(**change))


@pytest.mark.parametrize(
    ("variant", "field"),
    [
        ({"key": "A b", "channel": "sms", "body": "x"}, "variants[0].key"),
        ({"key": "A", "channel": "fax", "body": "x"}, "variants[0].channel"),
        ({"key": "A", "channel": "sms", "body": ""}, "variants[0].body"),
        ({"key": "A", "channel": "sms", "body": "{{ phone }}"}, "variants[0].body"),
        ({"key": "A", "channel": "sms", "body": "{% if %}"}, "variants[0].body"),
        (
            {"key": "A", "channel": "sms", "subject": "{{ x.__class__ }}", "body": "x"},
            "variants[0].subject",
        ),
        (
            {
                "key": "A",
                "channel": "sms",
                "body": "x",
                "match": [{"column": "plan_fee", "op": ">", "value": 1}],
            },
            "variants[0].match[0].column",
        ),
        (
            {
                "key": "A",
                "channel": "sms",
                "body": "x",
                "match": [{"column": "plan_fee_yuan", "op": ">", "value": "a"}],
            },
            "variants[0].match[0].value",
        ),
        ({"key": "A", "channel": "sms", "body": "x"}, "variants[0].match"),  # no match, not last
    ],
)
def test_variant_problems_name_the_variant_field(variant: dict[str, Any], field: str) -> None:
    last = {"key": "Z", "channel": "in_app", "body": "default"}
    assert field in problems(good(variants=[variant, last]))


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"starts_at": "tomorrow"}, "schedule.starts_at"),
        ({"starts_at": "2026-11-01T09:00:00"}, "schedule.starts_at"),
        (
            {"starts_at": "2026-11-02T09:00:00+08:00", "ends_at": "2026-11-01T09:00:00+08:00"},
            "schedule.ends_at",
        ),
        ({"weekdays": [0, 8]}, "schedule.weekdays"),
        ({"slots": [["12:00", "09:00"]]}, "schedule.slots[0]"),
        ({"slots": [["nine", "ten"]]}, "schedule.slots[0]"),
        ({"skip_holidays": "yes"}, "schedule.skip_holidays"),
    ],
)
def test_schedule_problems_name_the_field(schedule: dict[str, Any], field: str) -> None:
    assert field in problems(good(schedule=schedule))


def test_every_problem_is_reported_at_once() -> None:
    found = problems(good(name="", goal={"kind": "x"}, control_share=99))
    assert {"name", "goal.kind", "control_share"} <= set(found)


def test_templates_run_sandboxed_with_whitelisted_fields() -> None:
    assert rules.template_problem("{{ masked_phone }}: {{ offer_name }}") is None
    assert "unknown field 'password'" in (rules.template_problem("{{ password }}") or "")
    assert rules.template_problem("{{ ''.__class__.__mro__ }}") is not None
    text = rules.render(
        "{{ province }} {{ plan_fee_yuan }}", {"province": "ZJ", "plan_fee_yuan": 59}
    )
    assert text == "ZJ 59"


def test_the_first_matching_variant_wins_and_the_last_is_the_default() -> None:
    spec = rules.parse_spec(good(), columns=COLUMNS)
    assert rules.variant_for(spec.variants, {"plan_fee_yuan": 129}).key == "A"  # type: ignore[union-attr]
    assert rules.variant_for(spec.variants, {"plan_fee_yuan": 59}).key == "B"  # type: ignore[union-attr]
    # A missing value satisfies no condition: the default applies.
    assert rules.variant_for(spec.variants, {}).key == "B"  # type: ignore[union-attr]


def test_trigger_where_on_event_attributes() -> None:
    spec = rules.parse_spec(
        good(
            segment_id=None,
            test_share=0,
            trigger={
                "events": ["data_threshold"],
                "where": [{"attribute": "percent", "op": ">=", "value": 80}],
            },
        ),
        columns=COLUMNS,
    )
    assert spec.trigger is not None and spec.kind == rules.CampaignKind.TRIGGER
    assert spec.trigger.fires("data_threshold", {"percent": 90})
    assert not spec.trigger.fires("data_threshold", {"percent": 50})
    assert not spec.trigger.fires("recharge", {"percent": 90})
    assert "test_share" in problems(good(segment_id=None, trigger={"events": ["recharge"]}))


def test_the_lifecycle_is_a_table() -> None:
    assert rules.next_status("draft", Action.SUBMIT) == CampaignStatus.PENDING_APPROVAL
    assert rules.next_status("pending_approval", Action.APPROVE) == CampaignStatus.APPROVED
    assert rules.next_status("pending_approval", Action.REJECT) == CampaignStatus.DRAFT
    assert rules.next_status("running", Action.PAUSE) == CampaignStatus.PAUSED
    assert rules.next_status("paused", Action.RESUME) == CampaignStatus.RUNNING
    assert rules.next_status("draft", Action.START) is None
    assert rules.next_status("finished", Action.RESUME) is None
    assert rules.next_status("draft", Action.APPROVE) is None


SH = "Asia/Shanghai"


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def test_next_allowed_respects_weekdays_slots_and_holidays() -> None:
    working = Schedule(
        weekdays=frozenset({1, 2, 3, 4, 5}), slots=((time(9), time(12)),), skip_holidays=True
    )
    # Monday 2 Nov 2026 10:00 Beijing: allowed now.
    assert rules.next_allowed(utc(2026, 11, 2, 2), working, zone=SH) == utc(2026, 11, 2, 2)
    # 13:00 Beijing: the slot is over, next is Tuesday 09:00.
    assert rules.next_allowed(utc(2026, 11, 2, 5), working, zone=SH) == utc(2026, 11, 3, 1)
    # Friday 6 Nov 12:30 → Monday 9 Nov 09:00 (the weekend is not allowed).
    assert rules.next_allowed(utc(2026, 11, 6, 4, 30), working, zone=SH) == utc(2026, 11, 9, 1)
    # National Day week: Thursday 1 Oct 2026 is a holiday and so is the week; the next working
    # day in the calendar is Thursday 8 Oct.
    assert rules.is_holiday(datetime(2026, 10, 1).date())
    assert rules.next_allowed(utc(2026, 10, 1, 2), working, zone=SH) == utc(2026, 10, 8, 1)
    # Without skip_holidays, the holiday Thursday is allowed.
    plain = Schedule(weekdays=frozenset({1, 2, 3, 4, 5}), slots=((time(9), time(12)),))
    assert rules.next_allowed(utc(2026, 10, 1, 2), plain, zone=SH) == utc(2026, 10, 1, 2)


def test_next_allowed_waits_for_the_start_and_stops_at_the_end() -> None:
    s = Schedule(starts_at=utc(2026, 11, 10, 1), ends_at=utc(2026, 11, 12, 1))
    assert rules.next_allowed(utc(2026, 11, 2, 2), s, zone=SH) == utc(2026, 11, 10, 1)
    assert rules.next_allowed(utc(2026, 11, 13, 2), s, zone=SH) is None


def test_quiet_hours_push_the_send_to_their_end_in_local_time() -> None:
    quiet = (time(21), time(8))
    # 22:30 Beijing → 08:00 the next morning.
    at = rules.next_allowed(utc(2026, 11, 2, 14, 30), Schedule(), zone=SH, quiet=quiet)
    assert at == utc(2026, 11, 3, 0)
    # The same instant is 20:30 in Urumqi: not quiet there.
    urumqi = rules.next_allowed(
        utc(2026, 11, 2, 14, 30), Schedule(), zone="Asia/Urumqi", quiet=quiet
    )
    assert urumqi == utc(2026, 11, 2, 14, 30)
    # Quiet hours and slots together: 07:00 with a slot from 07:30 → 08:00 (quiet ends later).
    slot = Schedule(slots=((time(7, 30), time(10)),))
    assert rules.next_allowed(utc(2026, 11, 2, 23), slot, zone=SH, quiet=quiet) == utc(
        2026, 11, 3, 0
    )


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [rules.backoff_s(n, base_s=1) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert rules.backoff_s(30, base_s=1, cap_s=60) == 60
