"""Evaluation use cases: what a campaign did against its control, history import, write-back."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from perkflow.audience import marts
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.rules import POLICY_CHANNEL, Cell, CellCount, HistoryRow
from perkflow.catalog.rules import Category
from perkflow.errors import Forbidden, NotFound, PerkflowError, Problem, ValidationFailed
from perkflow.insights import breakdowns, cells, mart_cells, pre_period, presentation, rules
from perkflow.insights import repository as repo
from perkflow.insights.breakdowns import Breakdown
from perkflow.insights.rules import Arm, Comparison, Timeline
from perkflow.insights.stats import srm
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.compute as pc
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pc = lazy_module("pyarrow.compute")

DEFAULT_ZONE = "Asia/Shanghai"
WAVES = ("test", "rollout")
RESPONSE_FEATURES = marts.RESPONSE_FEATURES  # the audience's segments read it
# Channels and categories that get a column in response_features: the contact policy's channels
# (a campaign's webhook is a push) and the catalog's benefit categories. Fixed, so segments and
# models see the same columns whatever the history holds.
FEATURE_CHANNELS = ("sms", "email", "push", "in_app")
FEATURE_CATEGORIES = tuple(c.value for c in Category)
# Ledger campaigns in the mart's history tables are named "c<id>"; other sources use other names.
_LEDGER_CAMPAIGN = re.compile(r"^c\d+$")
_SYNC_BATCH = 50_000
_PROBLEMS_SHOWN = 20


# ---- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One comparison of a sub-group: a content variant or a province."""

    key: str | None
    comparison: Comparison
    cost_fen: int | None
    cost_per_incremental_fen: int | None
    # A variant's comparison reads its own control rows (like with like); False for an imported
    # history whose controls carry no variant, where the whole control is shared.
    own_control: bool = True
    # Targets whose message went out against the same controls (treated-on-treated, not ITT).
    treated: Comparison | None = None


@dataclass(frozen=True)
class Evaluation:
    """A campaign's evaluation: cells, uplift, sub-groups, cost and the timeline for charts.

    ``overall`` is the headline: intent to treat, every assigned row in its cell. With a test
    wave and a rollout, it is the rollout wave alone (the confirmatory estimate, ``headline_wave``
    "rollout"); the deciding test wave is ``test_wave`` and every wave together ``pooled``.
    """

    campaign_id: int
    name: str
    wave: str | None
    overall: Comparison
    cost_fen: int | None
    cost_per_incremental_fen: int | None
    variants: list[Group]
    provinces: list[Group]
    timeline: Timeline
    zone: str
    # Delivered targets against all controls: what the message did to those it reached.
    treated: Comparison | None = None
    # The check of assigned target/control counts against the planned control share.
    sample_ratio: srm.SampleRatio | None = None
    planned_control_share_bp: int | None = None
    variant_control: str = "own"  # own | shared (see Group.own_control)
    headline_wave: str | None = None  # the wave ``overall`` reads when it is not every wave
    test_wave: Comparison | None = None
    pooled: Comparison | None = None
    # Read from the mart when one is given (``pre_period``, ``breakdowns``); None without it.
    cuped: pre_period.Reading | None = None
    breakdowns: list[Breakdown] | None = None

    @property
    def cells(self) -> dict[str, Arm]:
        """Target and control counts."""
        return {Cell.TARGET.value: self.overall.target, Cell.CONTROL.value: self.overall.control}


def _arm(rows: Iterable[CellCount]) -> Arm:
    return cells.arm(rows)


def _offer_cost(campaign: campaigns.Campaign) -> int | None:
    offer = campaign.offer or {}
    if offer.get("kind", "none") == "none":
        return 0
    cost = offer.get("cost_fen")
    return int(cost) if isinstance(cost, int) and not isinstance(cost, bool) else None


def _cost(campaign: campaigns.Campaign, rows: Sequence[CellCount]) -> int | None:
    """Offers taken up by target responders, plus the messages that went out.

    A target suppressed at send time was assigned (it counts in the comparison) but cost
    nothing to send; a row without treated counts (an imported history) counts as sent.
    """
    channel_of = {v.get("key"): v.get("channel") for v in campaign.variants or []}
    sends: dict[str, int] = defaultdict(int)
    imported = campaign.import_source is not None
    for r in rows:
        if r.cell == Cell.TARGET.value:
            sent = r.contacts if imported else r.treated
            sends[str(channel_of.get(r.variant) or "unknown")] += sent
    target = [r for r in rows if r.cell == Cell.TARGET.value]
    return rules.campaign_cost_fen(
        offer_cost_fen=_offer_cost(campaign),
        offers_issued=sum(r.responders for r in target),
        sends=sends,
    )


