"""Pure rules of the synthetic operator: vectorised draws of subscribers, usage and hidden truth."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

# A fixed "today": the same seed gives the same operator whatever day it is generated on.
REFERENCE_DATE = date(2026, 10, 31)
REFERENCE_MONTH = np.datetime64("2026-10", "M")
USAGE_MONTHS = 6
# Part of a data set's identity: each chunk has its own stream, so changing this changes the data.
CHUNK_SIZE = 100_000
MAX_SUBSCRIBERS = 50_000_000
MAX_TENURE_MONTHS = 240

PLAN_FEES_YUAN = (19, 29, 39, 59, 79, 99, 129, 169, 199, 239, 299, 399)
PLAN_WEIGHTS = (0.05, 0.07, 0.10, 0.17, 0.18, 0.15, 0.10, 0.07, 0.05, 0.03, 0.02, 0.01)
PLAN_ALLOWANCE_GB = (5, 10, 20, 30, 40, 60, 80, 100, 150, 200, 300, 500)
OVERAGE_YUAN_PER_GB = 5.0
OVERAGE_CAP_YUAN = 100.0

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_WEIGHTS = (0.12, 0.22, 0.21, 0.20, 0.15, 0.10)
AGE_LOW = (18, 25, 35, 45, 55, 65)
AGE_HIGH = (25, 35, 45, 55, 65, 81)
GENDERS = ("male", "female")
FEMALE_SHARE = 0.48
DEVICE_TIERS = ("low", "mid", "high", "flagship")
ACTIVITY_LEVELS = ("responsive", "active", "low_active", "silent")
INTERESTS = ("video", "music", "reading", "games")
CATEGORIES = (
    "video",
    "music",
    "reading",
    "cloud_storage",
    "ecommerce",
    "food_drink",
    "travel",
    "telecom",
)
STATUSES = ("active", "suspended", "churned")
PHONE_PREFIXES = (133, 149, 153, 173, 177, 180, 181, 189, 191, 199)
CITY_ZIPF_EXPONENT = 1.1

# Age-band effects, indexed like AGE_BANDS.
_AGE_PLAN_SHIFT = np.array([-0.4, 0.3, 0.4, 0.1, -0.4, -0.9])
_AGE_LOG_DATA = np.array([0.35, 0.2, 0.0, -0.3, -0.7, -1.2])
_AGE_VOICE_MEAN = np.array([80.0, 140.0, 200.0, 230.0, 250.0, 260.0])
_AGE_EFFECT_MULT = np.array([1.1, 1.2, 1.0, 0.8, 0.6, 0.4])
# Activity logits: columns follow ACTIVITY_LEVELS, rows follow AGE_BANDS.
_ACT_BASE = np.array([-0.55, 0.9, 0.3, -0.45])
_ACT_AGE = np.array(
    [
        [0.3, 0.1, -0.2, -0.4],
        [0.3, 0.2, -0.2, -0.4],
        [0.1, 0.1, 0.0, -0.1],
        [-0.1, 0.0, 0.1, 0.1],
        [-0.4, -0.2, 0.2, 0.4],
        [-0.8, -0.4, 0.3, 0.8],
    ]
)
_ACT_PLAN = np.array([0.3, 0.2, -0.2, -0.6])
_ACT_DATA_MULT = np.array([1.2, 1.1, 0.5, 0.06])
_ACT_VOICE_MULT = np.array([1.1, 1.1, 0.6, 0.15])
_ACT_BASE_SHIFT = np.array([0.7, 0.1, -0.5, -1.3])
_ACT_EFFECT_MULT = np.array([1.0, 0.55, 0.2, 0.0])
# Interest logits: intercept, age-band terms, and a gender term (+ for women, - for men).
_INTEREST_INTERCEPT = np.array([0.3, -0.3, -0.6, -0.5])
_INTEREST_AGE = np.array(
    [
        [0.6, 0.5, 0.2, -0.1, -0.4, -0.8],
        [1.0, 0.5, 0.0, -0.4, -0.8, -1.2],
        [-0.2, 0.0, 0.2, 0.3, 0.3, 0.1],
        [1.2, 0.7, 0.1, -0.6, -1.2, -1.8],
    ]
)
_INTEREST_GENDER = np.array([0.1, 0.05, 0.2, -0.5])
# Age-band terms of the affinities that are not interests: cloud storage, e-commerce, food, travel.
_AFFINITY_AGE = np.array(
    [
        [0.3, 0.4, 0.2, 0.0, -0.4, -0.8],
        [0.2, 0.6, 0.5, 0.1, -0.3, -0.8],
        [0.8, 0.6, 0.2, -0.2, -0.6, -1.0],
        [0.0, 0.4, 0.4, 0.3, 0.1, -0.4],
    ]
)
# Per category: share responding without any contact, and the largest lift a contact can add.
_BASE_RATE = np.array([0.04, 0.03, 0.02, 0.02, 0.04, 0.05, 0.015, 0.03])
_MAX_LIFT = np.array([0.10, 0.06, 0.05, 0.05, 0.07, 0.08, 0.04, 0.06])


def _cuts(weights: Sequence[float]) -> F64:
    """Logistic cut points that reproduce `weights` when the latent has no shift."""
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))[:-1]
    return np.asarray(np.log(cum / (1.0 - cum)), dtype=np.float64)


_PLAN_CUTS = _cuts(PLAN_WEIGHTS)
# Tuned so device shares come out near 25% low, 40% mid, 25% high, 10% flagship.
_DEVICE_CUTS = np.array([-1.5, 0.85, 3.1])
_PLAN_FEES = np.array(PLAN_FEES_YUAN, dtype=np.int64)
_PLAN_ALLOWANCE_MB = np.array(PLAN_ALLOWANCE_GB, dtype=np.float64) * 1024.0
_AGE_LOW = np.array(AGE_LOW, dtype=np.float64)
_AGE_HIGH = np.array(AGE_HIGH, dtype=np.float64)
_PREFIXES = np.array(PHONE_PREFIXES, dtype=np.int64)
_MONTH_OFFSETS = np.arange(USAGE_MONTHS, dtype=np.float64) - (USAGE_MONTHS - 1) / 2
_USAGE_DATES = (REFERENCE_MONTH - np.arange(USAGE_MONTHS - 1, -1, -1)).astype("datetime64[D]")
# Separate stream keys: chunk k draws from (seed, 0, k), phone numbers from (seed, 1).
_CHUNK_STREAM = 0
_PHONE_STREAM = 1


@dataclass(frozen=True)
class Generated:
    """One synthetic operator (or one chunk of it): mart tables, hidden truth, clear phones."""

    subscriber_profile: pa.Table
    usage_monthly: pa.Table
    response_truth: pa.Table
    phones: pa.Array

    @property
    def count(self) -> int:
        """How many subscribers it holds."""
        return int(self.subscriber_profile.num_rows)


@dataclass(frozen=True)
class RegionWeights:
    """Cities as one categorical: joint probability = province share × Zipf share in province."""

    province_codes: tuple[str, ...]
    city_codes: tuple[str, ...]
    city_province: I64
    city_rank: I64
    city_p: F64


@dataclass(frozen=True)
class PhoneKey:
    """The seed's bijection from ids to phone numbers: an affine map, then mixing rounds."""

    a: int
    b: int
    rounds: tuple[int, ...]


