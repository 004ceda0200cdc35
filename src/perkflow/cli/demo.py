"""The demo's closed loop: a campaign with a 10% control group, sent, answered, evaluated.

The synthetic operator carries a hidden truth (each subscriber's base propensity and the effect a
contact has on them), so the demo can say how close the evaluation came to the planted effect.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.campaigns import tasks
from perkflow.campaigns.rules import TREATED
from perkflow.catalog import service as catalog
from perkflow.channels import service as channels
from perkflow.channels.smtp_sink import SmtpSink
from perkflow.cli import tables
from perkflow.cli.context import Context, console
from perkflow.coupons import service as coupons
from perkflow.envelopes import service as envelopes
from perkflow.insights import service as insights
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.kit.money import format_fen
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.synth import service as synth

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

DEMO_NAME = "Demo · Video VIP month (视频会员月卡)"
AUTHOR = "admin"
APPROVER = "hq.approver"
CATEGORY = "video"
# The offer: a benefit of the default programme's catalog, so the evaluation's cost is the
# catalog's cost price times the offers taken up (a free "none" offer made it ¥0).
OFFER_BENEFIT = "video-tencent-month"
# The demo campaign ran two weeks ago, on a weekday morning in Beijing, so its whole response
# window has passed and no quiet hour held anyone back.
DAYS_AGO = 15
SEND_HOUR = 10
WINDOW_DAYS = 14


@dataclass(frozen=True)
class DemoResult:
    """The demo campaign and how its evaluation compares with the planted truth."""

    campaign_id: int
    report: dict[str, Any]
    true_uplift: float | None
    created: bool

    @property
    def covered(self) -> bool | None:
        """Whether the 95% interval of the uplift contains the planted effect."""
        ci = self.report["uplift"]["ci95"]
        if self.true_uplift is None or ci is None:
            return None
        return bool(ci[0] <= self.true_uplift <= ci[1])


def _actor(ctx: Context, username: str) -> Actor:
    with ctx.uow() as session:
        for user in org.list_staff(session, actor=SYSTEM):
            if user.username == username:
                return org.actor_for_staff(session, user=user, ip="cli")
    raise RuntimeError(f"demo user {username} is missing")


def _existing(ctx: Context) -> int | None:
    with ctx.uow() as session:
        rows, _ = campaigns.list_campaigns(session, actor=SYSTEM, limit=500)
        for c in rows:
            if c.name == DEMO_NAME:
                return c.id
    return None


def _send_time(zone: str) -> datetime:
    local = clock.now().astimezone(ZoneInfo(zone)) - timedelta(days=DAYS_AGO)
    while local.isoweekday() > 5:
        local -= timedelta(days=1)
    return local.replace(hour=SEND_HOUR, minute=0, second=0, microsecond=0).astimezone(
        ZoneInfo("UTC")
    )


def _offer(ctx: Context) -> dict[str, Any]:
    """The catalog's video VIP month, at its cost price: what each responder's offer costs."""
    with ctx.uow() as session:
        # The same catalog the demo operator gets afterwards (a second call adds nothing).
        _seed_catalog(session, ctx)
        benefit = catalog.find_benefit(session, actor=SYSTEM, code=OFFER_BENEFIT)
        session.commit()
        return {
            "kind": "benefit",
            "id": benefit.id,
            "category": CATEGORY,
            "name": "视频会员月卡 Video VIP month",
            "cost_fen": benefit.cost_price_fen,
        }


def _spec(segment_id: int, offer: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": DEMO_NAME,
        "segment_id": segment_id,
        "goal": {"kind": "order", "window_days": WINDOW_DAYS},
        "offer": offer,
        "variants": [
            {
                "key": "email-big-plan",
                "channel": "email",
                "subject": "{{ offer_name }}",
                "body": "您的{{ plan_fee_yuan }}元套餐本月可享视频会员月卡。"
                "Your {{ plan_fee_yuan }}-yuan plan includes a video VIP month.",
                "match": [{"column": "plan_fee_yuan", "op": ">=", "value": 129}],
            },
            {
                "key": "in-app",
                "channel": "in_app",
                "subject": "{{ offer_name }}",
                "body": "{{ province }}专享：视频会员月卡，点击领取。A video VIP month for you.",
            },
        ],
        "control_share": 10,
        "test_share": 0,
        "throttle": {"email": 5000, "in_app": 20000},
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _run(ctx: Context, *, seed: int) -> tuple[int, float]:
    """Create, approve, start and dispatch the demo campaign; then its subscribers answer."""
    zone = ctx.settings.timezone
    author, approver = _actor(ctx, AUTHOR), _actor(ctx, APPROVER)
    offer = _offer(ctx)
    sent_at = _send_time(zone)
    # The demo replays the past: while it sends, the clock runs from the send time.
    offset = clock.now() - sent_at
    clock.set_clock(lambda: datetime.now(UTC) - offset)
    try:
        # The e-mail peer runs before the campaign starts: a start checks its channels' peers.
        with SmtpSink() as sink:
            settings = ctx.settings.model_copy(
                update={"smtp_host": sink.host, "smtp_port": sink.port}
            )
            with ctx.uow() as session:
                segment = audience.create_segment(
                    session,
                    mart=ctx.mart,
                    actor=author,
                    name="Demo · video fans",
                    raw={
                        "rule": {"column": "interest_video", "op": ">=", "value": 0.85},
                        "exclude": ["churned", "suspended", "opted_out", "complaint_list"],
                    },
                )
                campaign = campaigns.create_campaign(
                    session, actor=author, mart=ctx.mart, raw=_spec(segment.id, offer)
                )
                # The split's salt from the seed: the same seed gives the same demo.
                campaign.salt = f"cmp-demo-{seed}"
                campaigns.submit_campaign(session, actor=author, campaign_id=campaign.id)
                campaigns.approve_campaign(session, actor=approver, campaign_id=campaign.id)
                campaigns.start_campaign(
                    session,
                    actor=author,
                    mart=ctx.mart,
                    vault=ctx.vault,
                    campaign_id=campaign.id,
                    zone=zone,
                    settings=settings,
                )
                campaign_id = campaign.id
                session.commit()
            adapters = channels.open_channels(settings, vault=ctx.vault)
            dispatcher = tasks.Dispatcher(channels=adapters, vault=ctx.vault, settings=settings)
            with _progress() as bar:
                task = bar.add_task("sending (in-app + e-mail)", total=None)

                seen = [0]

                def on_round(_: tasks.WorkerReport) -> None:
                    with ctx.uow() as session:
                        done, total = tasks.open_totals(session)
                    if total:  # a finished wave no longer counts as open work
                        seen[0] = total
                        bar.update(task, completed=done, total=total)

                tasks.run_worker(
                    ctx.sessions,
                    dispatcher,
                    mart=ctx.mart,
                    batch_size=2000,
                    idle_s=0.01,
                    on_round=on_round,
                )
                bar.update(task, completed=seen[0], total=seen[0] or None)
            channels.close_channels(adapters)
            mails = len(sink.mails)
        console.print(f"e-mail peer on loopback received {mails:,} messages")
    finally:
        clock.set_clock(None)
    true_uplift = _answer(ctx, campaign_id=campaign_id, sent_at=sent_at, seed=seed)
    return campaign_id, true_uplift


def _answer(ctx: Context, *, campaign_id: int, sent_at: datetime, seed: int) -> float:
    """Simulate the orders that followed, from the hidden truth, and record them as responses."""
    ids: list[int] = []
    treated: list[bool] = []
    with ctx.uow() as session:
        after = 0
        while True:
            rows = campaigns.history_contacts(session, actor=SYSTEM, after_id=after, limit=50_000)
            if not rows:
                break
            for row in rows:
                if row.campaign_id == campaign_id:
                    ids.append(row.subscriber_id)
                    # A target dropped at send time got nothing: it answers as untreated.
                    treated.append(row.cell == "target" and row.status in TREATED)
            after = rows[-1].id
    sim = synth.simulate_responses(
        ctx.settings.truth_dir,
        subscriber_ids=np.array(ids, dtype=np.int64),
        treated=np.array(treated, dtype=bool),
        category=CATEGORY,
        seed=seed,
    )
    rng = np.random.default_rng([seed, campaign_id])
    delays = rng.exponential(2.5, len(ids)).clip(0.01, WINDOW_DAYS - 0.5)
    answered = [i for i, yes in enumerate(sim.responded) if yes]
    prices = rng.choice([1500, 1990, 2500], len(ids))
    with _progress() as bar, ctx.uow() as session:
        task = bar.add_task("responses from the order center", total=len(answered))
        for n, i in enumerate(answered, 1):
            campaigns.record_response(
                session,
                actor=SYSTEM,
                subscriber_id=ids[i],
                kind="order",
                occurred_at=sent_at + timedelta(days=float(delays[i])),
                value_fen=int(prices[i]),
                idempotency_key=f"demo-order-{campaign_id}-{ids[i]}",
                source="simulation",
            )
            # Committed in slices: a crash loses at most one slice, and keys make a rerun safe.
            if n % 1000 == 0 or n == len(answered):
                session.commit()
                bar.update(task, completed=n)
    return sim.true_uplift


def run_demo_campaign(ctx: Context, *, seed: int) -> DemoResult:
    """Run the demo campaign once per home (later runs show the first one's evaluation)."""
    existing = _existing(ctx)
    true_uplift: float | None = None
    if existing is None:
        campaign_id, true_uplift = _run(ctx, seed=seed)
        with ctx.uow() as session:
            insights.sync_history(session, actor=SYSTEM, mart=ctx.mart)
            insights.write_back_features(session, actor=SYSTEM, mart=ctx.mart)
            session.commit()
    else:
        campaign_id = existing
    with ctx.uow() as session:
        evaluation = insights.evaluate(session, actor=SYSTEM, campaign_id=campaign_id)
        report = insights.report_dict(evaluation)
    return DemoResult(
        campaign_id=campaign_id,
        report=report,
        true_uplift=true_uplift,
        created=existing is None,
    )


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f} pt"