def _group(
    key: str | None,
    campaign: campaigns.Campaign,
    target: list[CellCount],
    control: list[CellCount],
    *,
    own_control: bool = True,
) -> Group:
    comparison = rules.compare(_arm(target), _arm(control))
    cost = _cost(campaign, target)
    treated = None
    if campaign.import_source is None:
        treated = rules.compare(cells.treated_arm(target), _arm(control))
    return Group(
        key=key,
        comparison=comparison,
        cost_fen=cost,
        cost_per_incremental_fen=rules.cost_per_incremental_fen(cost, comparison),
        own_control=own_control,
        treated=treated,
    )


def _waves(session: Session, actor: Actor, campaign_id: int, kind: str) -> list[int]:
    return list(campaigns.wave_ids(session, actor=actor, campaign_id=campaign_id, kind=kind))


def evaluate(
    session: Session,
    *,
    actor: Actor,
    campaign_id: int,
    wave_ids: Sequence[int] | None = None,
    wave: str | None = None,
    zone: str = DEFAULT_ZONE,
    mart: Mart | None = None,
    segment_ids: Sequence[int] = (),
) -> Evaluation:
    """Target against control for a campaign (or one wave), per variant and per province.

    Intent to treat: every assigned contact counts, sent or not (a target suppressed at send
    time stays in its cell); treated-on-treated is shown beside it. Each variant is compared
    with its own control rows (``insights.cells``). Without a wave named, a campaign that rolled
    out is judged on its rollout wave, and its test wave is reported on its own. With a ``mart``,
    the CUPED reading and the breakdowns by plan band and activity group come beside them.
    """
    campaign = campaigns.get_campaign(session, actor=actor, campaign_id=campaign_id)
    if wave is not None:
        if wave not in WAVES:
            raise ValidationFailed(f"wave is one of {', '.join(WAVES)}", field="wave")
        wave_ids = _waves(session, actor, campaign_id, wave)
        if not wave_ids:
            raise NotFound(f"campaign {campaign_id} has no {wave} wave", field="wave")
    headline_wave = wave
    test_wave: Comparison | None = None
    pooled: Comparison | None = None
    if wave is None and wave_ids is None:
        rollout_ids = _waves(session, actor, campaign_id, "rollout")
        test_ids = _waves(session, actor, campaign_id, "test") if rollout_ids else []
        if rollout_ids and test_ids:
            everything = campaigns.contact_counts(session, actor=actor, campaign_id=campaign_id)
            pooled = rules.compare(*(_arm(rows) for rows in cells.split(everything)))
            tested = campaigns.contact_counts(
                session, actor=actor, campaign_id=campaign_id, wave_ids=test_ids
            )
            test_wave = rules.compare(*(_arm(rows) for rows in cells.split(tested)))
            wave_ids, headline_wave = rollout_ids, "rollout"
    counts = campaigns.contact_counts(
        session, actor=actor, campaign_id=campaign_id, wave_ids=wave_ids
    )
    target, control = cells.split(counts)
    overall = _group(None, campaign, target, control)
    chosen = cells.by_variant(counts)
    variants = [
        _group(v.key, campaign, v.target, v.control, own_control=v.own_control) for v in chosen
    ]
    # Control is drawn per province, so each province is a fair experiment of its own.
    provinces = [_group(p.key, campaign, p.target, p.control) for p in cells.by_province(counts)]

    planned = campaign.control_share_bp if campaign.import_source is None else None
    sample_ratio = None
    if planned is not None:
        sample_ratio = srm.check(
            overall.comparison.target.contacts,
            overall.comparison.control.contacts,
            control_share_bp=planned,
        )
    firsts = campaigns.response_times(
        session, actor=actor, campaign_id=campaign_id, wave_ids=wave_ids
    )
    timeline = rules.cumulative_timeline(
        ((f.cell, f.responded_at) for f in firsts),
        {Cell.TARGET.value: overall.comparison.target.contacts}
        | {Cell.CONTROL.value: overall.comparison.control.contacts},
        zone=zone,
    )
    # CUPED and the breakdowns read the headline's waves from the mart, as the headline does.
    read: dict[str, Any] = {}
    if wave_ids is not None:
        read = {"wave_ids": list(wave_ids), "waves": headline_wave or "chosen"}
    return Evaluation(
        campaign_id=campaign.id,
        name=campaign.name,
        wave=wave,
        overall=overall.comparison,
        cost_fen=overall.cost_fen,
        cost_per_incremental_fen=overall.cost_per_incremental_fen,
        variants=variants,
        provinces=provinces,
        timeline=timeline,
        zone=zone,
        treated=overall.treated,
        sample_ratio=sample_ratio,
        planned_control_share_bp=planned,
        variant_control="own" if all(v.own_control for v in chosen) else "shared",
        headline_wave=headline_wave,
        test_wave=test_wave,
        pooled=pooled,
        cuped=None if mart is None else pre_period.read(mart, campaign_id=campaign.id, **read),
        breakdowns=None
        if mart is None
        else breakdowns.read(
            mart,
            campaign_id=campaign.id,
            segments=_segments(session, actor, mart, campaign.id, segment_ids, read),
            **read,
        ),
    )


