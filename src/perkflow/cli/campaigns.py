"""`perkflow campaign`: define, approve and run campaigns; the dispatch worker."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.campaigns import readiness, tasks
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.channels import service as channels
from perkflow.cli.context import acting_as, console, err_console, get_context, handles_errors
from perkflow.errors import ValidationFailed
from perkflow.kit.logs import configure_logging
from perkflow.org.rules import SYSTEM, Actor

campaign_app = typer.Typer(
    help="Campaigns: define, approve, run in waves, evaluate.", no_args_is_help=True
)

AsOption = Annotated[
    str | None, typer.Option("--as", help="act as this console user (their scope and rights)")
]


def _actor(session: Session, username: str | None) -> Actor:
    """The system, or a console user's identity (their role and region)."""
    return acting_as(session, username)  # a person's identity needs their password


def _load(path: Path) -> Any:
    if not path.exists():
        raise ValidationFailed(f"no such file: {path}", field="file")
    return audience.load_definition_text(path.read_text("utf-8"), filename=path.name)


def _line(c: Campaign) -> str:
    return f"campaign {c.id} {c.name!r}: {c.status} (v{c.version})"


@campaign_app.command("create")
@handles_errors
def create(
    file: Annotated[Path, typer.Argument(help="a campaign spec in YAML or JSON")],
    as_user: AsOption = None,
) -> None:
    """Save a campaign spec as a draft."""
    ctx = get_context()
    raw = _load(file)
    with ctx.uow() as session:
        c = campaigns.create_campaign(
            session, actor=_actor(session, as_user), mart=ctx.mart, raw=raw
        )
        session.commit()
        console.print(_line(c))
        for gap in readiness.channel_gaps(campaigns.spec_of(c), ctx.settings):
            err_console.print(
                f"[yellow]warning[/yellow] {escape(f'[{gap.field}]')}: {escape(gap.message)}",
                soft_wrap=True,
            )


@campaign_app.command("list")
@handles_errors
def list_(
    status: Annotated[str | None, typer.Option(help="only campaigns in this status")] = None,
    as_user: AsOption = None,
) -> None:
    """The campaigns, newest first."""
    ctx = get_context()
    table = Table("id", "name", "kind", "status", "province", "author", "approved by")
    with ctx.uow() as session:
        rows, total = campaigns.list_campaigns(
            session, actor=_actor(session, as_user), status=status, limit=200
        )
        for c in rows:
            table.add_row(
                str(c.id),
                c.name,
                c.kind,
                c.status,
                c.province_code or "national",
                c.created_by,
                c.approved_by or "",
            )
    console.print(table)
    console.print(f"{total} campaign(s)")


@campaign_app.command("show")
@handles_errors
def show(campaign_id: int, as_user: AsOption = None) -> None:
    """One campaign's definition and state, as JSON."""
    ctx = get_context()
    with ctx.uow() as session:
        c = campaigns.get_campaign(session, actor=_actor(session, as_user), campaign_id=campaign_id)
        body = {
            "id": c.id,
            "name": c.name,
            "kind": c.kind,
            "status": c.status,
            "version": c.version,
            "segment_id": c.segment_id,
            "goal": c.goal,
            "offer": c.offer,
            "variants": c.variants,
            "schedule": c.schedule,
            "control_share_bp": c.control_share_bp,
            "test_share_bp": c.test_share_bp,
            "throttle": c.throttle,
            "trigger": c.trigger,
            "budget_fen": c.budget_fen,
            "stock_cap": c.stock_cap,
            "target_list_id": c.target_list_id,
            "created_by": c.created_by,
            "submitted_by": c.submitted_by,
            "approved_by": c.approved_by,
        }
    console.print_json(json.dumps(body, default=str, ensure_ascii=False))


def _step(name: str, campaign_id: int, as_user: str | None, **kwargs: Any) -> None:
    ctx = get_context()
    with ctx.uow() as session:
        actor = _actor(session, as_user)
        fn = getattr(campaigns, name)
        result = fn(session, actor=actor, campaign_id=campaign_id, **kwargs)
        session.commit()
        if isinstance(result, Campaign):
            console.print(_line(result))
        else:
            console.print(f"campaign {campaign_id}: {result.kind} wave {result.id} {result.status}")


@campaign_app.command("submit")
@handles_errors
def submit(campaign_id: int, as_user: AsOption = None) -> None:
    """Send a draft for approval."""
    _step("submit_campaign", campaign_id, as_user)