def _pts(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f}"


def print_result(result: DemoResult, *, base_url: str) -> None:
    """The evaluation as a table, and how it compares with the planted effect."""
    r = result.report
    # Points without their unit (the title says it) and spaces between columns: the table fits
    # an 80-column terminal without wrapping a figure.
    figures = ("contacts", "responses", "rate", "uplift", "95% CI", "p-value")
    table = tables.table(
        "group",
        *figures,
        keys={"group"},
        figures=figures,
        title=f"Campaign {result.campaign_id}: {DEMO_NAME}\nuplift against the control, in points",
        box=box.SIMPLE_HEAD,
        padding=0,
    )
    for cell in ("target", "control"):
        c = r["cells"][cell]
        table.add_row(cell, f"{c['contacts']:,}", f"{c['responses']:,}", _rate(c["rate"]))
    table.add_section()

    def uplift_row(label: str, u: dict[str, Any], *counts: str) -> None:
        ci = u["ci95"]
        table.add_row(
            label,
            *counts,
            _pts(u["absolute"]),
            f"{_pts(ci[0])}…{_pts(ci[1])}" if ci else "—",
            f"{u['p_value']:.2g}" if u["p_value"] is not None else "—",
        )

    uplift_row("all", r["uplift"], "", "", "")
    for v in r["variants"]:
        counts = (f"{v['contacts']:,}", f"{v['responses']:,}", _rate(v["rate"]))
        uplift_row(str(v["variant"]), v["uplift"], *counts)
    console.print(table)
    console.print(f"verdict: {r.get('verdict', '')}")
    if r.get("cost_fen") is not None:
        per = r.get("cost_per_incremental_fen")
        console.print(
            f"cost {format_fen(r['cost_fen'])} (offers taken up at cost price, plus sending)"
            + (f"; {format_fen(per)} per incremental response" if per is not None else "")
        )
    if result.true_uplift is not None:
        inside = "inside" if result.covered else "OUTSIDE"
        console.print(f"planted true effect {_pct(result.true_uplift)} — {inside} the 95% interval")
    console.print(f"evaluation: {base_url}/console/campaigns/{result.campaign_id}/evaluation")