MAX_SEGMENTS = 5  # saved segments one evaluation splits by


def _segments(
    session: Session,
    actor: Actor,
    mart: Mart,
    campaign_id: int,
    segment_ids: Sequence[int],
    read: dict[str, Any],
) -> list[breakdowns.Segment]:
    """The saved segments to split by, each as of the campaign's first contact.

    Membership is read as the segment's rules select on that day: its history rules see only
    what happened before the campaign. Profile, score and feature columns are read as the mart
    holds them now.
    """
    if not segment_ids:
        return []
    if len(set(segment_ids)) > MAX_SEGMENTS:
        raise ValidationFailed(f"at most {MAX_SEGMENTS} segments at once", field="segment")
    from perkflow.audience import service as audience  # only this use case needs the audience

    as_of = mart_cells.first_contact(mart, campaign_id, read.get("wave_ids"))
    if as_of is None:
        return []
    out = []
    for sid in dict.fromkeys(segment_ids):
        try:
            members = audience.segment_members(
                session, mart=mart, actor=actor, segment_id=sid, as_of=as_of
            )
        except NotFound as exc:
            raise NotFound(f"segment {sid} not found", field="segment") from exc
        out.append(
            breakdowns.Segment(
                id=members.segment.id,
                name=members.segment.name,
                version=members.version,
                members=members.table,
            )
        )
    return out


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return [ci[0], ci[1]] if ci is not None else None


def _cell_dict(arm: Arm) -> dict[str, Any]:
    return {
        "contacts": arm.contacts,
        "responses": arm.responders,
        "rate": arm.rate,
        "revenue_fen": arm.revenue_fen,
    }


def _uplift_dict(
    c: Comparison, adjusted: float | None = None, *, adjusted_by: str | None = None
) -> dict[str, Any]:
    return presentation.uplift_dict(c, adjusted, adjusted_by=adjusted_by)


def _incremental_dict(c: Comparison) -> dict[str, Any]:
    return presentation.incremental_dict(c)


def verdict(c: Comparison, adjusted: float | None = None, *, adjusted_by: str | None = None) -> str:
    """``significant``, ``not significant`` or ``not enough data`` at alpha 0.05.

    Where several comparisons are read at once the badge reads the adjusted p-value.
    """
    return presentation.verdict(c, adjusted, adjusted_by=adjusted_by)


def _pair_dict(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "cells": {
            Cell.TARGET.value: _cell_dict(c.target),
            Cell.CONTROL.value: _cell_dict(c.control),
        },
        "uplift": _uplift_dict(c),
        "significant": c.significant,
        "verdict": verdict(c),
    }


def _design_dict(evaluation: Evaluation) -> dict[str, Any]:
    """What the headline compares: its wave, the variants' controls, SRM, the other readings."""
    srm_check = evaluation.sample_ratio
    return {
        # The headline is intent to treat; a campaign that rolled out is judged on its rollout.
        "estimand": "intent_to_treat",
        "headline_wave": evaluation.headline_wave,
        "variant_control": evaluation.variant_control,
        "planned_control_share_bp": evaluation.planned_control_share_bp,
        "sample_ratio": None
        if srm_check is None
        else {
            "target": srm_check.target,
            "control": srm_check.control,
            "planned_control_share": srm_check.planned_control_share,
            "observed_control_share": srm_check.observed_control_share,
            "chi2": srm_check.chi2,
            "p_value": srm_check.p_value,
            "alpha": srm.SRM_ALPHA,
            "mismatch": srm_check.mismatch,
        },
        # Delivered targets against all controls: not the headline, labelled as what it is.
        "treated_on_treated": _pair_dict(evaluation.treated),
        "test_wave": _pair_dict(evaluation.test_wave),
        "pooled": _pair_dict(evaluation.pooled),
    }