@campaign_app.command("approve")
@handles_errors
def approve(
    campaign_id: int,
    as_user: Annotated[str, typer.Option("--as", help="the approving console user")],
    note: Annotated[str, typer.Option(help="why")] = "",
) -> None:
    """Approve a submitted campaign (a second person: not its author or submitter)."""
    _step("approve_campaign", campaign_id, as_user, note=note)


@campaign_app.command("reject")
@handles_errors
def reject(
    campaign_id: int,
    note: Annotated[str, typer.Option(help="why it goes back to draft")],
    as_user: Annotated[str, typer.Option("--as", help="the reviewing console user")],
) -> None:
    """Send a submitted campaign back to draft."""
    _step("reject_campaign", campaign_id, as_user, note=note)


@campaign_app.command("start")
@handles_errors
def start(campaign_id: int, as_user: AsOption = None) -> None:
    """Build the target list and open the test wave (or the rollout, or the trigger wave)."""
    ctx = get_context()
    with ctx.uow() as session:
        c = campaigns.start_campaign(
            session,
            actor=_actor(session, as_user),
            mart=ctx.mart,
            vault=ctx.vault,
            campaign_id=campaign_id,
            zone=ctx.settings.timezone,
            settings=ctx.settings,
        )
        session.commit()
        console.print(_line(c))


@campaign_app.command("rollout")
@handles_errors
def rollout(
    campaign_id: int,
    note: Annotated[str, typer.Option(help="the reason for the decision")] = "",
    as_user: AsOption = None,
) -> None:
    """Send to the rest of the list, after the test wave (shows its figures first)."""
    ctx = get_context()
    with ctx.uow() as session:
        actor = _actor(session, as_user)
        for c in campaigns.contact_counts(session, actor=actor, campaign_id=campaign_id):
            console.print(
                f"  {c.cell:7} {c.variant or '-':6} {c.province_code or '-':4} "
                f"contacts {c.contacts:7} responders {c.responders:6}"
            )
    _step("roll_out", campaign_id, as_user, note=note)


@campaign_app.command("pause")
@handles_errors
def pause(campaign_id: int, as_user: AsOption = None) -> None:
    """Stop sending; queued contacts wait."""
    _step("pause_campaign", campaign_id, as_user)


@campaign_app.command("resume")
@handles_errors
def resume(campaign_id: int, as_user: AsOption = None) -> None:
    """Send again."""
    _step("resume_campaign", campaign_id, as_user)


@campaign_app.command("finish")
@handles_errors
def finish(campaign_id: int, as_user: AsOption = None) -> None:
    """End a campaign; what is still queued is dropped (reason `finished`)."""
    _step("finish_campaign", campaign_id, as_user)


@campaign_app.command("progress")
@handles_errors
def progress(
    campaign_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    as_user: AsOption = None,
) -> None:
    """Planned, sent per channel, suppressed by reason and failures of every wave."""
    ctx = get_context()
    with ctx.uow() as session:
        p = campaigns.run_progress(session, actor=_actor(session, as_user), campaign_id=campaign_id)
    if as_json:
        body = {
            "campaign_id": p.campaign_id,
            "status": p.status,
            "suppressed": p.suppressed,
            "waves": [
                {
                    "id": w.wave_id,
                    "kind": w.kind,
                    "status": w.status,
                    "planned": w.planned,
                    "by_status": w.by_status,
                    "sent_by_channel": w.sent_by_channel,
                    "failures": [f.__dict__ for f in w.failures],
                }
                for w in p.waves
            ],
        }
        console.print_json(json.dumps(body, default=str))
        return
    table = Table("wave", "kind", "status", "planned", "by status", "sent per channel")
    for w in p.waves:
        table.add_row(
            str(w.wave_id),
            w.kind,
            w.status,
            str(w.planned),
            ", ".join(f"{k} {v}" for k, v in sorted(w.by_status.items())),
            ", ".join(f"{k} {v}" for k, v in sorted(w.sent_by_channel.items())),
        )
    console.print(table)
    console.print(f"campaign {p.campaign_id}: {p.status}; suppressed: {p.suppressed or 'none'}")
    for w in p.waves:
        for f in w.failures[:5]:
            console.print(f"  failed: contact {f.contact_id} ({f.channel}): {f.error}")


