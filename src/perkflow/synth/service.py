"""Use cases of the synthetic operator: generate it into the mart, the ledger and the truth file."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from perkflow.synth import rules
else:
    # numpy and pyarrow at module level: loaded when an operator is generated, not at CLI start.
    rules = lazy_module("perkflow.synth.rules")
    np = lazy_module("numpy")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

PROFILE_TABLE = "subscriber_profile"
USAGE_TABLE = "usage_monthly"
TRUTH_FILE = "response_truth.parquet"
# Rows per ledger insert: large enough to amortise the statement, small enough to bound memory.
LEDGER_BATCH = 10_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthReport:
    """What one generation produced."""

    subscribers: int
    seed: int
    provinces: int
    replaced: int
    mart_files: tuple[Path, ...]
    truth_file: Path
    seconds: float


def truth_path(truth_dir: Path) -> Path:
    """Where the hidden response truth of the synthetic subscribers is kept."""
    return truth_dir / TRUTH_FILE


def load_truth(truth_dir: Path) -> pa.Table:
    """The hidden truth, for checking an evaluation against the effects that were planted."""
    path = truth_path(truth_dir)
    if not path.exists():
        raise NotFound("no synthetic truth here; run `perkflow synth` first", field="truth_dir")
    return pq.read_table(path)


def _validate(*, n: int, seed: int, mart: Mart, truth_dir: Path) -> None:
    """Refuse bad input before anything changes."""
    if not 1 <= n <= rules.MAX_SUBSCRIBERS:
        raise ValidationFailed(
            f"subscribers must be between 1 and {rules.MAX_SUBSCRIBERS:,}", field="subscribers"
        )
    if seed < 0:
        raise ValidationFailed("seed must be 0 or more", field="seed")
    # The mart lists every Parquet file in its folder: truth there would be visible to targeting.
    if truth_dir.resolve().is_relative_to(mart.root.resolve()):
        raise ValidationFailed("the truth folder must be outside the mart", field="truth_dir")


def _dates(column: pa.ChunkedArray) -> list[date]:
    """Python dates for a date32 column; one object per distinct day, since days repeat a lot."""
    days = column.cast(pa.int32()).to_numpy()
    distinct, inverse = np.unique(days, return_inverse=True)
    epoch = date(1970, 1, 1).toordinal()
    objects = np.array([date.fromordinal(epoch + int(d)) for d in distinct], dtype=object)
    return list(objects[inverse])


def _ledger_rows(part: rules.Generated) -> list[dict[str, Any]]:
    """The subscriber master rows of one chunk, phones still clear (the ledger encrypts them)."""
    profile = part.subscriber_profile
    # Dictionary columns are cast to plain strings first: converting those to Python is far faster.
    columns = (
        profile["subscriber_id"].to_pylist(),
        part.phones.to_pylist(),
        profile["province_code"].cast(pa.string()).to_pylist(),
        profile["city_code"].cast(pa.string()).to_pylist(),
        profile["plan_fee_yuan"].to_pylist(),
        profile["status"].cast(pa.string()).to_pylist(),
        _dates(profile["joined_on"]),
    )
    return [
        {
            "id": sid,
            "phone": phone,
            "province_code": province,
            "city_code": city,
            "plan_fee_fen": fee * 100,
            "status": status,
            "joined_on": joined,
        }
        for sid, phone, province, city, fee, status, joined in zip(*columns, strict=True)
    ]


def _write_truth(table: pa.Table, truth_dir: Path) -> Path:
    """Replace the truth file atomically, as the mart does for its tables."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    target = truth_path(truth_dir)
    tmp = target.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(target)
    return target


def generate_operator(
    session: Session,
    *,
    mart: Mart,
    truth_dir: Path,
    vault: Vault,
    n: int,
    seed: int,
    replace: bool = False,
    progress: Progress | None = None,
) -> SynthReport:
    """Generate `n` synthetic subscribers: ledger master, mart profile and usage, hidden truth."""
    started = time.perf_counter()
    _validate(n=n, seed=seed, mart=mart, truth_dir=truth_dir)
    existing = subscribers.count_subscribers(session)
    if existing and not replace:
        raise Conflict(
            f"the ledger already holds {existing:,} subscribers; use --replace", field="subscribers"
        )
    replaced = subscribers.remove_all_subscribers(session) if existing else 0
    # Subscribers reference their province and city; a fresh ledger gets the packaged tree.
    org.seed_regions(session)
    regions = org.load_region_data()

    parts: list[rules.Generated] = []
    done = 0
    for part in rules.iter_chunks(n, seed, regions):
        rows = _ledger_rows(part)
        for start in range(0, len(rows), LEDGER_BATCH):
            subscribers.register_subscribers(
                session, vault=vault, rows=rows[start : start + LEDGER_BATCH]
            )
        # Only each chunk's compact Arrow tables are kept; its float64 intermediates are gone.
        parts.append(part)
        done += part.count
        if progress is not None:
            progress(done, n)

    # Files are written only after every ledger row went in, so a failed insert leaves them alone.
    whole = rules.concat(parts)
    mart_files = (
        mart.write(PROFILE_TABLE, whole.subscriber_profile),
        mart.write(USAGE_TABLE, whole.usage_monthly),
    )
    truth_file = _write_truth(whole.response_truth, truth_dir)
    provinces = len(set(whole.subscriber_profile["province_code"].unique().to_pylist()))
    return SynthReport(
        subscribers=n,
        seed=seed,
        provinces=provinces,
        replaced=replaced,
        mart_files=mart_files,
        truth_file=truth_file,
        seconds=time.perf_counter() - started,
    )


def simulate_responses(
    truth_dir: Path,
    *,
    subscriber_ids: rules.I64,
    treated: rules.Bool,
    category: str,
    seed: int,
) -> rules.Simulated:
    """Who of these subscribers responds to an offer of the category, by the hidden truth."""
    truth = load_truth(truth_dir)
    try:
        return rules.simulate_responses(
            truth, subscriber_ids=subscriber_ids, treated=treated, category=category, seed=seed
        )
    except ValueError as exc:
        field = "category" if "category" in str(exc) else "subscriber_ids"
        raise ValidationFailed(str(exc), field=field) from exc
