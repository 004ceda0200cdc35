"""Pure rules of the audience: definitions and their paths, control, policy, templates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any, ClassVar

import pytest

from perkflow.audience import rules
from perkflow.audience.rules import (
    All,
    AnyOf,
    Catalog,
    ColumnSpec,
    Compare,
    Contacted,
    InList,
    InvalidDefinition,
    Kind,
    MemberOf,
    Not,
    OnList,
    ParamType,
)
from perkflow.org.rules import SYSTEM, Actor, Role

CATALOG = Catalog(
    columns={
        "subscriber_id": ColumnSpec("subscriber_id", Kind.INTEGER),
        "province_code": ColumnSpec("province_code", Kind.STRING, ("GD", "XJ", "ZJ")),
        "city_code": ColumnSpec("city_code", Kind.STRING, None),
        "plan_fee_yuan": ColumnSpec("plan_fee_yuan", Kind.INTEGER),
        "arpu_yuan": ColumnSpec("arpu_yuan", Kind.NUMBER),
        "joined_on": ColumnSpec("joined_on", Kind.DATE),
        "status": ColumnSpec("status", Kind.STRING, ("active", "churned", "suspended")),
        "churn_risk": ColumnSpec("churn_risk", Kind.NUMBER),
    },
    score_columns=frozenset({"churn_risk"}),
    score_models=frozenset({"video_propensity"}),
    segments={4: 2},
)


def invalid(raw: object) -> InvalidDefinition:
    with pytest.raises(InvalidDefinition) as caught:
        rules.parse_definition(raw, CATALOG)
    return caught.value


def problems(raw: object) -> list[rules.Problem]:
    return invalid(raw).problems


class TestParse:
    def test_a_tree_of_every_kind_parses(self) -> None:
        raw = {
            "rule": {
                "all": [
                    {"column": "province_code", "op": "in", "values": ["GD", "ZJ", "GD"]},
                    {"column": "plan_fee_yuan", "op": "between", "low": 59, "high": 129},
                    {"column": "joined_on", "op": "<", "value": "2025-01-01"},
                    {"column": "city_code", "op": "not_null"},
                    {"score": "video_propensity", "op": ">=", "value": 0.7},
                    {"not": {"history": "contacted", "within_days": 7, "channel": "sms"}},
                    {"any": [{"history": "responded", "campaign": 12}, {"segment": 4}]},
                ]
            },
            "exclude": ["churned", "opted_out", {"list": "opted_out", "channel": "sms"}],
        }
        d = rules.parse_definition(raw, CATALOG)
        assert isinstance(d.rule, All)
        first = d.rule.children[0]
        assert isinstance(first, InList) and first.values == ("GD", "ZJ")  # duplicates dropped
        third = d.rule.children[2]
        assert isinstance(third, Compare) and third.value == date(2025, 1, 1)
        negated = d.rule.children[5]
        assert isinstance(negated, Not) and negated.child == Contacted(7, "sms", None, 1)
        either = d.rule.children[6]
        assert isinstance(either, AnyOf) and either.children[1] == MemberOf(4, None)
        assert d.exclude[0] == Compare("status", "=", "churned")
        assert d.exclude[1] == OnList("opted_out", None)
        assert d.exclude[2] == OnList("opted_out", "sms")

    def test_no_rule_means_everyone(self) -> None:
        assert rules.parse_definition({}, CATALOG) == rules.Definition(rule=None, exclude=())

    def test_the_stored_form_is_canonical_and_parses_back_the_same(self) -> None:
        raw = {
            "rule": {"any": [{"column": "arpu_yuan", "op": ">", "value": 100}]},
            "exclude": ["suspended"],
        }
        d = rules.parse_definition(raw, CATALOG)
        dumped = rules.dump_definition(d)
        assert dumped["exclude"] == [{"column": "status", "op": "=", "value": "suspended"}]
        assert rules.parse_definition(dumped, CATALOG) == d
        assert rules.referenced_segments(d) == set()


class TestInvalid:
    def test_an_unknown_column_names_its_path_and_the_column(self) -> None:
        exc = invalid(
            {
                "rule": {
                    "all": [
                        {"column": "province_code", "op": "=", "value": "GD"},
                        {"any": [{"column": "plan_fee", "op": ">", "value": 50}]},
                    ]
                }
            }
        )
        found = exc.problems
        assert [p.path for p in found] == ["rule.all[1].any[0].column"]
        assert exc.at_fault[found[0]] == {"column": "plan_fee"}
        assert "unknown column 'plan_fee'" in found[0].message

    def test_a_type_mismatch_is_an_error_not_an_empty_result(self) -> None:
        exc = invalid({"rule": {"column": "plan_fee_yuan", "op": "=", "value": "cheap"}})
        found = exc.problems
        assert found[0].path == "rule.value"
        assert exc.at_fault[found[0]] == {"column": "plan_fee_yuan", "op": "="}
        assert "is a number" in found[0].message

    def test_an_ordering_operator_on_text_names_the_operator(self) -> None:
        exc = invalid({"rule": {"not": {"column": "province_code", "op": ">", "value": "GD"}}})
        found = exc.problems
        assert found[0].path == "rule.not.op"
        assert exc.at_fault[found[0]]["op"] == ">"

    def test_a_value_outside_a_known_vocabulary_is_refused(self) -> None:
        found = problems({"rule": {"column": "province_code", "op": "in", "values": ["GD", "XX"]}})
        assert found[0].path == "rule.values[1]"
        assert "'XX' is not a value of province_code" in found[0].message

    def test_every_problem_is_reported(self) -> None:
        found = problems(
            {
                "rule": {
                    "all": [
                        {"column": "nope", "op": "=", "value": 1},
                        {"column": "arpu_yuan", "op": "like", "value": 1},
                        {"column": "plan_fee_yuan", "op": "between", "low": 100, "high": 50},
                        {"history": "contacted", "within_days": 0},
                        {"segment": 99},
                        {"score": "unknown_model", "op": ">", "value": 0.5},
                    ]
                },
                "exclude": ["vip", {"list": "blacklist"}],
                "extra": True,
            }
        )
        paths = [p.path for p in found]
        assert paths == [
            "",
            "rule.all[0].column",
            "rule.all[1].op",
            "rule.all[2].high",
            "rule.all[3].within_days",
            "rule.all[4].segment",
            "rule.all[5].score",
            "exclude[0]",
            "exclude[1].list",
        ]

    @pytest.mark.parametrize(
        ("raw", "path"),
        [
            ({"rule": {"all": []}}, "rule.all"),
            ({"rule": {"bogus": 1}}, "rule"),
            ({"rule": {"column": "joined_on", "op": ">=", "value": "last year"}}, "rule.value"),
            ({"rule": {"column": "arpu_yuan", "op": "=", "value": True}}, "rule.value"),
            ({"rule": {"column": "arpu_yuan", "op": "in", "values": []}}, "rule.values"),
            ({"rule": {"column": "arpu_yuan", "op": "=", "value": 1, "x": 2}}, "rule"),
            ({"rule": {"segment": 4, "version": 3}}, "rule.version"),
            (
                {"rule": {"history": "contacted", "within_days": 3, "channel": "fax"}},
                "rule.channel",
            ),
            ({"rule": {"history": "opened"}}, "rule.history"),
            ({"exclude": "churned"}, "exclude"),
            ("not an object", ""),
        ],
    )
    def test_malformed_nodes_name_their_path(self, raw: object, path: str) -> None:
        assert problems(raw)[0].path == path

    def test_depth_and_size_are_bounded(self) -> None:
        node: dict[str, object] = {"column": "arpu_yuan", "op": ">", "value": 1}
        for _ in range(rules.MAX_DEPTH + 2):
            node = {"not": node}
        assert "nest" in problems({"rule": node})[0].message


class TestForm:
    def test_rows_become_a_definition_and_back(self) -> None:
        raw = rules.definition_from_form(
            match="any",
            rows=[
                ("province_code", "in", "GD, ZJ"),
                ("plan_fee_yuan", "between", "59, 129"),
                ("arpu_yuan", ">=", "99.5"),
                ("city_code", "is_null", ""),
            ],
            exclude=["churned", "churned"],
            catalog=CATALOG,
        )
        assert raw == {
            "rule": {
                "any": [
                    {"column": "province_code", "op": "in", "values": ["GD", "ZJ"]},
                    {"column": "plan_fee_yuan", "op": "between", "low": 59, "high": 129},
                    {"column": "arpu_yuan", "op": ">=", "value": 99.5},
                    {"column": "city_code", "op": "is_null"},
                ]
            },
            "exclude": ["churned"],
        }
        stored = rules.dump_definition(rules.parse_definition(raw, CATALOG))
        match, rows, exclude = rules.form_rows(stored) or ("", [], [])
        assert match == "any" and exclude == ["churned"]
        assert rows[0] == ("province_code", "in", "GD, ZJ")

    def test_bad_text_names_the_row(self) -> None:
        with pytest.raises(InvalidDefinition) as caught:
            rules.definition_from_form(
                match="all",
                rows=[("arpu_yuan", ">", "10"), ("arpu_yuan", ">", "lots")],
                exclude=[],
                catalog=CATALOG,
            )
        [problem] = caught.value.problems
        assert problem.path == "rule.all[1].value"
        assert caught.value.at_fault[problem] == {"column": "arpu_yuan", "op": ">"}

    def test_nested_trees_do_not_fit_the_simple_form(self) -> None:
        assert rules.form_rows({"rule": {"not": {"column": "x", "op": "is_null"}}}) is None


class TestControl:
    def test_quota_rounds_at_random_so_the_expected_share_is_the_plan(self) -> None:
        span = rules.QUOTA_DRAW_SPAN
        assert (
            rules.control_quota(1000, 1000, 0) == rules.control_quota(1000, 1000, span - 1) == 100
        )
        assert rules.control_quota(0, 1000, 0) == 0
        # 1.5 → 1 or 2, each half the time; 0.4 (a province of 4 at 10 %) → 1 four times in ten.
        assert rules.control_quota(15, 1000, span // 2 - 1) == 2
        assert rules.control_quota(15, 1000, span // 2) == 1
        draws = range(0, span, 997)
        for n in (1, 3, 4, 5, 7, 15):
            expected = sum(rules.control_quota(n, 1000, d) for d in draws) / len(draws)
            assert expected == pytest.approx(n * 0.10, abs=2e-3), n

    def test_tiny_provinces_keep_the_planned_share_over_many_lists(self) -> None:
        # Thirty provinces of 1 to 9 eligible subscribers, 200 lists (salts): rounding half up
        # gave 0 % in provinces of 1 to 4 and 20 % to 50 % in provinces of 5 to 9.
        for n in range(1, 10):
            drawn = [
                rules.control_quota(n, 1000, rules.quota_draw(f"k:salt{i}:", f"P{p}"))
                for i in range(200)
                for p in range(30)
            ]
            assert sum(drawn) / (len(drawn) * n) == pytest.approx(0.10, abs=0.015), n
            assert set(drawn) <= {n // 10, n // 10 + 1}

    def test_hash_threshold_is_the_share_of_the_32_bit_prefix_space(self) -> None:
        assert rules.hash_threshold(0) == "00000000"
        assert rules.hash_threshold(5000) == "80000000"
        assert int(rules.hash_threshold(500), 16) / 16**8 == pytest.approx(0.05, abs=1e-9)

    def test_universal_control_rotates_by_period(self) -> None:
        uc = rules.UniversalControl(
            share_bp=500, rotation_days=30, started_on=date(2026, 1, 1), salt="s"
        )
        assert uc.period(date(2025, 12, 1)) == 0
        assert uc.period(date(2026, 1, 30)) == 0
        assert uc.period(date(2026, 1, 31)) == 1
        assert uc.period_bounds(1) == (date(2026, 1, 31), date(2026, 3, 1))
        assert uc.period_salt(0) != uc.period_salt(1)

    def test_settings_out_of_range_are_refused(self) -> None:
        assert rules.share_problem(5001) is not None
        assert rules.share_problem(-1) is not None
        assert rules.universal_control_problem(share_bp=500, rotation_days=3, salt="a")
        assert rules.universal_control_problem(share_bp=500, rotation_days=30, salt="a b")
        assert rules.universal_control_problem(share_bp=500, rotation_days=30, salt="ok") is None


class TestPolicy:
    def test_case_study_defaults(self) -> None:
        policy = rules.default_policy()
        sms = policy.caps["sms"]
        assert sms["responsive"] == rules.Cap(1, 3)
        assert sms["low_active"] == rules.Cap(1, 7)
        assert sms["silent"] == rules.Cap(2, 30)
        assert "in_app" not in policy.caps
        assert policy.quiet_hours["sms"] == rules.QuietHours(time(21), time(8))

    def test_quiet_hours_wrap_past_midnight(self) -> None:
        q = rules.QuietHours(time(21), time(8))
        assert q.covers(time(21, 0)) and q.covers(time(23, 59)) and q.covers(time(7, 59))
        assert not q.covers(time(8, 0)) and not q.covers(time(20, 59))
        day = rules.QuietHours(time(12), time(14))
        assert day.covers(time(13)) and not day.covers(time(14))

    def test_quiet_provinces_follow_local_time(self) -> None:
        policy = rules.default_policy()
        # 13:30 UTC is 21:30 in Guangzhou but 19:30 in Urumqi.
        at = datetime(2026, 11, 2, 13, 30, tzinfo=UTC)
        quiet = rules.quiet_provinces(
            policy, channel="sms", at=at, provinces=["GD", "XJ"], default_zone="Asia/Shanghai"
        )
        assert quiet == {"GD"}
        assert not rules.quiet_provinces(
            policy, channel="email", at=at, provinces=["GD"], default_zone="Asia/Shanghai"
        )

    def test_policy_round_trips_and_bad_entries_name_their_path(self) -> None:
        policy = rules.default_policy()
        assert rules.policy_from_dict(rules.policy_to_dict(policy)) == policy
        with pytest.raises(InvalidDefinition) as caught:
            rules.policy_from_dict(
                {
                    "caps": {"sms": {"sleepy": {"max_contacts": 1, "window_days": 3}}},
                    "quiet_hours": {"sms": {"start": "25:00", "end": "08:00"}},
                }
            )
        assert [p.path for p in caught.value.problems] == [
            "caps.sms.sleepy",
            "quiet_hours.sms",
        ]


class TestTemplates:
    RAW: ClassVar[dict[str, Any]] = {
        "name": "Video fans",
        "columns": ["subscriber_id", "phone", "province_code", "arpu_yuan"],
        "rule": {
            "all": [
                {"column": "arpu_yuan", "op": ">=", "value": {"param": "min_arpu"}},
                {"column": "province_code", "op": "in", "values": {"param": "provinces"}},
            ]
        },
        "parameters": [
            {"name": "min_arpu", "type": "number", "default": 100},
            {"name": "provinces", "type": "string_list"},
        ],
    }

    def test_a_template_binds_its_parameters(self) -> None:
        t = rules.parse_template(self.RAW, CATALOG)
        assert t.params["min_arpu"].type == ParamType.NUMBER
        bound = rules.bind_params(t, {"provinces": "GD, ZJ"})
        d = rules.parse_definition(bound, CATALOG)
        assert isinstance(d.rule, All)
        assert d.rule.children[0] == Compare("arpu_yuan", ">=", 100.0)
        assert d.rule.children[1] == InList("province_code", ("GD", "ZJ"))
        assert rules.parse_template(rules.template_to_dict(t), CATALOG) == t

    def test_missing_and_bad_parameters_name_themselves(self) -> None:
        t = rules.parse_template(self.RAW, CATALOG)
        with pytest.raises(InvalidDefinition) as caught:
            rules.bind_params(t, {"min_arpu": "a lot", "colour": "red"})
        assert [p.path for p in caught.value.problems] == [
            "params.colour",
            "params.min_arpu",
            "params.provinces",
        ]

    def test_template_errors_name_their_path(self) -> None:
        raw = {
            **self.RAW,
            "columns": ["subscriber_id", "password"],
            "rule": {"column": "arpu_yuan", "op": ">", "value": {"param": "nope"}},
        }
        with pytest.raises(InvalidDefinition) as caught:
            rules.parse_template(raw, CATALOG)
        columns, value = caught.value.problems
        assert [columns.path, value.path] == ["columns[1]", "rule.value"]
        # The rule's culprits survive the template's own problems.
        assert caught.value.at_fault == {
            columns: {"column": "password"},
            value: {"column": "arpu_yuan", "op": ">"},
        }

    def test_a_parameter_outside_a_template_is_refused(self) -> None:
        found = problems({"rule": {"column": "arpu_yuan", "op": ">", "value": {"param": "x"}}})
        assert "only allowed in extraction templates" in found[0].message


def test_row_limits_per_role() -> None:
    analyst = Actor(kind="staff", id="1", name="a", role=Role.ANALYST)
    clerk = Actor(kind="staff", id="2", name="c", role=Role.CLERK)
    assert rules.row_limit(SYSTEM) is None
    assert rules.row_limit(analyst) == 1_000_000
    assert rules.row_limit(clerk) == 0


def test_text_is_yaml_or_json() -> None:
    assert rules.load_text("rule: {column: a, op: is_null}") == {
        "rule": {"column": "a", "op": "is_null"}
    }
    with pytest.raises(InvalidDefinition):
        rules.load_text("{nope", filename="x.json")
    with pytest.raises(InvalidDefinition):
        rules.load_text("a: [1, 2", filename="x.yaml")