@campaign_app.command("event")
@handles_errors
def event(
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="data_threshold, recharge, …")],
    subscriber_id: int,
    key: Annotated[str, typer.Option(help="idempotency key (default: type:subscriber:time)")] = "",
    attr: Annotated[
        list[str] | None, typer.Option("--attr", "-a", help="an attribute NAME=VALUE (JSON value)")
    ] = None,
) -> None:
    """Record a subscriber event; running trigger campaigns queue their contacts."""
    ctx = get_context()
    attributes: dict[str, Any] = {}
    for item in attr or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValidationFailed(f"--attr {item!r}: use NAME=VALUE", field="attr")
        try:
            attributes[name] = json.loads(value)
        except json.JSONDecodeError:
            attributes[name] = value
    now = datetime.now(UTC)
    with ctx.uow() as session:
        outcome = campaigns.record_event(
            session,
            actor=SYSTEM,
            vault=ctx.vault,
            type=type_,
            subscriber_id=subscriber_id,
            occurred_at=now,
            idempotency_key=key or f"cli:{type_}:{subscriber_id}:{now.isoformat()}",
            attributes=attributes,
            mart=ctx.mart,
            zone=ctx.settings.timezone,
        )
        session.commit()
    console.print(f"event {outcome.event_id}{' (replayed)' if outcome.replayed else ''}")
    for t in outcome.triggered:
        console.print(f"  campaign {t.campaign_id}: {t.status} {t.cell or ''} {t.reason or ''}")


@campaign_app.command("collect-responses")
@handles_errors
def collect_responses(
    since: Annotated[str, typer.Option(help='cursor JSON, e.g. {"claim": 120}')] = "{}",
) -> None:
    """Record claims, redemptions and grant uses from the ledger as responses (idempotent)."""
    ctx = get_context()
    with ctx.uow() as session:
        got = campaigns.collect_ledger_responses(session, actor=SYSTEM, since=json.loads(since))
        session.commit()
    console.print(f"seen {got.seen}, recorded {got.recorded}; cursor {json.dumps(got.cursor)}")


@campaign_app.command("work")
@handles_errors
def work(
    once: Annotated[bool, typer.Option("--once", help="one round, then exit")] = False,
    batch: Annotated[int, typer.Option(min=1, max=5000, help="contacts per batch")] = 200,
    idle_exit: Annotated[
        bool, typer.Option("--idle-exit/--follow", help="exit when nothing is left to send")
    ] = True,
    lease_s: Annotated[float, typer.Option(min=0.5, help="lease per contact, seconds")] = 30.0,
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 5,
    backoff_base_s: Annotated[float, typer.Option(min=0, help="first retry delay")] = 2.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """The campaign worker: plan waves, dispatch with throttling and quiet hours, finish waves."""
    ctx = get_context()
    configure_logging(json_lines=ctx.settings.log_json)
    opened = channels.open_channels(ctx.settings, vault=ctx.vault)
    dispatcher = tasks.Dispatcher(
        channels=opened,
        vault=ctx.vault,
        settings=ctx.settings,
        lease_s=lease_s,
        max_attempts=max_attempts,
        backoff_base_s=backoff_base_s,
    )
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    task = bar.add_task("dispatch", total=None)
    shown_at = [0.0]

    def on_round(report: tasks.WorkerReport) -> None:
        # Counting the open contacts reads every row of the waves: at most twice a second, and
        # never without a bar, so a 1M list does not pay it after every batch.
        if quiet or time.monotonic() - shown_at[0] < 0.5:
            return
        with ctx.uow() as session:
            done, total = tasks.open_totals(session)
        bar.update(task, completed=done, total=total or None, description="contacts settled")
        shown_at[0] = time.monotonic()

    try:
        with bar:
            report = tasks.run_worker(
                ctx.sessions,
                dispatcher,
                mart=ctx.mart,
                batch_size=batch,
                once=once,
                follow=not idle_exit,
                stop=stop,
                on_round=on_round,
            )
    finally:
        channels.close_channels(opened)
    d = report.dispatch
    console.print(
        f"rounds {report.rounds}: planned {report.planned}, sent {d.sent} "
        f"(delivered {d.delivered}), retried {d.retried}, failed {d.failed}, "
        f"suppressed {d.suppressed}, deferred {d.deferred}; waves done {report.waves_done}"
    )