def report_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as plain JSON: cells, uplift, variants, provinces, cost, timeline."""
    o = evaluation.overall
    # Variants are one family (Holm), provinces a breakdown (Benjamini–Hochberg).
    variant_p = presentation.adjust([g.comparison for g in evaluation.variants], presentation.HOLM)
    province_p = presentation.adjust([g.comparison for g in evaluation.provinces], presentation.BH)
    return {
        "campaign_id": evaluation.campaign_id,
        "name": evaluation.name,
        "wave": evaluation.wave,
        "alpha": rules.ALPHA,
        "methods": presentation.METHODS,
        "cells": {
            Cell.TARGET.value: _cell_dict(o.target),
            Cell.CONTROL.value: _cell_dict(o.control),
        },
        "uplift": _uplift_dict(o),
        "significant": o.significant,
        "verdict": verdict(o),
        "sequential": presentation.sequential_dict(o),
        "plan": presentation.plan_dict(o),
        "incremental": _incremental_dict(o),
        "cost_fen": evaluation.cost_fen,
        "cost_per_incremental_fen": evaluation.cost_per_incremental_fen,
        **_design_dict(evaluation),
        "variants": [
            {
                "variant": g.key,
                **_cell_dict(g.comparison.target),
                "control": _cell_dict(g.comparison.control),
                "own_control": g.own_control,
                "uplift": _uplift_dict(g.comparison, adj, adjusted_by=presentation.HOLM),
                "significant": presentation.significant(
                    g.comparison, adj, adjusted_by=presentation.HOLM
                ),
                "verdict": verdict(g.comparison, adj, adjusted_by=presentation.HOLM),
                "incremental": _incremental_dict(g.comparison),
                "cost_fen": g.cost_fen,
                "cost_per_incremental_fen": g.cost_per_incremental_fen,
            }
            for g, adj in zip(evaluation.variants, variant_p, strict=True)
        ],
        "provinces": [
            {
                "province_code": g.key,
                "target": _cell_dict(g.comparison.target),
                "control": _cell_dict(g.comparison.control),
                "uplift": _uplift_dict(g.comparison, adj, adjusted_by=presentation.BH),
                "significant": presentation.significant(
                    g.comparison, adj, adjusted_by=presentation.BH
                ),
                "verdict": verdict(g.comparison, adj, adjusted_by=presentation.BH),
                "incremental": _incremental_dict(g.comparison),
            }
            for g, adj in zip(evaluation.provinces, province_p, strict=True)
        ],
        "cuped": pre_period.reading_dict(evaluation.cuped),
        "breakdowns": breakdowns.breakdowns_dict(evaluation.breakdowns),
        "timeline": {
            "zone": evaluation.zone,
            "days": evaluation.timeline.days,
            "rates": evaluation.timeline.rates,
            "responses": evaluation.timeline.responders,
        },
    }


def campaign_power(
    session: Session, *, actor: Actor, campaign: campaigns.Campaign, mart: Mart | None = None
) -> dict[str, Any] | None:
    """What a campaign's split can detect: its list's size once built, its segment's count before.

    None when neither can be read (no list, no mart, a segment that no longer counts).
    """
    from perkflow.audience import service as audience  # only this use case needs the audience

    members: int | None = None
    try:
        if campaign.target_list_id is not None:
            members = audience.get_target_list(
                session, actor=actor, target_list_id=campaign.target_list_id
            ).members
        elif mart is not None and campaign.segment_id is not None:
            version = audience.get_segment_version(
                session, actor=actor, segment_id=campaign.segment_id
            )
            counted = audience.count_definition(
                session, mart=mart, actor=actor, raw=version.definition
            )
            members = int(counted["count"])
    except PerkflowError:
        return None
    return presentation.power_plan(
        members=members,
        control_share_bp=campaign.control_share_bp,
        test_share_bp=campaign.test_share_bp,
    )


# ---- imported histories -------------------------------------------------------------------


MATCH_KINDS = ("phone",)


def _read(path: Path, parse: Any) -> Any:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return parse(fh)
    except FileNotFoundError as exc:
        raise NotFound(f"no file {path}", field="file") from exc
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"{path.name} is not UTF-8 text", field="file") from exc


def _refuse(path: Path, problems: Sequence[Problem], field: str) -> ValidationFailed:
    return ValidationFailed(
        f"{len(problems)} problem(s) in {path.name}, nothing loaded:\n"
        + rules.summarize_problems(problems, limit=_PROBLEMS_SHOWN),
        field=field,
        problems=[dataclasses.asdict(p) for p in problems[:100]],
    )


def _phone_links(session: Session, *, vault: Vault, rows: Sequence[HistoryRow]) -> dict[int, int]:
    """Outside id → subscriber for the rows whose phone is a subscriber's (by keyed hash)."""
    if not any(r.phone is not None for r in rows):
        raise ValidationFailed(
            f"--match phone needs a {rules.PHONE_COLUMN} column with numbers", field="match"
        )
    links: dict[int, int] = {}
    for r in rows:
        if r.phone is None:
            continue
        found = subscribers.find_by_phone(session, vault=vault, phone=r.phone)
        if found is not None:
            links[r.subscriber_id] = found.id
    return links