# --- the demo operator's product: catalog, tiers, coupons, red envelopes, a served subscriber ---

# Partners the default programme's catalog lacks, so each category of the H5 has something in it.
# Fictional names, marked as a demo: (code, name, category, benefit code, zh, en, kind, cost fen,
# sale fen, card codes loaded, low-stock threshold).
EXTRA_CATALOG = [
    (
        "yueting-demo",
        "悦听音乐（演示） Yueting Music (demo)",
        "music",
        "music-vip-month",
        "悦听音乐月卡",
        "Yueting Music VIP, 1 month",
        "card_code",
        600,
        1500,
        300,
        20,
    ),
    (
        "fandian-demo",
        "饭点外卖（演示） Fandian Food Delivery (demo)",
        "food_drink",
        "food-delivery-15",
        "外卖满40减15券",
        "Food delivery: 15 off 40",
        "coupon",
        500,
        1500,
        0,
        0,
    ),
    (
        "xingbei-demo",
        "行呗出行（演示） Xingbei Travel (demo)",
        "travel",
        "ride-voucher-20",
        "打车20元券",
        "Ride voucher, 20 yuan",
        "card_code",
        1200,
        2000,
        40,
        50,  # a small pool below its threshold: the console home shows it as a stock alert
    ),
]
FLASH_SALE = "demo-flash-99-30"
WEEKEND = "demo-coffee-weekend"
LOTTERY = "demo-lucky-draw"
SAMPLE_MEMBERS = 12  # subscribers besides the link's one who get a bundle, claims and a draw


