"""One definition, two engines: DuckDB and Spark (local mode) select the very same subscribers.

Hundreds of generated definitions (Hypothesis) run over the same Parquet files — a synthetic
profile with missing values, contact and response history, opt-out lists and model scores — on
the embedded DuckDB and on PySpark. Spark is slow to start and to plan, so one session serves the
module and each example checks a batch of definitions in one Spark query (one boolean column per
definition); DuckDB checks each definition through the real `members` filter as well.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perkflow.audience import compiler, engines, marts, rules
from perkflow.audience import service as audience
from perkflow.insights import repository as insights_repo
from perkflow.insights import service as insights
from perkflow.mart import Mart
from tests.audience.helpers import synthetic_profile

pytestmark = [
    pytest.mark.spark,
    # PySpark's pandas conversion warns under pandas 3; not ours to fix.
    pytest.mark.filterwarnings("ignore::Warning:pyspark.*"),
]

N = 2_000
AS_OF = datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
CAMPAIGNS = ("C1", "C2", "C3")
BATCH = 25
EXAMPLES = 12  # 12 batches of 25: 300 definitions


def _with_gaps(table: pa.Table) -> pa.Table:
    """Blank some cells so null handling is part of what both engines must agree on."""
    ids = table["subscriber_id"].to_numpy()
    for name, every in (("arpu_yuan", 17), ("city_code", 23), ("joined_on", 29), ("gender", 31)):
        col = table[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        mask = pa.array(ids % every == 0)
        blanked = pc.if_else(mask, pa.scalar(None, type=col.type), col)
        table = table.set_column(table.schema.get_field_index(name), name, blanked)
    return table


def _history(mart: Mart) -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    ids = rng.integers(1, N + 1, n)
    seconds = rng.integers(0, 60 * 86_400, n)
    contacted = [AS_OF - timedelta(seconds=int(s)) for s in seconds]
    # A few after as_of: history rules must not see the future.
    contacted[:20] = [AS_OF + timedelta(hours=i + 1) for i in range(20)]
    marts.append_contacts(
        mart,
        pa.table(
            {
                "subscriber_id": pa.array(ids, type=pa.int64()),
                "campaign_id": pa.array(rng.choice(CAMPAIGNS, n)),
                "channel": pa.array(rng.choice(["sms", "email", "push"], n)),
                "cell": pa.array(["target"] * n),
                "contacted_at": pa.array(contacted, type=marts.UTC_TS),
                "target_list_id": pa.nulls(n, type=pa.int64()),
                # Rows from an outside source: no variant, wave, send status or reason.
                "variant": pa.nulls(n, type=pa.string()),
                "wave_id": pa.nulls(n, type=pa.int64()),
                "status": pa.nulls(n, type=pa.string()),
                "reason": pa.nulls(n, type=pa.string()),
            }
        ),
    )
    m = 500
    marts.append_responses(
        mart,
        pa.table(
            {
                "subscriber_id": pa.array(rng.integers(1, N + 1, m), type=pa.int64()),
                "campaign_id": pa.array(rng.choice(CAMPAIGNS, m)),
                "channel": pa.array(rng.choice(["sms", "email"], m)),
                "kind": pa.array(["claim"] * m),
                "responded_at": pa.array(
                    [AS_OF - timedelta(hours=int(h)) for h in rng.integers(0, 1_000, m)],
                    type=marts.UTC_TS,
                ),
                "value_fen": pa.array(rng.integers(0, 5_000, m), type=pa.int64()),
            }
        ),
    )
    k = 150
    mart.write(
        marts.CONTACT_LISTS,
        pa.table(
            {
                "subscriber_id": pa.array(rng.integers(1, N + 1, k), type=pa.int64()),
                "kind": pa.array(rng.choice(["opted_out", "opted_out", "complaint"], k)),
                "channel": pa.array(rng.choice(["all", "sms", "push"], k)),
                "since": pa.array([AS_OF - timedelta(days=3)] * k, type=marts.UTC_TS),
            },
            schema=marts.CONTACT_LISTS_SCHEMA,
        ),
    )
    mart.write(
        marts.MODEL_SCORES,
        pa.table(
            {
                "subscriber_id": pa.array(np.arange(1, N + 1), type=pa.int64()),
                "model": pa.array(["video_propensity"] * N),
                "score": pa.array(np.round(rng.random(N), 3)),
            }
        ),
    )
    # Response features for about two thirds of the subscribers, with missing rates among them.
    schema = insights_repo.features_schema(insights.FEATURE_CHANNELS, insights.FEATURE_CATEGORIES)
    featured = np.sort(rng.choice(np.arange(1, N + 1), N * 2 // 3, replace=False))
    k = len(featured)
    columns: dict[str, Any] = {"subscriber_id": pa.array(featured, type=pa.int64())}
    for f in schema:
        if f.name == "subscriber_id":
            continue
        if pa.types.is_int64(f.type):
            columns[f.name] = pa.array(rng.integers(0, 12, k), type=pa.int64())
        elif pa.types.is_floating(f.type):
            rates = np.round(rng.random(k), 2)
            columns[f.name] = pa.array(rates, mask=rng.random(k) < 0.3, type=pa.float64())
        else:
            columns[f.name] = pa.array([AS_OF - timedelta(days=1)] * k, type=marts.UTC_TS)
    mart.write(insights.RESPONSE_FEATURES, pa.table(columns, schema=schema))


class Engines:
    """The same mart read by both engines, and what definitions may be drawn from."""

    def __init__(self, root: Path, spark: Any) -> None:
        self.duck_mart = engines.open_engine_mart(root, "duckdb")
        self.spark_mart = engines.open_engine_mart(root, "spark", spark=spark)
        features = audience.feature_columns(self.duck_mart)
        self.duck = self._sources(self.duck_mart, frozenset(features))
        self.spark = self._sources(self.spark_mart, frozenset(features))
        columns = audience.profile_columns(self.duck_mart)
        self.catalog = rules.Catalog(
            columns={**columns, **features},
            score_columns=frozenset({"churn_risk"}),
            score_models=frozenset({"video_propensity"}),
            feature_columns=frozenset(features),
        )
        profile = self.duck_mart.table(marts.PROFILE).to_pyarrow()
        feature_rows = self.duck_mart.table(insights.RESPONSE_FEATURES).to_pyarrow()
        self.samples: dict[str, list[Any]] = {}
        for name in self.catalog.columns:
            table = feature_rows if name in features else profile
            values = pc.unique(table[name].combine_chunks()).drop_null().to_pylist()
            values = sorted(values, key=str)
            step = max(1, len(values) // 40)
            self.samples[name] = values[::step][:40] + values[-1:]

    @staticmethod
    def _sources(mart: Mart, feature_columns: frozenset[str]) -> compiler.Sources:
        return compiler.Sources(
            profile=mart.table(marts.PROFILE),
            contacts=mart.table(marts.CONTACT_HISTORY),
            responses=mart.table(marts.RESPONSE_HISTORY),
            lists=mart.table(marts.CONTACT_LISTS),
            scores=mart.table(marts.MODEL_SCORES),
            features=mart.table(insights.RESPONSE_FEATURES),
            feature_columns=feature_columns,
        )


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = engines.spark_session(cores=2, app_name="perkflow-parity")
    yield session
    engines.stop_spark(session)


@pytest.fixture(scope="module")
def both(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    root = tmp_path_factory.mktemp("parity-mart")
    mart = Mart(root)
    synthetic_profile(mart, N, seed=21)
    mart.write(marts.PROFILE, _with_gaps(mart.table(marts.PROFILE).to_pyarrow()))
    _history(mart)
    yield Engines(root, spark)
    shutil.rmtree(root, ignore_errors=True)


# ---- generated definitions ---------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


@st.composite
def column_rule(draw: st.DrawFn, e: Engines) -> dict[str, Any]:
    specs = [s for s in e.catalog.columns.values() if s.name != "subscriber_id"]
    spec = draw(st.sampled_from(specs))
    if spec.kind == rules.Kind.TIMESTAMP:  # last contact / response: only null checks
        return {"column": spec.name, "op": draw(st.sampled_from(rules.NULL_OPS))}
    samples = e.samples[spec.name]
    value = st.sampled_from(samples).map(_json_value)
    if spec.kind in rules.NUMERIC:
        # Data values (boundaries) and values between them.
        number = value | st.floats(min_value=-10, max_value=20_000, allow_nan=False).map(
            lambda f: round(f, 3)
        )
        op = draw(st.sampled_from((*rules.COMPARE_OPS, "between", "in", "not_in", "is_null")))
        if op == "between":
            low, high = sorted((draw(number), draw(number)))
            return {"column": spec.name, "op": op, "low": low, "high": high}
        if op in rules.LIST_OPS:
            return {
                "column": spec.name,
                "op": op,
                "values": draw(st.lists(value, min_size=1, max_size=4)),
            }
        if op == "is_null":
            return {"column": spec.name, "op": draw(st.sampled_from(rules.NULL_OPS))}
        return {"column": spec.name, "op": op, "value": draw(number)}
    if spec.kind == rules.Kind.DATE:
        op = draw(st.sampled_from((*rules.COMPARE_OPS, "between", "not_null")))
        if op == "not_null":
            return {"column": spec.name, "op": op}
        if op == "between":
            low, high = sorted((draw(value), draw(value)))
            return {"column": spec.name, "op": op, "low": low, "high": high}
        return {"column": spec.name, "op": op, "value": draw(value)}
    op = draw(st.sampled_from(("=", "!=", "in", "not_in", "is_null", "not_null")))
    if op in rules.NULL_OPS:
        return {"column": spec.name, "op": op}
    if op in rules.LIST_OPS:
        return {
            "column": spec.name,
            "op": op,
            "values": draw(st.lists(value, min_size=1, max_size=5)),
        }
    return {"column": spec.name, "op": op, "value": draw(value)}


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def other_rule(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("score", "contacted", "responded", "list")))
    if kind == "score":
        model = draw(st.sampled_from(("churn_risk", "video_propensity")))
        op = draw(st.sampled_from((*rules.COMPARE_OPS, "between")))
        t = st.floats(min_value=0, max_value=1, allow_nan=False).map(lambda f: round(f, 3))
        if op == "between":
            low, high = sorted((draw(t), draw(t)))
            return {"score": model, "op": op, "low": low, "high": high}
        return {"score": model, "op": op, "value": draw(t)}
    if kind == "contacted":
        out: dict[str, Any] = {
            "history": "contacted",
            "within_days": draw(st.integers(1, 60)),
            "at_least": draw(st.integers(1, 3)),
        }
        channel = draw(_optional(st.sampled_from(("sms", "email", "push"))))
        campaign = draw(_optional(st.sampled_from(CAMPAIGNS)))
        return (
            out
            | ({"channel": channel} if channel else {})
            | ({"campaign": campaign} if campaign else {})
        )
    if kind == "responded":
        out = {"history": "responded"}
        days = draw(_optional(st.integers(1, 60)))
        campaign = draw(_optional(st.sampled_from(CAMPAIGNS)))
        return (
            out
            | ({"within_days": days} if days else {})
            | ({"campaign": campaign} if campaign else {})
        )
    listed = draw(st.sampled_from(rules.LIST_KINDS))
    channel = draw(_optional(st.sampled_from(("sms", "push", "email"))))
    return {"list": listed} | ({"channel": channel} if channel and listed == "opted_out" else {})


def definitions(e: Engines) -> st.SearchStrategy[dict[str, Any]]:
    """Raw definitions over the engines' catalog: nested and/or/not over every kind of rule."""
    leaf = column_rule(e) | column_rule(e) | other_rule()
    node = st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c}),
            st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c}),
            children.map(lambda c: {"not": c}),
        ),
        max_leaves=6,
    )
    exclusion = st.sampled_from(tuple(rules.EXCLUSION_SHORTCUTS)) | leaf
    return st.builds(
        lambda rule, exclude: (
            ({"rule": rule} if rule else {}) | ({"exclude": exclude} if exclude else {})
        ),
        _optional(node),
        st.lists(exclusion, max_size=2),
    )


