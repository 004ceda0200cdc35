"""Membership use cases: batch evaluation over the mart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.errors import Conflict, NotFound
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.membership import compiler
from perkflow.membership import repository as repo
from perkflow.membership.rules import (
    Program,
)
from perkflow.org.rules import Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _require_edit
from .program import Loaded, load, parse_program
from .tiers import TierRun, apply_tier_targets

# --- batch evaluation over the mart --------------------------------------------------------------


def export_prepaid(session: Session, *, mart: Mart) -> int:
    """Write the ledger's prepaid balances to the mart (the one sync path); returns the rows."""
    ids: list[int] = []
    yuan: list[float] = []
    for sid, bal in repo.prepaid_balances(session):
        ids.append(sid)
        yuan.append(bal / 100)
    table = pa.table(
        {
            "subscriber_id": pa.array(ids, type=pa.int64()),
            "prepaid_yuan": pa.array(yuan, type=pa.float64()),
        }
    )
    mart.write(compiler.PREPAID_TABLE, table)
    return len(ids)


def tier_source(mart: Mart) -> Any:
    """The mart profile with prepaid balances joined in (what tier rules read)."""
    if not mart.has(compiler.PROFILE_TABLE):
        raise NotFound("the mart has no subscriber profile yet; run `perkflow synth`", field="mart")
    prepaid = mart.table(compiler.PREPAID_TABLE) if mart.has(compiler.PREPAID_TABLE) else None
    return compiler.with_prepaid(mart.table(compiler.PROFILE_TABLE), prepaid)


def _program_of(loaded: Loaded) -> Program:
    return Program(tiers=tuple(loaded.specs), points=loaded.points, grace_days=loaded.grace_days)


@dataclass(frozen=True)
class PreviewRow:
    code: str
    name_zh: str
    name_en: str
    level: int
    subscribers: int


def preview_program(
    session: Session, *, actor: Actor, mart: Mart, raw: Any
) -> tuple[Program, list[PreviewRow], int]:
    """How many subscribers each tier of a draft program would hold (mart), before saving it."""
    _require_edit(actor)
    program = parse_program(raw, mart=mart)
    counts = _distribution(mart, program)
    rows = [
        PreviewRow(t.code, t.name_zh, t.name_en, t.level, counts.get(t.level, 0))
        for t in program.tiers
    ]
    return program, rows, counts.get(0, 0)


def _distribution(mart: Mart, program: Program) -> dict[int, int]:
    levels = compiler.tier_levels(tier_source(mart), program)
    table = compiler.distribution(levels).to_pyarrow()
    return {
        int(lvl): int(n)
        for lvl, n in zip(table["tier_level"].to_pylist(), table["n"].to_pylist(), strict=True)
    }


def evaluate_levels(mart: Mart, program: Program) -> pa.Table:
    """(subscriber_id, tier_level) for every subscriber in the mart: one set-based query."""
    levels: pa.Table = compiler.tier_levels(tier_source(mart), program).to_pyarrow()
    return levels


def plan_evaluation(
    session: Session, *, actor: Actor, mart: Mart
) -> tuple[list[tuple[int, int]], int]:
    """Evaluate every subscriber over the mart and keep those whose tier state must change.

    Returns ((subscriber, target level) to apply, subscribers evaluated). The comparison with the
    ledger's members also runs in DuckDB, so only the differences come back to Python.
    """
    _require_edit(actor)
    loaded = load(session)
    if not loaded.tiers:
        raise Conflict("define the tier program first (perkflow member define)", field="tiers")
    export_prepaid(session, mart=mart)
    subscribers.export_statuses(session, mart=mart)  # churned in the ledger is churned here
    levels = compiler.tier_levels(tier_source(mart), _program_of(loaded))
    sids: list[int] = []
    cur: list[int] = []
    pend: list[int] = []
    due: list[bool] = []
    for sid, tier_id, pending, when in repo.member_states(session):
        sids.append(sid)
        cur.append(loaded.level_of(tier_id))
        pend.append(loaded.level_of(pending) if when is not None else -2)
        due.append(when is not None)
    state = ibis.memtable(
        pa.table(
            {
                "subscriber_id": pa.array(sids, type=pa.int64()),
                "cur": pa.array(cur, type=pa.int32()),
                "pend": pa.array(pend, type=pa.int32()),
                "has_due": pa.array(due, type=pa.bool_()),
            }
        )
    )
    j = levels.left_join(state, "subscriber_id")
    cur_l = j["cur"].fill_null(0)
    target = j["tier_level"]
    has_due = j["has_due"].fill_null(False)
    scheduled_same = has_due & (target < cur_l) & (j["pend"] == target)
    needs = ((target != cur_l) & ~scheduled_same.fill_null(False)) | (has_due & (target >= cur_l))
    diff = j.filter(needs).select("subscriber_id", "tier_level").order_by("subscriber_id")
    table = diff.to_pyarrow()
    total = int(levels.count().to_pyarrow().as_py())
    pairs = list(
        zip(table["subscriber_id"].to_pylist(), table["tier_level"].to_pylist(), strict=True)
    )
    return pairs, total


def apply_batch(
    session: Session, *, actor: Actor, targets: Sequence[tuple[int, int]], loaded: Loaded
) -> TierRun:
    """Apply one chunk of a batch evaluation; subscribers unknown to the ledger are left out."""
    statuses = subscribers.subscriber_statuses(session, subscriber_ids=[s for s, _ in targets])
    known = {s: lvl for s, lvl in targets if s in statuses}
    if not known:
        return TierRun()
    return apply_tier_targets(
        session,
        actor=actor,
        targets=known,
        reason="monthly evaluation",
        source="batch",
        immediate=[s for s in known if statuses[s] == Status.CHURNED],
        loaded=loaded,
    )