def region_weights(regions: Mapping[str, Any]) -> RegionWeights:
    """Province shares by population; cities Zipf-weighted in listed order (capital first)."""
    provinces = regions["provinces"]
    if not provinces:
        raise ValueError("the region tree has no provinces")
    pop = np.array([float(p["population_10k"]) for p in provinces])
    pcodes, ccodes, cprov, crank, cp = [], [], [], [], []
    for pi, prov in enumerate(provinces):
        cities = prov["cities"]
        ranks = np.arange(1, len(cities) + 1, dtype=np.float64)
        zipf = ranks**-CITY_ZIPF_EXPONENT
        zipf /= zipf.sum()
        pcodes.append(str(prov["code"]))
        for ci, city in enumerate(cities):
            ccodes.append(str(city["code"]))
            cprov.append(pi)
            crank.append(ci + 1)
            cp.append(pop[pi] / pop.sum() * zipf[ci])
    p = np.array(cp)
    return RegionWeights(
        province_codes=tuple(pcodes),
        city_codes=tuple(ccodes),
        city_province=np.array(cprov, dtype=np.int64),
        city_rank=np.array(crank, dtype=np.int64),
        city_p=p / p.sum(),
    )


def _coprime(value: int) -> int:
    """The nearest value at or above `value` sharing no factor with a power of ten."""
    while value % 2 == 0 or value % 5 == 0:
        value += 1
    return value


