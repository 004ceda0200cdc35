"""Audience use cases against a real ledger (SQLite and PostgreSQL) and a DuckDB mart."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import service as audience
from perkflow.audience.service import extraction
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.settings import Settings
from perkflow.synth.service import generate_operator
from tests.audience.helpers import (
    contacts,
    features,
    profile,
    responses,
    snapshot,
    synthetic_profile,
)

NOW = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Beijing: outside every quiet hour


def staff(role: Role, scope: str = "CN", name: str = "someone") -> Actor:
    return Actor(kind="staff", id=name, name=name, role=role, scope_path=scope)


HQ = staff(Role.HQ_ADMIN, name="hq")
GD = staff(Role.PROVINCE_MARKETER, "CN/GD", "gd")
ZJ = staff(Role.PROVINCE_MARKETER, "CN/ZJ", "zj")
ANALYST = staff(Role.ANALYST, name="analyst")


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


def actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def no_universal_control(session: Session) -> None:
    audience.set_universal_control(session, actor=SYSTEM, share_bp=0, rotation_days=90)


class TestSegments:
    def test_versions_are_kept_and_an_unchanged_save_keeps_the_version(
        self, session: Session, mart: Mart
    ) -> None:
        synthetic_profile(mart, 2000)
        raw = {"rule": {"column": "plan_fee_yuan", "op": ">=", "value": 99}}
        seg = audience.create_segment(session, mart=mart, actor=HQ, name="High plans", raw=raw)
        assert seg.latest_version == 1 and seg.province_code is None
        same = audience.save_segment_version(
            session, mart=mart, actor=HQ, segment_id=seg.id, raw=raw
        )
        assert same.version == 1
        raw2 = {"rule": {"column": "plan_fee_yuan", "op": ">=", "value": 129}}
        v2 = audience.save_segment_version(
            session, mart=mart, actor=HQ, segment_id=seg.id, raw=raw2, expected_version=1
        )
        assert v2.version == 2
        with pytest.raises(Conflict):
            audience.save_segment_version(
                session, mart=mart, actor=HQ, segment_id=seg.id, raw=raw, expected_version=1
            )
        versions = audience.segment_versions(session, actor=HQ, segment_id=seg.id)
        assert [v.version for v in versions] == [2, 1]
        assert versions[1].definition == raw
        assert actions(session) == ["segment.create", "segment.save_version"]
        session.commit()

    def test_invalid_definitions_are_refused_with_the_node_path(
        self, session: Session, mart: Mart
    ) -> None:
        synthetic_profile(mart, 500)
        bad = {
            "rule": {
                "all": [
                    {"column": "age_band", "op": "in", "values": ["18-24"]},
                    {"any": [{"column": "plan_fee", "op": ">", "value": 50}]},
                ]
            },
            "exclude": [{"column": "province_code", "op": ">", "value": "GD"}],
        }
        with pytest.raises(ValidationFailed) as caught:
            audience.preview_definition(session, mart=mart, actor=HQ, raw=bad)
        assert caught.value.field == "rule.all[1].any[0].column"
        errors = caught.value.details["errors"]
        assert [e["path"] for e in errors] == ["rule.all[1].any[0].column", "exclude[0].op"]
        assert errors[0]["column"] == "plan_fee" and errors[1]["op"] == ">"
        with pytest.raises(ValidationFailed):
            audience.create_segment(session, mart=mart, actor=HQ, name="bad", raw=bad)
        assert audience.list_segments(session, actor=HQ) == []

    def test_a_marketer_sees_and_builds_only_their_province(
        self, session: Session, mart: Mart
    ) -> None:
        table = synthetic_profile(mart, 5000)
        everyone = {"rule": {"column": "status", "op": "=", "value": "active"}}
        national = audience.create_segment(
            session, mart=mart, actor=HQ, name="National", raw=everyone
        )
        gd = audience.create_segment(session, mart=mart, actor=GD, name="Mine", raw=everyone)
        zj = audience.create_segment(session, mart=mart, actor=ZJ, name="Theirs", raw=everyone)
        assert gd.province_code == "GD"
        preview = audience.preview_definition(session, mart=mart, actor=GD, raw=everyone)
        gd_active = pc.sum(
            pc.and_(
                pc.equal(table["province_code"].cast("string"), "GD"),
                pc.equal(table["status"].cast("string"), "active"),
            )
        ).as_py()
        assert preview.count == gd_active and set(preview.by_province) == {"GD"}
        assert {s.id for s in audience.list_segments(session, actor=GD)} == {national.id, gd.id}
        with pytest.raises(Forbidden):
            audience.get_segment(session, actor=GD, segment_id=zj.id)
        with pytest.raises(Forbidden):
            audience.save_segment_version(
                session, mart=mart, actor=GD, segment_id=national.id, raw={}
            )
        with pytest.raises(Forbidden):
            audience.create_segment(session, mart=mart, actor=ANALYST, name="x", raw={})
        # A national segment, read by a marketer, still counts only their province.
        ids = audience.segment_member_ids(session, mart=mart, actor=GD, segment_id=national.id)
        assert len(ids) == gd_active

    def test_member_of_another_segment_and_cycles(self, session: Session, mart: Mart) -> None:
        synthetic_profile(mart, 3000)
        young = audience.create_segment(
            session,
            mart=mart,
            actor=HQ,
            name="Young",
            raw={"rule": {"column": "age_band", "op": "in", "values": ["18-24", "25-34"]}},
        )
        both = {
            "rule": {
                "all": [{"segment": young.id}, {"column": "gender", "op": "=", "value": "female"}]
            }
        }
        count = audience.count_definition(session, mart=mart, actor=HQ, raw=both)["count"]
        direct = audience.count_definition(
            session,
            mart=mart,
            actor=HQ,
            raw={
                "rule": {
                    "all": [
                        {"column": "age_band", "op": "in", "values": ["18-24", "25-34"]},
                        {"column": "gender", "op": "=", "value": "female"},
                    ]
                }
            },
        )["count"]
        assert count == direct > 0
        child = audience.create_segment(session, mart=mart, actor=HQ, name="Child", raw=both)
        with pytest.raises(ValidationFailed, match="refers to itself"):
            audience.save_segment_version(
                session,
                mart=mart,
                actor=HQ,
                segment_id=young.id,
                raw={"rule": {"segment": child.id}},
            )


class TestHistoryRules:
    def test_contacted_responded_lists_and_scores(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        profile(mart, [{"subscriber_id": i, "churn_risk": i / 10} for i in range(1, 8)])
        contacts(
            mart,
            [
                (1, "sms", NOW - timedelta(days=1)),
                (1, "sms", NOW - timedelta(days=2)),
                (2, "email", NOW - timedelta(days=1)),
                (3, "sms", NOW - timedelta(days=20)),
                (4, "sms", NOW + timedelta(days=1)),  # after as_of: not history yet
            ],
        )
        responses(mart, [(5, "C9", NOW - timedelta(days=3)), (6, "C1", NOW - timedelta(days=40))])

        def ids(raw: dict[str, object]) -> set[int]:
            seg = audience.create_segment(session, mart=mart, actor=HQ, name="t", raw=raw)
            got = audience.segment_member_ids(
                session, mart=mart, actor=HQ, segment_id=seg.id, as_of=NOW
            )
            return set(got.to_pylist())

        assert ids({"rule": {"history": "contacted", "within_days": 7}}) == {1, 2}
        assert ids({"rule": {"history": "contacted", "within_days": 7, "channel": "sms"}}) == {1}
        assert ids({"rule": {"history": "contacted", "within_days": 30, "at_least": 2}}) == {1}
        assert ids({"rule": {"not": {"history": "contacted", "within_days": 30}}}) == {4, 5, 6, 7}
        assert ids({"rule": {"history": "responded", "campaign": "C9"}}) == {5}
        assert ids({"rule": {"history": "responded", "within_days": 30}}) == {5}
        assert ids({"rule": {"score": "churn_risk", "op": ">=", "value": 0.5}}) == {5, 6, 7}
        mart.write(
            marts.CONTACT_LISTS,
            marts.rows_table(
                [
                    {"subscriber_id": 6, "kind": "opted_out", "channel": "all", "since": NOW},
                    {"subscriber_id": 7, "kind": "complaint", "channel": "all", "since": NOW},
                ],
                marts.CONTACT_LISTS_SCHEMA,
            ),
        )
        assert ids({"exclude": ["opted_out", "complaint_list"]}) == {1, 2, 3, 4, 5}
        assert ids({"rule": {"list": "opted_out", "channel": "push"}}) == {6}


class TestResponseFeatures:
    """Rules on the evaluation's write-back (`response_features`) beside profile columns."""

    RULES: ClassVar[list[tuple[dict[str, Any], set[int]]]] = [
        # Not tired and answering SMS: a subscriber without an SMS rate is not selected.
        (
            {
                "all": [
                    {"column": "contacts_30d", "op": "<", "value": 3},
                    {"column": "rate_sms", "op": ">=", "value": 0.25},
                ]
            },
            {1, 5},
        ),
        # No features at all is a missing value: false, so true under `not`.
        ({"not": {"column": "contacts_30d", "op": ">=", "value": 3}}, {1, 3, 5, 7, 8, 9, 10}),
        ({"column": "rate_sms", "op": "is_null"}, {3, 7, 8, 9, 10}),
        ({"column": "rate_sms", "op": "not_null"}, {1, 2, 4, 5, 6}),
        ({"column": "rate_sms", "op": "between", "low": 0.5, "high": 1}, {1, 4, 6}),
        ({"column": "contacts_30d", "op": "in", "values": [0, 8]}, {1, 4}),
        ({"column": "contacts_30d", "op": "not_in", "values": [0, 8]}, {2, 3, 5, 6}),
        ({"column": "affinity_video", "op": ">", "value": 0.5}, {6}),
        # With a profile column (odd ids are in GD) and in a group.
        (
            {
                "any": [
                    {
                        "all": [
                            {"column": "province_code", "op": "=", "value": "GD"},
                            {"column": "rate_in_app", "op": ">=", "value": 0.5},
                        ]
                    },
                    {"column": "rate_evening", "op": "=", "value": 1.0},
                ]
            },
            {3, 4},
        ),
    ]

    def _mart(self, mart: Mart) -> None:
        profile(
            mart,
            [{"subscriber_id": i, "province_code": "GD" if i % 2 else "ZJ"} for i in range(1, 11)],
        )
        features(
            mart,
            [
                {"subscriber_id": 1, "contacts_30d": 0, "rate_sms": 0.5},
                {"subscriber_id": 2, "contacts_30d": 5, "rate_sms": 0.0},
                {"subscriber_id": 3, "contacts_30d": 2, "rate_in_app": 0.8},
                {"subscriber_id": 4, "contacts_30d": 8, "rate_sms": 0.9, "rate_evening": 1.0},
                {"subscriber_id": 5, "contacts_30d": 1, "rate_sms": 0.25},
                {"subscriber_id": 6, "contacts_30d": 3, "rate_sms": 0.6, "affinity_video": 0.7},
            ],
            at=NOW,
        )

    def test_feature_rules_select_exactly_the_expected_ids_on_duckdb(
        self, session: Session, mart: Mart
    ) -> None:
        self._mart(mart)
        catalog = audience.catalog_for(session, mart=mart, actor=HQ)
        assert {"contacts_30d", "rate_sms", "affinity_video"} <= catalog.feature_columns
        assert "computed_at" not in catalog.columns
        assert "subscriber_id" not in catalog.feature_columns
        assert catalog.columns["contacts_30d"].kind == rules.Kind.INTEGER
        for rule, expected in self.RULES:
            raw = {"rule": rule}
            preview = audience.preview_definition(session, mart=mart, actor=HQ, raw=raw, as_of=NOW)
            assert preview.count == len(expected), rule
            seg = audience.create_segment(session, mart=mart, actor=HQ, name="F", raw=raw)
            ids = audience.segment_member_ids(session, mart=mart, actor=HQ, segment_id=seg.id)
            assert set(ids.to_pylist()) == expected, rule
        # A province marketer's preview stays in their province (odd ids).
        gd = audience.preview_definition(
            session, mart=mart, actor=GD, raw={"rule": self.RULES[1][0]}, as_of=NOW
        )
        assert gd.count == len({1, 3, 5, 7, 9})

    def test_feature_columns_are_validated_and_absent_before_the_first_write_back(
        self, session: Session, mart: Mart
    ) -> None:
        profile(mart, [{"subscriber_id": 1}])
        raw = {"rule": {"column": "contacts_30d", "op": ">", "value": 2}}
        with pytest.raises(ValidationFailed) as exc:
            audience.count_definition(session, mart=mart, actor=HQ, raw=raw)
        assert exc.value.field == "rule.column"
        self._mart(mart)
        assert audience.count_definition(session, mart=mart, actor=HQ, raw=raw)["count"] == 3
        bad = {"rule": {"column": "rate_sms", "op": "in", "values": ["high"]}}
        with pytest.raises(ValidationFailed) as exc:
            audience.count_definition(session, mart=mart, actor=HQ, raw=bad)
        assert exc.value.field == "rule.values[0]" and "is a number" in exc.value.message
        # Extraction exports profile columns; a feature is for rules only.
        template = {"name": "t", "columns": ["subscriber_id", "rate_sms"], "rule": raw["rule"]}
        with pytest.raises(ValidationFailed) as exc:
            audience.parse_template(session, mart=mart, actor=HQ, raw=template)
        assert exc.value.field == "columns[1]"


