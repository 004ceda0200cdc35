"""Planning: a wave's contact rows drawn from its target list, in a seeded order, in chunks."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import rules as audience_rules
from perkflow.audience import service as audience
from perkflow.audience.marts import PROFILE
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign, CampaignWave
from perkflow.campaigns.rules import Cell, ContactStatus, WaveKind, WaveStatus
from perkflow.db import unit_of_work
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")

log = logging.getLogger("perkflow.campaigns.worker")


PLAN_CHUNK = 5_000


def _condition(t: Any, c: rules.Condition) -> Any:
    col = t[c.column]
    if c.op == "in":
        return col.isin(list(c.value))
    if c.op == "not_in":
        return col.notin(list(c.value))
    return {
        "=": col == c.value,
        "!=": col != c.value,
        "<": col < c.value,
        "<=": col <= c.value,
        ">": col > c.value,
        ">=": col >= c.value,
    }[c.op]


def _variant_expr(t: Any, variants: Sequence[rules.Variant]) -> Any:
    """First matching variant's key, set-based; a missing value matches nothing (as in rules)."""
    branches = []
    for v in variants:
        if not v.match:
            branches.append((ibis.literal(True), v.key))
            break
        cond = _condition(t, v.match[0])
        for c in v.match[1:]:
            cond = cond & _condition(t, c)
        branches.append((cond.fill_null(False), v.key))
    return ibis.cases(*branches, else_=ibis.null("string"))


def wave_sample_salt(salt: str) -> str:
    """The hashed text of the test-wave draw: its own salt, so it is independent of the split."""
    return f"wave:{salt}"


def _wave_rows(mart: Mart, vault: Vault, campaign: Campaign, wave: CampaignWave, table: str) -> Any:
    spec = campaigns.spec_of(campaign)
    t = mart.table(table)
    t = t.filter(t.cell.isin([Cell.TARGET.value, Cell.CONTROL.value]))
    if wave.kind == WaveKind.TEST:
        prefix = audience_rules.hash_input_prefix(
            vault.assignment_key, wave_sample_salt(campaign.salt)
        )
        h = (ibis.literal(prefix) + t.subscriber_id.cast("string")).hexdigest("sha256")
        t = t.filter(
            h.substr(0, audience_rules.HASH_PREFIX_HEX)
            < audience_rules.hash_threshold(wave.share_bp)
        )
    p = mart.table(PROFILE)
    wanted = {"plan_fee_yuan", "city_code"} | {c.column for v in spec.variants for c in v.match}
    keep = [c for c in sorted(wanted) if c in p.columns and c != "province_code"]
    p = p.select("subscriber_id", *keep).rename(pid="subscriber_id")
    j = t.left_join(p, t.subscriber_id == p.pid)
    cols = {
        "subscriber_id": j.subscriber_id,
        "cell": j.cell,
        "province_code": j.province_code,
        "variant": _variant_expr(j, spec.variants),
    }
    for c in ("plan_fee_yuan", "city_code"):
        cols[c] = j[c] if c in keep else ibis.null("string")
    return j.select(**cols).order_by("subscriber_id")


def dispatch_order(rows: pa.Table, campaign: Campaign, wave: CampaignWave) -> pa.Table:
    """The wave's rows in a random order seeded from the campaign and the wave.

    Dispatch sends in contact id order, and ids follow the insert order: shuffled here, a budget
    or stock cap that ends a campaign early keeps a random sample of its targets, not the lowest
    subscriber ids. The same campaign and wave always give the same order, so a planner that
    stopped and runs again inserts the rows it had not reached yet.
    """
    seed = hashlib.sha256(f"dispatch:{campaign.salt}:{wave.id}".encode()).digest()
    order = list(range(rows.num_rows))
    random.Random(seed).shuffle(order)
    return rows.take(pa.array(order, type=pa.int64()))


def plan_wave(
    sessions: sessionmaker[Session],
    *,
    mart: Mart,
    vault: Vault,
    wave_id: int,
    chunk: int = PLAN_CHUNK,
) -> int:
    """Insert a wave's contact rows from the target list, in committed chunks; returns planned.

    Idempotent and resumable: a subscriber already in the campaign (an earlier chunk, the test
    wave) keeps their row. Control rows are `held`; target rows wait `queued` for dispatch.
    """
    with unit_of_work(sessions) as session:
        wave = session.get(CampaignWave, wave_id)
        if wave is None or wave.status != WaveStatus.PLANNING:
            return 0
        campaign = session.get(Campaign, wave.campaign_id)
        assert campaign is not None and campaign.target_list_id is not None
        table = audience.get_target_list(
            session, actor=SYSTEM, target_list_id=campaign.target_list_id
        ).mart_table
        session.expunge(campaign)
        session.expunge(wave)
    spec = campaigns.spec_of(campaign)
    channel_of = {v.key: v.channel for v in spec.variants}
    planned_at = clock.now()
    # One Arrow table of five narrow columns (ibis' batch reader does not work with this DuckDB);
    # the ledger inserts go in committed chunks, so a killed planner resumes where it stopped.
    arrow = dispatch_order(
        _wave_rows(mart, vault, campaign, wave, table).to_pyarrow(), campaign, wave
    )
    for batch in arrow.to_batches(max_chunksize=chunk):
        rows = []
        for r in batch.to_pylist():
            control = r["cell"] == Cell.CONTROL
            variant = r["variant"]
            if variant is None:
                status, reason = ContactStatus.SUPPRESSED, "no_variant"
            else:
                status = ContactStatus.HELD if control else ContactStatus.QUEUED
                reason = None
            rows.append(
                {
                    "campaign_id": campaign.id,
                    "wave_id": wave.id,
                    "subscriber_id": int(r["subscriber_id"]),
                    "cell": r["cell"],
                    "variant": variant,
                    "channel": channel_of.get(variant, spec.variants[0].channel),
                    "province_code": r["province_code"],
                    "status": status.value,
                    "reason": reason,
                    "attempts": 0,
                    # A control row's "contact" is the moment it would have been sent.
                    "contacted_at": planned_at if status == ContactStatus.HELD else None,
                    "fields": {
                        "plan_fee_yuan": r["plan_fee_yuan"],
                        "province": r["province_code"],
                        "city": r["city_code"],
                    },
                }
            )
        for start in range(0, len(rows), 500):
            with unit_of_work(sessions) as session:
                repo.insert_contacts_ignore(session, rows[start : start + 500])
                session.commit()
    with unit_of_work(sessions) as session:
        planned = sum(repo.count_by_status(session, wave_id=wave.id).values())
        repo.move_wave(
            session,
            wave_id=wave.id,
            expected=WaveStatus.PLANNING.value,
            target=WaveStatus.RUNNING.value,
            planned=planned,
            started_at=clock.now(),
        )
        session.commit()
    log.info("wave %s planned: %s contacts", wave.id, planned)
    return planned