def phone_key(seed: int) -> PhoneKey:
    """The seed's phone permutation; a multiplier coprime to 10 makes the affine map a bijection."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PHONE_STREAM,)))
    a, b = (int(x) for x in rng.integers(10**8, 10**9, size=2))
    rounds = tuple(int(x) for x in rng.integers(1, 10**9, size=3))
    return PhoneKey(a=_coprime(a), b=b, rounds=rounds)


def phone_numbers(ids: I64, key: PhoneKey) -> I64:
    """Distinct 11-digit numbers for distinct ids below 10^9, with no retry: a permutation."""
    g = (key.a * (ids - 1) + key.b) % 10**9
    # Feistel rounds over (4 digits, 5 digits) stay a bijection whatever the round function is,
    # and hide the constant stride the affine map leaves between consecutive ids.
    hi, lo = g // 10**5, g % 10**5
    for k in key.rounds:
        lo = (lo + (hi * hi * k + hi * 7919 + k) % 10**5) % 10**5
        hi = (hi + (lo * lo * (k % 9973) + lo * 104729 + k) % 10**4) % 10**4
    mixed = hi * 10**5 + lo
    return np.asarray(_PREFIXES[mixed // 10**8] * 10**8 + mixed % 10**8, dtype=np.int64)


def _sigmoid(x: F64) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _categorical(rng: np.random.Generator, probs: F64) -> I64:
    """One draw per row from row-wise probabilities, without a Python loop."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cum[:, -1:]
    return np.asarray((u > cum).sum(axis=1), dtype=np.int64)


def _dictionary(indices: I64, labels: Sequence[str]) -> pa.Array:
    """Small-vocabulary strings stored as codes: a million rows cost a byte or two each."""
    index_type = pa.int8() if len(labels) < 128 else pa.int16()
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, type=index_type), pa.array(list(labels), type=pa.string())
    )


def _f32(values: F64, decimals: int) -> pa.Array:
    return pa.array(np.round(values, decimals).astype(np.float32))