def import_history_csv(
    session: Session,
    *,
    actor: Actor,
    path: Path,
    name: str,
    source: str,
    zone: str = DEFAULT_ZONE,
    match: str | None = None,
    vault: Vault | None = None,
    map_path: Path | None = None,
) -> campaigns.Campaign:
    """Load a history CSV as a finished campaign of an outside source; a bad line refuses all.

    Its ids stay the source's unless matched on purpose: ``match="phone"`` (a phone column,
    matched by the subscriber master's keyed hash) or ``map_path`` (a CSV
    ``outside_id,subscriber_id``).
    """
    if match is not None and match not in MATCH_KINDS:
        raise ValidationFailed(f"match is one of {', '.join(MATCH_KINDS)}", field="match")
    if match is not None and map_path is not None:
        raise ValidationFailed("match by phone or by a mapping file, not both", field="match")
    rows, problems = _read(path, lambda fh: rules.parse_history(fh, zone=zone))
    if problems:
        raise _refuse(path, problems, "file")
    links: dict[int, int] = {}
    if map_path is not None:
        links, problems = _read(map_path, rules.parse_id_map)
        if problems:
            raise _refuse(map_path, problems, "map")
    elif match == "phone":
        if vault is None:
            raise ValidationFailed("matching by phone needs the vault", field="match")
        links = _phone_links(session, vault=vault, rows=rows)
    return campaigns.import_history(
        session, actor=actor, name=name, source=source, rows=rows, links=links
    )


# ---- the mart: contact and response history, response features ----------------------------


def _require_national_reader(actor: Actor) -> None:
    """The mart's history spans every province: only a national reader may sync it."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    if org.visible_province(actor) is not None:
        raise Forbidden("the mart's history spans every province; a national role syncs it")


def _ledger_rows_replaced(mart: Mart, name: str, schema: pa.Schema, new: pa.Table) -> int:
    """The table with every ledger campaign's rows replaced by ``new`` (one atomic rewrite)."""
    fresh = marts.conform(new, schema)
    if mart.has(name):
        old = marts.widen(mart.table(name).to_pyarrow(), schema)
        keep = pc.invert(pc.match_substring_regex(old["campaign_id"], _LEDGER_CAMPAIGN.pattern))
        fresh = pa.concat_tables([old.filter(keep), fresh])
    mart.write(name, fresh)
    return int(new.num_rows)