def _selected(table: pa.Table, column: str) -> set[int]:
    mask = pc.fill_null(table[column], False)
    return set(table.filter(mask)["subscriber_id"].to_pylist())


def _batch(src: compiler.Sources, definitions: list[rules.Definition]) -> pa.Table:
    preds = {
        f"d{i}": compiler.scoped_predicate(compiler.Scoped(d), src, AS_OF)
        for i, d in enumerate(definitions)
    }
    return src.profile.select("subscriber_id", **preds).to_pyarrow()


def test_generated_definitions_select_the_same_ids_on_duckdb_and_spark(both: Engines) -> None:
    sizes: list[int] = []  # how many subscribers each generated definition selected

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def same_ids(data: st.DataObject) -> None:
        raws = data.draw(
            st.lists(definitions(both), min_size=BATCH, max_size=BATCH), label="definitions"
        )
        parsed = [rules.parse_definition(raw, both.catalog) for raw in raws]
        duck = _batch(both.duck, parsed)
        spark = _batch(both.spark, parsed)
        for i, (raw, d) in enumerate(zip(raws, parsed, strict=True)):
            expected = set(
                compiler.members(compiler.Scoped(d), both.duck, AS_OF)
                .select("subscriber_id")
                .to_pyarrow()["subscriber_id"]
                .to_pylist()
            )
            assert _selected(duck, f"d{i}") == expected, raw
            assert _selected(spark, f"d{i}") == expected, raw
            sizes.append(len(expected))

    same_ids()
    partial = [n for n in sizes if 0 < n < N]
    # Most definitions pick some subscribers and leave the others: the parity test had teeth.
    assert len(partial) > len(sizes) // 3, sizes