@dataclass(frozen=True)
class Seeded:
    """What the demo put in the product, and the subscriber its one-click link is for."""

    subscriber_id: int | None
    partners: int
    benefits: int
    tiers: int
    grants: int
    coupons: int


def _seed_catalog(session: Any, ctx: Context) -> None:
    from perkflow.catalog.rules import BenefitStatus
    from perkflow.catalog.schemas import BenefitCreate, PartnerCreate
    from perkflow.errors import NotFound
    from perkflow.membership import service as membership

    if membership.program_document(session) is None:
        # The same path as `perkflow member load-default`: its partners, benefits and tiers.
        membership.load_default_program(session, actor=SYSTEM, vault=ctx.vault)
    partners = {p.code for p in catalog.list_partners(session, actor=SYSTEM)}
    for code, name, category, bcode, zh, en, kind, cost, sale, codes, low in EXTRA_CATALOG:
        if code not in partners:
            catalog.create_partner(
                session,
                actor=SYSTEM,
                vault=ctx.vault,
                spec=PartnerCreate(code=code, name=name, contact_email=f"ops@{code}.example"),
            )
        try:
            benefit = catalog.find_benefit(session, actor=SYSTEM, code=bcode)
        except NotFound:
            benefit = catalog.create_benefit(
                session,
                actor=SYSTEM,
                spec=BenefitCreate.model_validate(
                    {
                        "code": bcode,
                        "partner_code": code,
                        "name_zh": zh,
                        "name_en": en,
                        "category": category,
                        "fulfilment_kind": kind,
                        "face_value_fen": sale,
                        "cost_price_fen": cost,
                        "sale_price_fen": sale,
                        "validity_kind": "days",
                        "valid_days": 31,
                        "low_stock_threshold": low,
                    }
                ),
            )
        if codes and not catalog.list_lots(session, actor=SYSTEM, benefit_id=benefit.id):
            # A partner's file of card codes (卡密), as an operator would upload it.
            rows = ["code,pin,expiry"] + [
                f"{bcode[:4].upper()}{benefit.id:03d}{n:06d},{(n * 7919) % 10**6:06d},"
                for n in range(1, codes + 1)
            ]
            catalog.import_card_codes(
                session,
                actor=SYSTEM,
                vault=ctx.vault,
                benefit_id=benefit.id,
                file_name=f"{code}-codes.csv",
                unit_cost_fen=cost,
                rows=rows,
                zone=ctx.settings.timezone,
            )
        if benefit.status != BenefitStatus.LISTED.value:
            catalog.set_benefit_status(
                session, actor=SYSTEM, benefit_id=benefit.id, status=BenefitStatus.LISTED
            )