def _draw_chunk(rng: np.random.Generator, ids: I64, rw: RegionWeights, key: PhoneKey) -> Generated:
    """Every table for the subscribers `ids`, drawn in dependency order."""
    m = len(ids)

    # Where: one categorical over all cities gives provinces by population and Zipf cities.
    city = rng.choice(len(rw.city_codes), size=m, p=rw.city_p)
    province = rw.city_province[city]
    is_capital = rw.city_rank[city] == 1

    # Who: age band, an exact age inside it (for the tenure cap), gender.
    age = rng.choice(len(AGE_BANDS), size=m, p=np.array(AGE_WEIGHTS))
    age_years = _AGE_LOW[age] + rng.random(m) * (_AGE_HIGH[age] - _AGE_LOW[age])
    female = rng.random(m) < FEMALE_SHARE
    gender_sign = np.where(female, 1.0, -1.0)

    # Affluence is one latent behind plan and device, so the two move together.
    affluence = _AGE_PLAN_SHIFT[age] + 0.25 * is_capital + rng.logistic(size=m)
    plan = np.searchsorted(_PLAN_CUTS, affluence)
    fee = _PLAN_FEES[plan].astype(np.float64)
    plan_z = affluence / 1.8
    device = np.searchsorted(_DEVICE_CUTS, 0.9 * affluence + rng.logistic(size=m))

    logits = _ACT_BASE[None, :] + _ACT_AGE[age] + _ACT_PLAN[None, :] * plan_z[:, None]
    probs = np.exp(logits)
    activity = _categorical(rng, probs / probs.sum(axis=1, keepdims=True))
    silent = activity == 3

    # Tenure: gamma with shape < 1 (many new, long tail), never longer than adult life.
    tenure_raw = np.ceil(rng.gamma(0.85, 45.0, size=m))
    tenure_cap = np.floor((age_years - 16.0) * 12.0)
    tenure = np.clip(np.minimum(tenure_raw, tenure_cap), 1, MAX_TENURE_MONTHS).astype(np.int64)
    join_day = rng.integers(0, 28, size=m)
    joined_on = (REFERENCE_MONTH - tenure).astype("datetime64[D]") + join_day

    # Usage levels; a latent dissatisfaction drives both the decline and the churn risk.
    level_mb = (
        6000.0
        * np.sqrt(fee / 19.0)
        * np.exp(_AGE_LOG_DATA[age] + rng.normal(0.0, 0.7, m))
        * _ACT_DATA_MULT[activity]
    )
    voice_mean = _AGE_VOICE_MEAN[age] * (fee / 79.0) ** 0.2 * _ACT_VOICE_MULT[activity]
    voice_level = rng.gamma(1.6, voice_mean / 1.6)
    dissatisfaction = rng.normal(size=m)
    decline = _sigmoid(3.0 * (dissatisfaction - 1.2))
    trend = rng.normal(0.005, 0.02, m) - 0.12 * decline

    churn_logit = (
        -3.4
        + 0.9 * (tenure <= 6)
        + 0.5 * (tenure <= 12)
        - 18.0 * trend
        + 0.6 * (fee <= 29)
        + 0.3 * (fee == 39)
        + 1.2 * silent
        + 0.4 * (activity == 2)
        + 0.3 * dissatisfaction
    )
    churn_risk = _sigmoid(churn_logit)
    u = rng.random(m)
    p_churn = 0.14 * churn_risk
    p_suspend = 0.02 + 0.06 * churn_risk
    status = np.where(u < p_churn, 2, np.where(u < p_churn + p_suspend, 1, 0))

    # Monthly usage with the subscriber's trend; zero before joining and after churning.
    month_idx = np.arange(USAGE_MONTHS)[None, :]
    join_idx = (USAGE_MONTHS - 1) - np.minimum(tenure, USAGE_MONTHS - 1)
    churn_idx = np.maximum(join_idx + 1, rng.integers(3, USAGE_MONTHS, size=m))
    churned = status == 2
    on_net = (month_idx >= join_idx[:, None]) & ~(
        churned[:, None] & (month_idx >= churn_idx[:, None])
    )
    suspended_now = (status == 1)[:, None] & (month_idx == USAGE_MONTHS - 1)
    using = on_net & ~suspended_now
    shape = np.exp(trend[:, None] * _MONTH_OFFSETS[None, :])
    data_m = level_mb[:, None] * shape * rng.lognormal(-0.02, 0.2, (m, USAGE_MONTHS)) * using
    voice_m = voice_level[:, None] * shape * rng.lognormal(-0.03, 0.25, (m, USAGE_MONTHS)) * using
    fee_factor = rng.lognormal(-0.03, 0.12, m)
    allowance = _PLAN_ALLOWANCE_MB[plan]
    overage = np.minimum(
        OVERAGE_YUAN_PER_GB * np.maximum(data_m - allowance[:, None], 0.0) / 1024.0,
        OVERAGE_CAP_YUAN,
    )
    bill_m = ((fee * fee_factor)[:, None] + overage) * using
    months_on = np.maximum(on_net.sum(axis=1), 1)
    data_avg = data_m.sum(axis=1) / months_on
    voice_avg = voice_m.sum(axis=1) / months_on
    arpu = bill_m.sum(axis=1) / months_on

    # Interests: logistic in age and gender, lifted a little by how much data the person uses.
    data_z = np.log(level_mb + 1.0) - 9.0
    interest_logit = (
        _INTEREST_INTERCEPT[None, :]
        + _INTEREST_AGE[:, age].T
        + _INTEREST_GENDER[None, :] * gender_sign[:, None]
        + 0.25 * data_z[:, None]
        + rng.normal(0.0, 0.8, (m, len(INTERESTS)))
    )
    interest = _sigmoid(interest_logit)
    primary = np.argmax(interest, axis=1)

    # Hidden truth: affinity per category, then base propensity and the effect of a contact.
    age_term = _AFFINITY_AGE[:, age]
    noise = rng.normal(0.0, 0.5, (m, 4))
    affinity = np.column_stack(
        [
            interest[:, 0],
            interest[:, 1],
            interest[:, 2],
            _sigmoid(-0.5 + 0.6 * data_z + 0.5 * (device - 1.5) + age_term[0] + noise[:, 0]),
            _sigmoid(-0.2 + 0.5 * gender_sign + age_term[1] + 0.3 * plan_z + noise[:, 1]),
            _sigmoid(-0.2 + age_term[2] + 0.4 * is_capital + noise[:, 2]),
            _sigmoid(-0.6 + 0.7 * plan_z + age_term[3] + noise[:, 3]),
            _sigmoid(2.0 * (level_mb / allowance - 0.5) + 0.3 * (fee <= 39)),
        ]
    )
    base_logit = np.log(_BASE_RATE / (1.0 - _BASE_RATE))[None, :]
    base = _sigmoid(base_logit + 1.4 * (affinity - 0.5) + _ACT_BASE_SHIFT[activity][:, None])
    effect = (
        _MAX_LIFT[None, :]
        * affinity**2
        * (_ACT_EFFECT_MULT[activity] * _AGE_EFFECT_MULT[age])[:, None]
    )
    # Sleeping dogs: a contact reminds them to leave, so it lowers their response, never below 0.
    sleeping = rng.random(m) < np.minimum(0.02 + 0.35 * churn_risk, 0.5)
    dog_effect = -np.minimum(base, rng.uniform(0.002, 0.015, (m, 1)))
    effect = np.where(sleeping[:, None], dog_effect, effect)

    profile = pa.table(
        {
            "subscriber_id": pa.array(ids, type=pa.int64()),
            "province_code": _dictionary(province, rw.province_codes),
            "city_code": _dictionary(city, rw.city_codes),
            "plan_fee_yuan": pa.array(fee.astype(np.int32)),
            "arpu_yuan": _f32(arpu, 2),
            "data_mb": _f32(data_avg, 1),
            "voice_min": _f32(voice_avg, 1),
            "tenure_months": pa.array(tenure.astype(np.int32)),
            "device_tier": _dictionary(device, DEVICE_TIERS),
            "age_band": _dictionary(age, AGE_BANDS),
            "gender": _dictionary(female.astype(np.int64), GENDERS),
            **{f"interest_{name}": _f32(interest[:, i], 3) for i, name in enumerate(INTERESTS)},
            "primary_interest": _dictionary(primary, INTERESTS),
            "activity_level": _dictionary(activity, ACTIVITY_LEVELS),
            "churn_risk": _f32(churn_risk, 4),
            "status": _dictionary(status, STATUSES),
            "joined_on": pa.array(joined_on, type=pa.date32()),
        }
    )
    usage = pa.table(
        {
            "subscriber_id": pa.array(np.repeat(ids, USAGE_MONTHS), type=pa.int64()),
            "month": pa.array(np.tile(_USAGE_DATES, m), type=pa.date32()),
            "data_mb": _f32(data_m.ravel(), 1),
            "voice_min": _f32(voice_m.ravel(), 1),
            "bill_yuan": _f32(bill_m.ravel(), 2),
        }
    )
    truth_cols: dict[str, pa.Array] = {"subscriber_id": pa.array(ids, type=pa.int64())}
    for i, name in enumerate(CATEGORIES):
        truth_cols[f"base_{name}"] = _f32(base[:, i], 5)
        truth_cols[f"effect_{name}"] = _f32(effect[:, i], 5)
    truth_cols["sleeping_dog"] = pa.array(sleeping)
    phones = pc.cast(pa.array(phone_numbers(ids, key)), pa.string())
    return Generated(profile, usage, pa.table(truth_cols), phones)