def sync_history(session: Session, *, actor: Actor, mart: Mart) -> int:
    """Export every campaign's contacts and responses to the mart's history; returns contacts.

    Idempotent: the ledger's campaigns (``c<id>`` in the mart) are rewritten whole on each sync,
    so a second run changes nothing and rows from other sources are kept. Every assigned contact
    is exported with its variant, wave, status and reason (a target suppressed at send time too:
    intent to treat); a table written before those columns existed gets them on this rewrite.
    """
    _require_national_reader(actor)
    contacts: dict[str, list[Any]] = defaultdict(list)
    after = 0
    while batch := campaigns.history_contacts(
        session, actor=actor, after_id=after, limit=_SYNC_BATCH
    ):
        for row in batch:
            contacts["subscriber_id"].append(row.subscriber_id)
            contacts["campaign_id"].append(f"c{row.campaign_id}")
            contacts["channel"].append(POLICY_CHANNEL.get(row.channel, row.channel))
            contacts["cell"].append(row.cell)
            contacts["contacted_at"].append(row.contacted_at)
            contacts["target_list_id"].append(row.target_list_id)
            contacts["variant"].append(row.variant)
            contacts["wave_id"].append(row.wave_id)
            contacts["status"].append(row.status)
            contacts["reason"].append(row.reason)
        after = batch[-1].id
    responses: dict[str, list[Any]] = defaultdict(list)
    after = 0
    while rbatch := campaigns.history_responses(
        session, actor=actor, after_id=after, limit=_SYNC_BATCH
    ):
        for _id, cid, sid, channel, kind, at, value in rbatch:
            responses["subscriber_id"].append(sid)
            responses["campaign_id"].append(f"c{cid}")
            responses["channel"].append(POLICY_CHANNEL.get(channel, channel))
            responses["kind"].append(kind)
            responses["responded_at"].append(at)
            responses["value_fen"].append(value)
        after = rbatch[-1][0]
    n = _ledger_rows_replaced(
        mart,
        marts.CONTACT_HISTORY,
        marts.CONTACT_HISTORY_SCHEMA,
        pa.table(
            {f.name: contacts[f.name] for f in marts.CONTACT_HISTORY_SCHEMA},
            schema=marts.CONTACT_HISTORY_SCHEMA,
        ),
    )
    _ledger_rows_replaced(
        mart,
        marts.RESPONSE_HISTORY,
        marts.RESPONSE_HISTORY_SCHEMA,
        pa.table(
            {f.name: responses[f.name] for f in marts.RESPONSE_HISTORY_SCHEMA},
            schema=marts.RESPONSE_HISTORY_SCHEMA,
        ),
    )
    return n


def _history(mart: Mart, name: str, schema: pa.Schema) -> Any:
    if mart.has(name):
        return mart.table(name)
    return ibis.memtable(marts.empty(schema))


def write_back_features(
    session: Session, *, actor: Actor, mart: Mart, as_of: datetime | None = None
) -> int:
    """Per-subscriber response features from the mart's history into ``response_features``.

    Response rate overall, by channel, by local time slot and by offer category; contacts in the
    last 30 days (fatigue); last contact and response. Returns the number of subscribers.
    """
    _require_national_reader(actor)
    as_of = as_of or clock.now()
    offers = campaigns.offers(session, actor=actor)
    offer_table = pa.table(
        {
            "campaign_id": [f"c{cid}" for cid in offers],
            "category": [
                str(o["category"]) if o.get("category") is not None else None
                for o in offers.values()
            ],
        },
        schema=pa.schema([("campaign_id", pa.string()), ("category", pa.string())]),
    )
    offset = ZoneInfo(DEFAULT_ZONE).utcoffset(as_of)
    expr = repo.response_features(
        marts.contacts_made(_history(mart, marts.CONTACT_HISTORY, marts.CONTACT_HISTORY_SCHEMA)),
        _history(mart, marts.RESPONSE_HISTORY, marts.RESPONSE_HISTORY_SCHEMA),
        ibis.memtable(offer_table),
        channels=FEATURE_CHANNELS,
        categories=FEATURE_CATEGORIES,
        # The operator's zone (Asia/Shanghai) keeps one offset all year.
        utc_offset_hours=int(offset.total_seconds() // 3600) if offset else 0,
        as_of=as_of,
    )
    schema = repo.features_schema(FEATURE_CHANNELS, FEATURE_CATEGORIES)
    table = marts.conform(mart.con.to_pyarrow(expr), schema)
    mart.write(RESPONSE_FEATURES, table)
    return int(table.num_rows)


# ---- the console home ---------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """A campaign's incremental responses in one region; None where there is not enough data."""

    campaign_id: int
    name: str
    contacts: int
    incremental: float | None
    ci95: tuple[float, float] | None


def incremental_headline(
    session: Session, *, actor: Actor, campaign_id: int, zone: str = DEFAULT_ZONE
) -> Headline:
    """A campaign's incremental responses, in the actor's province when limited to one."""
    evaluation = evaluate(session, actor=actor, campaign_id=campaign_id, zone=zone)
    province = org.visible_province(actor)
    comparison: Comparison | None = evaluation.overall
    if province is not None:
        # A province marketer reads their province's own experiment, never the national figure.
        comparison = next((g.comparison for g in evaluation.provinces if g.key == province), None)
    if comparison is None:
        return Headline(campaign_id, evaluation.name, 0, None, None)
    return Headline(
        campaign_id=campaign_id,
        name=evaluation.name,
        contacts=comparison.target.contacts + comparison.control.contacts,
        incremental=comparison.incremental_responses,
        ci95=comparison.incremental_ci95,
    )