PLAN_DEFINITIONS = [
    {},
    {"rule": {"column": "activity_level", "op": "in", "values": ["responsive", "active"]}},
    {
        "rule": {
            "all": [
                {"column": "plan_fee_yuan", "op": ">=", "value": 59},
                {"not": {"history": "contacted", "within_days": 2}},
            ]
        },
        "exclude": ["churned", "complaint_list"],
    },
]


@pytest.mark.parametrize("raw", PLAN_DEFINITIONS)
def test_target_list_cells_and_reasons_are_identical(both: Engines, raw: dict[str, Any]) -> None:
    d = rules.parse_definition(raw, both.catalog)
    policy = rules.default_policy()
    # 21:30 in Beijing: SMS quiet hours everywhere but Xinjiang (19:30 there).
    at = datetime(2026, 11, 2, 13, 30, tzinfo=UTC)
    provinces = both.catalog.columns["province_code"].values or ()
    plan = compiler.Assignment(
        target_list_id=7,
        channel="sms",
        as_of=at,
        control_share_bp=1_500,
        control_prefix=rules.hash_input_prefix("k" * 64, "campaign-7"),
        universal_prefix=rules.hash_input_prefix("k" * 64, "ucg:ucg:3"),
        universal_threshold=rules.hash_threshold(500),
        policy=policy,
        quiet_provinces=rules.quiet_provinces(
            policy, channel="sms", at=at, provinces=provinces, default_zone="Asia/Shanghai"
        ),
    )
    results = []
    for src in (both.duck, both.spark):
        snap = compiler.assign(compiler.members(compiler.Scoped(d), src, at), src, plan)
        table = marts.conform(snap.to_pyarrow(), marts.TARGET_LIST_SCHEMA).sort_by("subscriber_id")
        results.append(table)
    assert results[0].equals(results[1])
    cells = set(results[0]["cell"].to_pylist())
    assert {"suppressed", "universal_control"} <= cells
    reasons = set(results[0]["reason"].drop_null().to_pylist())
    assert "quiet_hours" in reasons


def test_preview_breakdown_and_universal_control_agree(both: Engines) -> None:
    d = rules.parse_definition({"exclude": ["opted_out"]}, both.catalog)
    tables = []
    for src in (both.duck, both.spark):
        members = compiler.members(compiler.Scoped(d, province="GD"), src, AS_OF)
        tables.append(
            compiler.breakdown(members)
            .to_pyarrow()
            .sort_by([("plan_fee_yuan", "ascending"), ("activity_level", "ascending")])
        )
        held = compiler.universal_members(
            src, prefix="key:ucg:0:", threshold=rules.hash_threshold(1_000)
        )
        tables.append(held.select("subscriber_id").to_pyarrow().sort_by("subscriber_id"))
    assert tables[0].to_pylist() == tables[2].to_pylist()
    assert tables[1].equals(tables[3])
    assert 0.07 < tables[1].num_rows / N < 0.13