def chunk_count(n: int) -> int:
    """How many chunks `n` subscribers are drawn in."""
    return -(-n // CHUNK_SIZE)


def iter_chunks(n: int, seed: int, regions: Mapping[str, Any]) -> Iterator[Generated]:
    """The operator chunk by chunk, ids ascending, so memory stays bounded by one chunk."""
    if not 1 <= n <= MAX_SUBSCRIBERS:
        raise ValueError(f"n must be between 1 and {MAX_SUBSCRIBERS}")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    rw = region_weights(regions)
    key = phone_key(seed)
    for k in range(chunk_count(n)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_CHUNK_STREAM, k)))
        first = k * CHUNK_SIZE + 1
        ids = np.arange(first, min(first + CHUNK_SIZE, n + 1), dtype=np.int64)
        yield _draw_chunk(rng, ids, rw, key)


def concat(parts: Sequence[Generated]) -> Generated:
    """Chunks joined without copying their columns."""
    return Generated(
        subscriber_profile=pa.concat_tables([p.subscriber_profile for p in parts]),
        usage_monthly=pa.concat_tables([p.usage_monthly for p in parts]),
        response_truth=pa.concat_tables([p.response_truth for p in parts]),
        phones=pa.chunked_array([p.phones for p in parts], type=pa.string()),
    )