class TestTargetLists:
    def test_control_split_is_within_half_a_point_and_stable_across_reruns(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        table = synthetic_profile(mart, 100_000, seed=9)
        no_universal_control(session)
        seg = audience.create_segment(
            session,
            mart=mart,
            actor=HQ,
            name="Everyone active",
            raw={"rule": {"column": "status", "op": "=", "value": "active"}},
        )

        def build(salt: str) -> object:
            return audience.build_target_list(
                session,
                mart=mart,
                actor=HQ,
                vault=vault,
                segment_id=seg.id,
                channel="sms",
                control_share_bp=1000,
                send_at=NOW,
                salt=salt,
            )

        first = build("campaign-42")
        active = pc.sum(pc.equal(table["status"].cast("string"), "active")).as_py()
        assert first.members == active  # no history: nobody suppressed, no universal control
        assert first.suppressed == 0 and first.universal_control == 0
        share = first.control / (first.target + first.control)
        assert abs(share - 0.10) < 0.005
        for code, cells in first.by_province.items():
            eligible = cells["target"] + cells["control"]
            prefix = rules.hash_input_prefix(vault.assignment_key, "campaign-42")
            draw = rules.quota_draw(prefix, code)
            assert cells["control"] == rules.control_quota(eligible, 1000, draw), code
        again = build("campaign-42")
        assert snapshot(mart, first.mart_table) == snapshot(mart, again.mart_table)
        other = build("campaign-43")
        a, b = snapshot(mart, first.mart_table), snapshot(mart, other.mart_table)
        assert a.keys() == b.keys() and a != b
        assert actions(session).count("target_list.build") == 3

    def test_universal_control_is_held_out_and_rotates(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        synthetic_profile(mart, 100_000, seed=4)
        audience.set_universal_control(
            session, actor=HQ, share_bp=500, rotation_days=30, started_on=date(2026, 1, 1)
        )
        report = audience.universal_control_report(
            session, mart=mart, actor=HQ, vault=vault, on=date(2026, 11, 2)
        )
        assert abs(report.size / report.population - 0.05) < 0.005
        assert report.period == 10
        seg = audience.create_segment(session, mart=mart, actor=HQ, name="All", raw={})
        tl = audience.build_target_list(
            session,
            mart=mart,
            actor=HQ,
            vault=vault,
            segment_id=seg.id,
            channel="email",
            control_share_bp=1000,
            send_at=NOW,
        )
        assert tl.universal_control == report.size and tl.universal_period == 10
        cells = snapshot(mart, tl.mart_table)
        held = {sid for sid, (cell, _) in cells.items() if cell == "universal_control"}
        later = audience.build_target_list(
            session,
            mart=mart,
            actor=HQ,
            vault=vault,
            segment_id=seg.id,
            channel="email",
            control_share_bp=1000,
            send_at=NOW + timedelta(days=40),
        )
        rotated = {
            sid
            for sid, (cell, _) in snapshot(mart, later.mart_table).items()
            if cell == "universal_control"
        }
        assert later.universal_period == 11
        assert len(held & rotated) < len(held) * 0.2  # a fresh draw, not the same people
        assert "universal_control.set" in actions(session)

    def test_caps_quiet_hours_opt_outs_with_a_reason_for_everyone_suppressed(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        from tests.factories import make_subscribers

        phones = [(f"1381234{i:04d}", "GD", "GD01") for i in range(10)]
        ids = make_subscribers(session, vault, phones)
        s = dict(enumerate(ids, start=1))
        profile(
            mart,
            [
                {"subscriber_id": s[1], "activity_level": "responsive"},
                {"subscriber_id": s[2], "activity_level": "responsive"},
                {"subscriber_id": s[3], "activity_level": "low_active"},
                {"subscriber_id": s[4], "activity_level": "silent"},
                {"subscriber_id": s[5], "activity_level": "silent"},
                {"subscriber_id": s[6], "activity_level": "active"},
                {"subscriber_id": s[7], "activity_level": "active"},
                {"subscriber_id": s[8], "status": "suspended"},
                {"subscriber_id": s[9], "activity_level": "responsive"},
                {"subscriber_id": s[10], "province_code": "XJ", "city_code": "XJ01"},
            ],
        )
        days = lambda n: NOW - timedelta(days=n)  # noqa: E731
        contacts(
            mart,
            [
                (s[1], "sms", days(2)),  # responsive: 1 per 3 days -> capped
                (s[2], "sms", days(4)),  # outside the 3 days -> fine
                (s[3], "sms", days(6)),  # low active: 1 per 7 days -> capped
                (s[4], "sms", days(10)),  # silent: 2 per 30 days, one so far -> fine
                (s[5], "sms", days(5)),
                (s[5], "sms", days(25)),  # silent, two in 30 days -> capped
                (s[6], "email", days(1)),  # another channel does not count for sms
                (s[9], "sms", days(1)),  # capped too, but opted out comes first
            ],
        )
        audience.add_to_contact_list(session, actor=HQ, subscriber_id=s[9], channel="sms")
        audience.add_to_contact_list(
            session, actor=HQ, subscriber_id=s[7], kind="complaint", note="called the hotline"
        )
        no_universal_control(session)
        seg = audience.create_segment(session, mart=mart, actor=HQ, name="Scenario", raw={})

        def build(channel: str, at: datetime) -> dict[int, tuple[str, str | None]]:
            tl = audience.build_target_list(
                session,
                mart=mart,
                actor=HQ,
                vault=vault,
                segment_id=seg.id,
                channel=channel,
                control_share_bp=0,
                send_at=at,
            )
            cells = snapshot(mart, tl.mart_table)
            reasons = [r for _, r in cells.values() if r]
            assert tl.suppressed == len(reasons)
            assert tl.reasons == {r: reasons.count(r) for r in set(reasons)}
            return cells

        sms = build("sms", NOW)
        assert {k: sms[s[k]] for k in s} == {
            1: ("suppressed", "frequency_cap"),
            2: ("target", None),
            3: ("suppressed", "frequency_cap"),
            4: ("target", None),
            5: ("suppressed", "frequency_cap"),
            6: ("target", None),
            7: ("suppressed", "complaint"),
            8: ("suppressed", "not_active"),
            9: ("suppressed", "opted_out"),
            10: ("target", None),
        }
        # 21:30 in Guangdong is quiet for SMS; it is 19:30 in Urumqi, where XJ subscribers live.
        evening = datetime(2026, 11, 2, 13, 30, tzinfo=UTC)
        late = build("sms", evening)
        assert late[s[2]] == ("suppressed", "quiet_hours")
        assert late[s[1]] == ("suppressed", "frequency_cap")  # a cap outranks quiet hours
        assert late[s[10]] == ("target", None)
        # 07:30 in Beijing is 05:30 in Urumqi: quiet in both.
        dawn = build("sms", datetime(2026, 11, 1, 23, 30, tzinfo=UTC))
        assert dawn[s[10]] == ("suppressed", "quiet_hours")
        # E-mail has no quiet hours, and the SMS opt-out does not cover it.
        mail = build("email", evening)
        assert mail[s[9]] == ("target", None)
        assert mail[s[6]] == ("suppressed", "frequency_cap")  # e-mailed yesterday
        assert mail[s[2]] == ("target", None)
        # Taking the opt-out back makes the subscriber contactable again.
        audience.remove_from_contact_list(session, actor=HQ, subscriber_id=s[9], channel="sms")
        assert build("sms", NOW)[s[9]] == ("suppressed", "frequency_cap")
        assert {"contact_list.add_opted_out", "contact_list.add_complaint"} <= set(actions(session))
        assert "contact_list.remove_opted_out" in actions(session)

    def test_a_province_marketer_builds_only_for_their_province(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        synthetic_profile(mart, 3000)
        seg = audience.create_segment(session, mart=mart, actor=HQ, name="Nat", raw={})
        tl = audience.build_target_list(
            session,
            mart=mart,
            actor=GD,
            vault=vault,
            segment_id=seg.id,
            channel="sms",
            control_share_bp=1000,
            send_at=NOW,
        )
        assert tl.province_code == "GD" and set(tl.by_province) == {"GD"}
        with pytest.raises(Forbidden):
            audience.get_target_list(session, actor=ZJ, target_list_id=tl.id)
        with pytest.raises(Forbidden):
            audience.build_target_list(
                session,
                mart=mart,
                actor=ANALYST,
                vault=vault,
                segment_id=seg.id,
                channel="sms",
                control_share_bp=1000,
            )
        with pytest.raises(ValidationFailed):
            audience.build_target_list(
                session,
                mart=mart,
                actor=HQ,
                vault=vault,
                segment_id=seg.id,
                channel="fax",
                control_share_bp=1000,
            )


class TestContactLists:
    def test_adding_twice_keeps_one_entry_and_scope_is_enforced(
        self, session: Session, mart: Mart, vault: Vault
    ) -> None:
        from tests.factories import make_subscribers

        gd_id, zj_id = make_subscribers(
            session, vault, [("13812340001", "GD", "GD01"), ("13812340002", "ZJ", "ZJ01")]
        )
        first = audience.add_to_contact_list(session, actor=GD, subscriber_id=gd_id)
        again = audience.add_to_contact_list(session, actor=GD, subscriber_id=gd_id)
        assert first.id == again.id
        with pytest.raises(Forbidden):
            audience.add_to_contact_list(session, actor=GD, subscriber_id=zj_id)
        with pytest.raises(NotFound):
            audience.add_to_contact_list(session, actor=HQ, subscriber_id=999_999_999)
        with pytest.raises(ValidationFailed):
            audience.add_to_contact_list(session, actor=HQ, subscriber_id=zj_id, channel="fax")
        with pytest.raises(Forbidden):
            audience.add_to_contact_list(session, actor=ANALYST, subscriber_id=zj_id)
        audience.add_to_contact_list(session, actor=HQ, subscriber_id=zj_id, kind="complaint")
        assert audience.export_contact_lists(session, mart=mart) == 2
        exported = mart.table(marts.CONTACT_LISTS).to_pyarrow().to_pylist()
        assert {(r["subscriber_id"], r["kind"]) for r in exported} == {
            (gd_id, "opted_out"),
            (zj_id, "complaint"),
        }
        rows, total = audience.list_contact_list(session, actor=GD)
        assert total == 1 and rows[0].subscriber_id == gd_id
        with pytest.raises(NotFound):
            audience.remove_from_contact_list(session, actor=HQ, subscriber_id=gd_id, channel="sms")
        assert actions(session).count("contact_list.add_opted_out") == 1


class TestExtraction:
    TEMPLATE: ClassVar[dict[str, Any]] = {
        "name": "High ARPU in a province",
        "description": "For the partner team",
        "columns": ["subscriber_id", "phone", "province_code", "arpu_yuan", "activity_level"],
        "rule": {
            "all": [
                {"column": "arpu_yuan", "op": ">=", "value": {"param": "min_arpu"}},
                {"column": "province_code", "op": "in", "values": {"param": "provinces"}},
            ]
        },
        "exclude": ["churned"],
        "parameters": [
            {"name": "min_arpu", "type": "number", "default": 60},
            {"name": "provinces", "type": "string_list", "default": ["GD", "SD", "JS"]},
        ],
    }

    @pytest.fixture
    def operator(self, session: Session, settings: Settings, mart: Mart, vault: Vault) -> None:
        generate_operator(
            session, mart=mart, truth_dir=settings.truth_dir, vault=vault, n=1500, seed=2
        )
        session.commit()

    def test_export_masks_phones_for_an_analyst_and_is_audited(
        self, session: Session, mart: Mart, vault: Vault, tmp_path: Path, operator: None
    ) -> None:
        row = audience.save_template(session, mart=mart, actor=ANALYST, raw=self.TEMPLATE)
        seen: list[tuple[int, int]] = []
        report = audience.run_extraction(
            session,
            mart=mart,
            actor=ANALYST,
            vault=vault,
            template_id=row.id,
            params={"min_arpu": "80"},
            fmt="csv",
            out_dir=tmp_path,
            progress=lambda done, total: seen.append((done, total)),
        )
        table = pacsv.read_csv(report.path)
        assert table.column_names == list(self.TEMPLATE["columns"])
        assert report.rows == table.num_rows > 0
        assert seen[-1] == (report.rows, report.rows)
        assert all("****" in p for p in table["phone"].to_pylist())
        assert min(table["arpu_yuan"].to_pylist()) >= 80
        assert set(table["province_code"].to_pylist()) <= {"GD", "SD", "JS"}
        assert table["subscriber_id"].to_pylist() == sorted(table["subscriber_id"].to_pylist())
        assert actions(session)[-1] == "extraction.export"
        with pytest.raises(Forbidden):
            audience.run_extraction(
                session,
                mart=mart,
                actor=ANALYST,
                vault=vault,
                template_id=row.id,
                params={},
                fmt="csv",
                out_dir=tmp_path,
                reveal=True,
            )

    def test_hq_may_reveal_phones_into_parquet_and_each_reveal_is_audited(
        self, session: Session, mart: Mart, vault: Vault, tmp_path: Path, operator: None
    ) -> None:
        row = audience.save_template(session, mart=mart, actor=HQ, raw=self.TEMPLATE)
        report = audience.run_extraction(
            session,
            mart=mart,
            actor=HQ,
            vault=vault,
            template_id=row.id,
            params={"provinces": "GD"},
            fmt="parquet",
            out_dir=tmp_path,
            reveal=True,
        )
        table = pq.read_table(report.path)
        phones = table["phone"].to_pylist()
        assert phones and all(p.isdigit() and len(p) == 11 for p in phones)
        assert set(table["province_code"].to_pylist()) == {"GD"}
        assert actions(session)[-2:] == ["subscriber.reveal_phones", "extraction.export"]

    def test_row_limits_and_parameters_are_enforced(
        self,
        session: Session,
        mart: Mart,
        vault: Vault,
        tmp_path: Path,
        operator: None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        row = audience.save_template(session, mart=mart, actor=HQ, raw=self.TEMPLATE)
        monkeypatch.setitem(rules.EXTRACT_ROW_LIMITS, Role.ANALYST, 10)
        run = lambda **kw: audience.run_extraction(  # noqa: E731
            session,
            mart=mart,
            actor=ANALYST,
            vault=vault,
            template_id=row.id,
            out_dir=tmp_path,
            **kw,
        )
        with pytest.raises(ValidationFailed, match="at most 10") as caught:
            run(params={}, fmt="csv")
        assert caught.value.field == "limit"
        assert run(params={}, fmt="csv", limit=10).rows == 10
        with pytest.raises(ValidationFailed) as caught:
            run(params={"min_arpu": "many"}, fmt="csv", limit=5)
        assert caught.value.field == "params.min_arpu"
        with pytest.raises(ValidationFailed) as caught:
            run(params={}, fmt="xlsx", limit=5)
        assert caught.value.field == "format"
        with pytest.raises(Forbidden):
            audience.run_extraction(
                session,
                mart=mart,
                actor=GD,
                vault=vault,
                template_id=row.id,
                params={},
                fmt="csv",
                out_dir=tmp_path,
            )

    def test_an_export_is_owner_only_and_a_failed_one_leaves_nothing(
        self,
        session: Session,
        mart: Mart,
        vault: Vault,
        tmp_path: Path,
        operator: None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        row = audience.save_template(session, mart=mart, actor=HQ, raw=self.TEMPLATE)
        out = tmp_path / "mine"
        for fmt in ("csv", "parquet"):
            report = audience.run_extraction(
                session,
                mart=mart,
                actor=HQ,
                vault=vault,
                template_id=row.id,
                params={},
                fmt=fmt,
                out_dir=out,
                reveal=True,
            )
            assert stat.S_IMODE(report.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(out.stat().st_mode) == 0o700  # created owner-only
        before = sorted(out.iterdir())

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("disk full")

        monkeypatch.setattr(extraction, "_plain_schema", broken)  # where the export looks it up
        with pytest.raises(RuntimeError):
            audience.run_extraction(
                session,
                mart=mart,
                actor=HQ,
                vault=vault,
                template_id=row.id,
                params={},
                fmt="csv",
                out_dir=out,
                reveal=True,
            )
        assert sorted(out.iterdir()) == before  # no half-written .part of revealed phones

    def test_pruning_deletes_only_expired_exports_and_audits_each(
        self, session: Session, tmp_path: Path
    ) -> None:
        folder = tmp_path / "exports"
        folder.mkdir(mode=0o755)
        old, young, part, other = (
            folder / "a.csv",
            folder / "b.parquet",
            folder / "c.csv.part",
            folder / "notes.txt",
        )
        for f in (old, young, part, other):
            f.write_text("x")
        gone = time.time() - 3601
        for f in (old, part, other):
            os.utime(f, (gone, gone))
        audience.private_folder(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert audience.prune_exports(session, actor=SYSTEM, folder=folder, ttl_s=3600) == [
            "a.csv",
            "c.csv.part",
        ]
        assert sorted(p.name for p in folder.iterdir()) == ["b.parquet", "notes.txt"]
        assert actions(session)[-2:] == ["extraction.expire", "extraction.expire"]

    def test_a_bad_template_is_refused_with_its_path(
        self, session: Session, mart: Mart, operator: None
    ) -> None:
        bad = {**self.TEMPLATE, "columns": ["subscriber_id", "id_card_number"]}
        with pytest.raises(ValidationFailed) as caught:
            audience.save_template(session, mart=mart, actor=ANALYST, raw=bad)
        assert caught.value.field == "columns[1]"


def test_contact_policy_can_be_replaced_and_is_audited(session: Session) -> None:
    policy = rules.policy_to_dict(rules.default_policy())
    policy["caps"]["sms"]["responsive"] = {"max_contacts": 2, "window_days": 7}
    audience.set_contact_policy(session, actor=HQ, raw=policy)
    assert audience.get_contact_policy(session).caps["sms"]["responsive"] == rules.Cap(2, 7)
    with pytest.raises(ValidationFailed) as caught:
        audience.set_contact_policy(session, actor=HQ, raw={"caps": {"fax": {}}})
    assert caught.value.field == "caps.fax"
    with pytest.raises(Forbidden):
        audience.set_contact_policy(session, actor=GD, raw=policy)
    assert actions(session) == ["contact_policy.set"]
