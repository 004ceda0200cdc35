"""The demo's closed loop: a campaign with a 10% control group, sent, answered, evaluated.

The synthetic operator carries a hidden truth (each subscriber's base propensity and the effect a
contact has on them), so the demo can say how close the evaluation came to the planted effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.campaigns import tasks
from perkflow.channels import service as channels
from perkflow.channels.smtp_sink import SmtpSink
from perkflow.cli.context import Context, console
from perkflow.insights import service as insights
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
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


def _spec(segment_id: int) -> dict[str, Any]:
    return {
        "name": DEMO_NAME,
        "segment_id": segment_id,
        "goal": {"kind": "order", "window_days": WINDOW_DAYS},
        "offer": {
            "kind": "none",
            "category": CATEGORY,
            "name": "视频会员月卡 Video VIP month",
            "cost_fen": 500,
        },
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
    sent_at = _send_time(zone)
    # The demo replays the past: while it sends, the clock runs from the send time.
    offset = clock.now() - sent_at
    clock.set_clock(lambda: datetime.now(UTC) - offset)
    try:
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
                session, actor=author, mart=ctx.mart, raw=_spec(segment.id)
            )
            campaigns.submit_campaign(session, actor=author, campaign_id=campaign.id)
            campaigns.approve_campaign(session, actor=approver, campaign_id=campaign.id)
            campaigns.start_campaign(
                session,
                actor=author,
                mart=ctx.mart,
                vault=ctx.vault,
                campaign_id=campaign.id,
                zone=zone,
            )
            campaign_id = campaign.id
            session.commit()
        with SmtpSink() as sink:
            settings = ctx.settings.model_copy(
                update={"smtp_host": sink.host, "smtp_port": sink.port}
            )
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
            # (id, campaign, subscriber, channel, cell, contacted_at, target list)
            for row in rows:
                if row[1] == campaign_id:
                    ids.append(row[2])
                    treated.append(row[4] == "target")
            after = rows[-1][0]
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


def print_result(result: DemoResult, *, base_url: str) -> None:
    """The evaluation as a table, and how it compares with the planted effect."""
    r = result.report
    table = Table(title=f"Campaign {result.campaign_id}: {DEMO_NAME}")
    for col in ("group", "contacts", "responses", "rate", "uplift", "95% CI", "p-value"):
        table.add_column(col, justify="right" if col != "group" else "left")
    for cell in ("target", "control"):
        c = r["cells"][cell]
        table.add_row(cell, f"{c['contacts']:,}", f"{c['responses']:,}", _rate(c["rate"]))
    u = r["uplift"]
    ci = u["ci95"]
    table.add_row(
        "all target vs control",
        "",
        "",
        "",
        _pct(u["absolute"]),
        f"{_pct(ci[0])} … {_pct(ci[1])}" if ci else "—",
        f"{u['p_value']:.2g}" if u["p_value"] is not None else "—",
    )
    for v in r["variants"]:
        vu = v["uplift"]
        vci = vu["ci95"]
        table.add_row(
            f"variant {v['variant']}",
            f"{v['contacts']:,}",
            f"{v['responses']:,}",
            _rate(v["rate"]),
            _pct(vu["absolute"]),
            f"{_pct(vci[0])} … {_pct(vci[1])}" if vci else "—",
            f"{vu['p_value']:.2g}" if vu["p_value"] is not None else "—",
        )
    console.print(table)
    console.print(f"verdict: {r.get('verdict', '')}")
    if result.true_uplift is not None:
        inside = "inside" if result.covered else "OUTSIDE"
        console.print(f"planted true effect {_pct(result.true_uplift)} — {inside} the 95% interval")
    console.print(f"evaluation: {base_url}/console/campaigns/{result.campaign_id}/evaluation")
