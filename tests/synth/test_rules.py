"""Pure rules of the synthetic operator: determinism, phone numbers, distributions, truth."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from perkflow.org.service import load_region_data
from perkflow.synth import rules

PHONE = re.compile(r"^1[3-9]\d{9}$")


@pytest.fixture(scope="module")
def regions() -> dict[str, Any]:
    return load_region_data()


@pytest.fixture(scope="module")
def big(regions: dict[str, Any]) -> rules.Generated:
    """One 50k-subscriber operator shared by the distribution tests."""
    return rules.generate(50_000, 20261031, regions)


def strings(table: pa.Table, column: str) -> np.ndarray:
    return np.array(table[column].cast(pa.string()).to_pylist())


def floats(table: pa.Table, column: str) -> np.ndarray:
    return table[column].to_numpy().astype(np.float64)


class TestDeterminism:
    def test_same_seed_gives_identical_tables_and_phones(self, regions: dict[str, Any]) -> None:
        a = rules.generate(3_000, 7, regions)
        b = rules.generate(3_000, 7, regions)
        assert a.subscriber_profile.equals(b.subscriber_profile)
        assert a.usage_monthly.equals(b.usage_monthly)
        assert a.response_truth.equals(b.response_truth)
        assert a.phones.to_pylist() == b.phones.to_pylist()

    def test_different_seed_gives_different_tables(self, regions: dict[str, Any]) -> None:
        a = rules.generate(3_000, 7, regions)
        b = rules.generate(3_000, 8, regions)
        assert not a.subscriber_profile.equals(b.subscriber_profile)
        assert not a.usage_monthly.equals(b.usage_monthly)
        assert not a.response_truth.equals(b.response_truth)
        assert len(set(a.phones.to_pylist()) & set(b.phones.to_pylist())) < 10

    def test_chunks_continue_ids_and_phones(self, regions: dict[str, Any]) -> None:
        n = rules.CHUNK_SIZE + 5
        seen: list[int] = []
        for part in rules.iter_chunks(n, 3, regions):
            seen.extend(part.subscriber_profile["subscriber_id"].to_pylist())
        assert seen == list(range(1, n + 1))
        assert rules.chunk_count(n) == 2
        ids = np.arange(1, n + 1, dtype=np.int64)
        assert len(np.unique(rules.phone_numbers(ids, rules.phone_key(3)))) == n

    def test_progress_reaches_total(self, regions: dict[str, Any]) -> None:
        calls: list[tuple[int, int]] = []
        rules.generate(500, 1, regions, progress=lambda d, t: calls.append((d, t)))
        assert calls == [(500, 500)]

    @pytest.mark.parametrize(("n", "seed"), [(0, 1), (rules.MAX_SUBSCRIBERS + 1, 1), (5, -1)])
    def test_bad_arguments_are_refused(self, regions: dict[str, Any], n: int, seed: int) -> None:
        with pytest.raises(ValueError):
            rules.generate(n, seed, regions)


class TestPhones:
    def test_unique_valid_china_telecom_numbers(self, big: rules.Generated) -> None:
        phones = big.phones.to_pylist()
        assert len(set(phones)) == len(phones) == big.count
        assert all(PHONE.match(p) for p in phones)
        prefixes = {int(p[:3]) for p in phones}
        assert prefixes == set(rules.PHONE_PREFIXES)

    def test_the_map_is_a_permutation_over_a_large_range(self) -> None:
        ids = np.arange(1, 1_000_001, dtype=np.int64)
        numbers = rules.phone_numbers(ids, rules.phone_key(99))
        assert len(np.unique(numbers)) == len(ids)

    def test_consecutive_ids_do_not_have_a_constant_stride(self) -> None:
        ids = np.arange(1, 1_001, dtype=np.int64)
        numbers = rules.phone_numbers(ids, rules.phone_key(5))
        assert len(np.unique(np.diff(numbers))) > 900


class TestProfile:
    def test_shape_and_ids(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        assert profile["subscriber_id"].to_pylist() == list(range(1, big.count + 1))
        assert set(strings(profile, "status")) <= set(rules.STATUSES)
        assert set(strings(profile, "age_band")) == set(rules.AGE_BANDS)
        assert set(strings(profile, "device_tier")) == set(rules.DEVICE_TIERS)
        assert set(strings(profile, "activity_level")) == set(rules.ACTIVITY_LEVELS)

    def test_plan_fees_come_from_tiers_with_a_middle_mode(self, big: rules.Generated) -> None:
        fees = big.subscriber_profile["plan_fee_yuan"].to_numpy()
        assert set(np.unique(fees)) <= set(rules.PLAN_FEES_YUAN)
        assert fees.min() >= 19 and fees.max() <= 399
        values, counts = np.unique(fees, return_counts=True)
        assert 59 <= values[np.argmax(counts)] <= 99
        # Skewed, not uniform: the top tier is rare next to the mode.
        assert counts.max() > 8 * counts[values == 399][0]

    def test_tenure_is_skewed_and_matches_joined_on(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        tenure = profile["tenure_months"].to_numpy()
        assert tenure.min() >= 1 and tenure.max() <= 240
        assert np.median(tenure) < tenure.mean()
        joined = profile["joined_on"].to_pylist()
        ref = rules.REFERENCE_DATE
        months = np.array([(ref.year - d.year) * 12 + ref.month - d.month for d in joined])
        assert np.array_equal(months, tenure)
        assert max(joined) < date(2026, 10, 1)

    def test_usage_levels_are_right_skewed(self, big: rules.Generated) -> None:
        data = floats(big.subscriber_profile, "data_mb")
        voice = floats(big.subscriber_profile, "voice_min")
        assert np.median(data) < data.mean()
        assert np.median(voice) < voice.mean()
        skew = ((data - data.mean()) ** 3).mean() / data.std() ** 3
        assert skew > 1

    def test_data_rises_with_plan_and_falls_with_age(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        data = floats(profile, "data_mb")
        fees = profile["plan_fee_yuan"].to_numpy()
        age = strings(profile, "age_band")
        assert np.median(data[fees >= 169]) > 1.5 * np.median(data[fees <= 39])
        assert np.median(data[age == "18-24"]) > 2 * np.median(data[age == "65+"])
        voice = floats(profile, "voice_min")
        assert np.median(voice[age == "55-64"]) > np.median(voice[age == "18-24"])

    def test_device_follows_plan(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        fees = profile["plan_fee_yuan"].to_numpy()
        flagship = strings(profile, "device_tier") == "flagship"
        assert flagship[fees >= 199].mean() > 3 * flagship[fees <= 39].mean()

    def test_interests_depend_on_age_and_gender(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        games = floats(profile, "interest_games")
        age = strings(profile, "age_band")
        gender = strings(profile, "gender")
        assert games[age == "18-24"].mean() > games[age == "65+"].mean() + 0.2
        assert games[gender == "male"].mean() > games[gender == "female"].mean()
        for name in rules.INTERESTS:
            scores = floats(profile, f"interest_{name}")
            assert scores.min() >= 0 and scores.max() <= 1

    def test_province_shares_follow_population(
        self, big: rules.Generated, regions: dict[str, Any]
    ) -> None:
        counts = pc.value_counts(big.subscriber_profile["province_code"].cast(pa.string()))
        share = {d["values"]: d["counts"] / big.count for d in counts.to_pylist()}
        pop = {p["code"]: p["population_10k"] for p in regions["provinces"]}
        total = sum(pop.values())
        assert max(share, key=share.__getitem__) == "GD"
        assert min(share, key=share.__getitem__) == "XZ"
        for code, people in pop.items():
            assert share[code] == pytest.approx(people / total, abs=0.004)

    def test_capital_is_the_largest_city(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        cities = strings(profile, "city_code")
        gd = cities[strings(profile, "province_code") == "GD"]
        values, counts = np.unique(gd, return_counts=True)
        assert values[np.argmax(counts)] == "GD01"
        assert all(c.startswith("GD") for c in values)

    def test_status_mix_and_churn_follows_risk(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        status = strings(profile, "status")
        risk = floats(profile, "churn_risk")
        assert (status == "active").mean() > 0.9
        assert 0.01 <= (status == "suspended").mean() <= 0.05
        assert 0.008 <= (status == "churned").mean() <= 0.025
        high = risk >= np.quantile(risk, 0.9)
        low = risk <= np.quantile(risk, 0.5)
        assert (status[high] == "churned").mean() > 4 * (status[low] == "churned").mean()

    def test_churn_risk_is_higher_for_short_tenure_and_silent(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        risk = floats(profile, "churn_risk")
        tenure = profile["tenure_months"].to_numpy()
        activity = strings(profile, "activity_level")
        assert risk[tenure <= 6].mean() > risk[tenure > 24].mean()
        assert risk[activity == "silent"].mean() > risk[activity == "active"].mean()


class TestUsage:
    def test_six_months_per_subscriber(self, big: rules.Generated) -> None:
        usage = big.usage_monthly
        assert usage.num_rows == 6 * big.count
        months = sorted(set(usage["month"].to_pylist()))
        assert months == [date(2026, m, 1) for m in range(5, 11)]
        ids = usage["subscriber_id"].to_numpy()
        assert np.array_equal(ids, np.repeat(np.arange(1, big.count + 1), 6))

    def test_decliners_are_the_high_risk_ones(self, big: rules.Generated) -> None:
        data = floats(big.usage_monthly, "data_mb").reshape(-1, 6)
        profile = big.subscriber_profile
        # Only whole six months of use, so joining and churning do not look like a trend.
        whole = (profile["tenure_months"].to_numpy() >= 6) & (data > 0).all(axis=1)
        ratio = np.log(data[whole, 3:].sum(axis=1) / data[whole, :3].sum(axis=1))
        risk = floats(profile, "churn_risk")[whole]
        assert np.corrcoef(ratio, risk)[0, 1] < -0.2
        assert ratio[risk >= np.quantile(risk, 0.9)].mean() < ratio[risk <= 0.05].mean() - 0.1

    def test_no_usage_before_joining_or_after_churn(self, big: rules.Generated) -> None:
        data = floats(big.usage_monthly, "data_mb").reshape(-1, 6)
        bill = floats(big.usage_monthly, "bill_yuan").reshape(-1, 6)
        tenure = big.subscriber_profile["tenure_months"].to_numpy()
        new = tenure == 2
        assert (data[new, :3] == 0).all() and (bill[new, :3] == 0).all()
        churned = strings(big.subscriber_profile, "status") == "churned"
        assert (bill[churned, -1] == 0).all()

    def test_arpu_is_plan_fee_times_a_factor_plus_overage(self, big: rules.Generated) -> None:
        profile = big.subscriber_profile
        arpu = floats(profile, "arpu_yuan")
        fees = profile["plan_fee_yuan"].to_numpy()
        active = strings(profile, "status") == "active"
        ratio = arpu[active] / fees[active]
        assert 0.85 < np.median(ratio) < 1.15
        assert (ratio > 1.3).mean() > 0.01


class TestTruth:
    def test_columns_and_ranges(self, big: rules.Generated) -> None:
        truth = big.response_truth
        assert truth["subscriber_id"].to_pylist() == list(range(1, big.count + 1))
        for cat in rules.CATEGORIES:
            base = floats(truth, f"base_{cat}")
            effect = floats(truth, f"effect_{cat}")
            assert 0.01 <= base.mean() <= 0.08
            assert base.min() >= 0 and (base + effect).min() >= 0
            assert (effect <= 0).mean() > 0.05

    def test_sleeping_dogs_have_negative_effects(self, big: rules.Generated) -> None:
        truth = big.response_truth
        dogs = truth["sleeping_dog"].to_numpy(zero_copy_only=False)
        assert 0.02 < dogs.mean() < 0.12
        assert (floats(truth, "effect_video")[dogs] < 0).all()
        risk = floats(big.subscriber_profile, "churn_risk")
        assert risk[dogs].mean() > risk[~dogs].mean()

    def test_effect_follows_interest_and_activity(self, big: rules.Generated) -> None:
        profile, truth = big.subscriber_profile, big.response_truth
        effect = floats(truth, "effect_video")
        interest = floats(profile, "interest_video")
        activity = strings(profile, "activity_level")
        dogs = truth["sleeping_dog"].to_numpy(zero_copy_only=False)
        assert np.corrcoef(effect[~dogs], interest[~dogs])[0, 1] > 0.3
        responsive = effect[(activity == "responsive") & ~dogs].mean()
        assert responsive > 2 * effect[(activity == "low_active") & ~dogs].mean()
        assert (effect[(activity == "silent") & ~dogs] == 0).all()


def test_simulated_responses_carry_the_planted_effect(big: rules.Generated) -> None:
    """Treated subscribers respond more by the planted effect; the same seed draws the same."""
    simulate_responses = rules.simulate_responses
    truth = big.response_truth
    ids = truth.column("subscriber_id").to_numpy()
    rng = np.random.default_rng(3)
    treated = rng.random(len(ids)) < 0.5
    sim = simulate_responses(truth, subscriber_ids=ids, treated=treated, category="video", seed=5)
    observed = sim.responded[treated].mean() - sim.responded[~treated].mean()
    se = np.sqrt(
        sim.responded[treated].var() / treated.sum()
        + sim.responded[~treated].var() / (~treated).sum()
    )
    assert sim.true_uplift > 0.005
    assert abs(observed - sim.true_uplift) < 3 * se
    # Order-independent and reproducible: shuffled input gives each subscriber the same draw.
    perm = rng.permutation(len(ids))
    again = simulate_responses(
        truth, subscriber_ids=ids[perm], treated=treated[perm], category="video", seed=5
    )
    assert np.array_equal(again.responded, sim.responded[perm])
    with pytest.raises(ValueError, match="category"):
        simulate_responses(truth, subscriber_ids=ids, treated=treated, category="nope", seed=5)