def _seed_offers(session: Any) -> dict[str, int]:
    """A flash sale and a small weekend batch claimable now, and a running lottery."""
    from perkflow.coupons.rules import BatchStatus
    from perkflow.coupons.schemas import BatchSpec
    from perkflow.envelopes.rules import ProgramKind, ProgramStatus
    from perkflow.envelopes.schemas import ProgramSpec, TierSpec

    now = clock.now()
    batches = {b.code: b for b in coupons.list_batches(session, actor=SYSTEM)}
    specs = [
        BatchSpec(
            code=FLASH_SALE,
            name_zh="限时秒杀：满99减30",
            name_en="Flash sale: 30 off 99",
            amount_fen=3000,
            min_spend_fen=9900,
            flash_sale=True,
            stock_total=2000,
            claim_starts_at=now - timedelta(hours=1),
            claim_ends_at=now + timedelta(days=30),
            valid_days=14,
        ),
        BatchSpec(
            code=WEEKEND,
            name_zh="周末咖啡券：满30减10",
            name_en="Weekend coffee: 10 off 30",
            amount_fen=1000,
            min_spend_fen=3000,
            stock_total=SAMPLE_MEMBERS + 2,  # nearly claimed out: a stock alert on the home page
            valid_days=7,
        ),
    ]
    ids = {}
    for spec in specs:
        batch = batches.get(spec.code)
        if batch is None:
            batch = coupons.create_batch(session, actor=SYSTEM, spec=spec)
        if batch.status == BatchStatus.DRAFT.value:
            coupons.set_batch_status(
                session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
            )
        ids[spec.code] = batch.id
    programs = {p.code: p for p in envelopes.list_programs(session, actor=SYSTEM)}
    program = programs.get(LOTTERY)
    if program is None:
        program = envelopes.create_program(
            session,
            actor=SYSTEM,
            spec=ProgramSpec(
                code=LOTTERY,
                name_zh="话费红包天天抽",
                name_en="Daily red-envelope draw",
                kind=ProgramKind.LOTTERY,
                budget_fen=500_000,
                limit_per_subscriber=3,
                tiers=[
                    TierSpec(
                        tier=1,
                        name_zh="一等奖",
                        name_en="First prize",
                        prize_fen=8800,
                        weight_ppm=10_000,
                    ),
                    TierSpec(
                        tier=2,
                        name_zh="二等奖",
                        name_en="Second prize",
                        prize_fen=888,
                        weight_ppm=200_000,
                    ),
                    TierSpec(
                        tier=3,
                        name_zh="三等奖",
                        name_en="Third prize",
                        prize_fen=188,
                        weight_ppm=600_000,
                    ),
                ],
                seed="perkflow-demo-lottery-7",
            ),
        )
    if program.status == ProgramStatus.DRAFT.value:
        envelopes.set_program_status(
            session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
        )
    ids[LOTTERY] = program.id
    return ids


def _members(session: Any, ctx: Context, *, campaign_id: int | None, want: int) -> list[int]:
    """Active subscribers on a 99-yuan plan or more, in-app targets of the demo campaign first."""
    from perkflow.subscribers import service as subscribers
    from perkflow.subscribers.rules import Status

    candidates: list[int] = []
    if campaign_id is not None:
        rows = campaigns.history_contacts(session, actor=SYSTEM, after_id=0, limit=20_000)
        candidates = sorted(
            {
                r.subscriber_id
                for r in rows
                if r.campaign_id == campaign_id
                and r.channel == "in_app"
                and r.cell == "target"
                and r.status in TREATED
            }
        )
    if len(candidates) < want:
        listed, _ = subscribers.list_subscribers(
            session, actor=SYSTEM, vault=ctx.vault, status=Status.ACTIVE, limit=500
        )
        candidates += [s.id for s in listed if s.id not in set(candidates)]
    facts = subscribers.plan_facts(session, subscriber_ids=candidates[:2000])
    fit = [
        s
        for s in candidates
        if s in facts and facts[s].status == Status.ACTIVE and facts[s].plan_fee_fen >= 9900
    ]
    return fit[:want]


def _serve_member(
    session: Any, ctx: Context, *, sid: int, first: bool, offers: dict[str, int], month: str
) -> None:
    """A member's tier and bundle, a card-code benefit, coupons, a lottery draw; each once."""
    from perkflow.errors import PerkflowError
    from perkflow.grants import service as grants
    from perkflow.membership import service as membership

    zone = ctx.settings.timezone
    membership.evaluate_member(
        session,
        actor=SYSTEM,
        subscriber_id=sid,
        reason="demo operator",
        source="demo",
        zone=zone,
        mart=ctx.mart,
    )
    card = membership.member_card(session, subscriber_id=sid, zone=zone)
    if card.tier is not None:
        # Bundle keys are per member, item, cycle and unit: a second run replays them.
        membership.issue_bundles_for(
            session, actor=SYSTEM, members=[(sid, card.tier.id)], month=month, zone=zone
        )
    extra = ["music-vip-month"] + (["ride-voucher-20"] if first else [])
    for code in extra:
        benefit = catalog.find_benefit(session, actor=SYSTEM, code=code)
        # The pool may have run dry on an earlier run: the demo goes on without it.
        with suppress(PerkflowError):
            grants.issue_grant(
                session,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit.id,
                source="demo",
                idempotency_key=f"demo-seed:{code}:{sid}",
                zone=zone,
            )
    as_member = coupons.subscriber_actor(sid, ip="demo")
    for code in [FLASH_SALE, WEEKEND] if first else [WEEKEND]:
        # Sold out or past its window on a later run: nothing to add.
        with suppress(PerkflowError):
            coupons.claim_coupon(
                session,
                actor=as_member,
                vault=ctx.vault,
                batch_id=offers[code],
                subscriber_id=sid,
                idempotency_key=f"demo-seed:{code}",
                channel="h5",
                device_id=None,
                zone=zone,
            )
    if not envelopes.draws_of(session, subscriber_id=sid):
        # The budget may be spent: the programme stays on show.
        with suppress(PerkflowError):
            envelopes.draw_lottery(
                session,
                actor=as_member,
                vault=ctx.vault,
                program_id=offers[LOTTERY],
                subscriber_id=sid,
            )