def generate(
    n: int,
    seed: int,
    regions: Mapping[str, Any],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Generated:
    """A whole synthetic operator of `n` subscribers; the same seed gives identical tables."""
    parts = []
    done = 0
    for part in iter_chunks(n, seed, regions):
        parts.append(part)
        done += part.count
        if progress is not None:
            progress(done, n)
    return concat(parts)


@dataclass(frozen=True)
class Simulated:
    """Who responded after a campaign, drawn from the truth, and the effect that was planted."""

    responded: Bool
    # Mean planted effect of a contact over the target cell: what an evaluation should recover.
    true_uplift: float


def simulate_responses(
    truth: pa.Table,
    *,
    subscriber_ids: I64,
    treated: Bool,
    category: str,
    seed: int,
) -> Simulated:
    """Draw each subscriber's response: base propensity, plus the contact effect when treated."""
    if category not in CATEGORIES:
        raise ValueError(f"category is one of {', '.join(CATEGORIES)}")
    if subscriber_ids.shape != treated.shape:
        raise ValueError("subscriber_ids and treated differ in length")
    ids = truth.column("subscriber_id").to_numpy()
    order = np.argsort(ids)
    pos = np.searchsorted(ids, subscriber_ids, sorter=order)
    pos = np.clip(pos, 0, len(ids) - 1)
    rows = order[pos]
    if len(ids) == 0 or not np.array_equal(ids[rows], subscriber_ids):
        raise ValueError("some subscribers are not in the truth")
    base = truth.column(f"base_{category}").to_numpy().astype(np.float64)[rows]
    effect = truth.column(f"effect_{category}").to_numpy().astype(np.float64)[rows]
    p = np.clip(base + np.where(treated, effect, 0.0), 0.0, 1.0)
    # The draw depends only on the seed and the subscriber, not on the order of the rows.
    rng = np.random.default_rng([seed, 0x5EED])
    u = rng.random(len(ids))[rows]
    true_uplift = float(effect[treated].mean()) if treated.any() else 0.0
    return Simulated(responded=u < p, true_uplift=true_uplift)