def _redeem_some(session: Any, ctx: Context, *, members: list[int], clerk: Actor | None) -> None:
    """The Guangzhou clerk redeems a few weekend coupons at the counter (核销)."""
    from perkflow.coupons.rules import CouponStatus

    if clerk is None:
        return
    for sid in members[1:4]:
        for item in coupons.wallet(session, actor=SYSTEM, vault=ctx.vault, subscriber_id=sid):
            if item.batch.code == WEEKEND and item.coupon.status == CouponStatus.CLAIMED.value:
                coupons.redeem_coupon(
                    session, actor=clerk, vault=ctx.vault, code=item.code, order_fen=3600
                )


def seed_operator(ctx: Context, *, campaign_id: int | None) -> Seeded:
    """Give the demo operator a product: partners, benefits, tiers, offers, served members."""
    from perkflow.grants import service as grants
    from perkflow.membership import service as membership

    zone = ctx.settings.timezone
    with ctx.uow() as session:
        _seed_catalog(session, ctx)
        offers = _seed_offers(session)
        session.commit()
    month = clock.now().astimezone(ZoneInfo(zone)).strftime("%Y-%m")
    try:
        clerk: Actor | None = _actor(ctx, "gz.clerk")
    except RuntimeError:
        clerk = None
    with ctx.uow() as session:
        members = _members(session, ctx, campaign_id=campaign_id, want=SAMPLE_MEMBERS + 1)
        for n, sid in enumerate(members):
            _serve_member(session, ctx, sid=sid, first=n == 0, offers=offers, month=month)
        _redeem_some(session, ctx, members=members, clerk=clerk)
        session.commit()
        linked = members[0] if members else None
        return Seeded(
            subscriber_id=linked,
            partners=len(catalog.list_partners(session, actor=SYSTEM)),
            benefits=len(catalog.list_benefits(session, actor=SYSTEM, limit=500)[0]),
            tiers=len(membership.tier_views(session)),
            grants=len(grants.my_grants(session, subscriber_id=linked)) if linked else 0,
            coupons=(
                len(coupons.wallet(session, actor=SYSTEM, vault=ctx.vault, subscriber_id=linked))
                if linked
                else 0
            ),
        )


def print_h5_link(ctx: Context, *, subscriber_id: int | None) -> None:
    """A fresh one-click link into a subscriber's H5 pages (each link signs in once)."""
    from perkflow.subscribers import service as subscribers
    from perkflow.subscribers.rules import Status

    with ctx.uow() as session:
        if subscriber_id is None:
            rows, _ = subscribers.list_subscribers(
                session, actor=SYSTEM, vault=ctx.vault, status=Status.ACTIVE, limit=1
            )
            if not rows:
                return
            subscriber_id = rows[0].id
        phone = subscribers.get_subscriber(
            session, actor=SYSTEM, vault=ctx.vault, subscriber_id=subscriber_id, reveal=True
        ).phone
        _, signed = subscribers.issue_login_token(
            session,
            actor=SYSTEM,
            vault=ctx.vault,
            phone=phone,
            max_age_s=ctx.settings.h5_link_max_age_s,
        )
        session.commit()
    base = f"http://{ctx.settings.host}:{ctx.settings.port}"
    minutes = ctx.settings.h5_link_max_age_s // 60
    console.print(
        f"subscriber H5 (valid {minutes} min, one use): {base}/h5/enter?t={signed}", soft_wrap=True
    )


def print_seeded(seeded: Seeded) -> None:
    """One line on what the product holds, and what the link's subscriber has."""
    console.print(
        f"product: {seeded.partners} partners, {seeded.benefits} benefits, {seeded.tiers} tiers, "
        f"a flash sale, a weekend coupon and a red-envelope lottery running"
        + (
            f"; subscriber {seeded.subscriber_id} has {seeded.grants} benefits "
            f"and {seeded.coupons} coupons"
            if seeded.subscriber_id
            else ""
        )
    )
