"""`perkflow member`: the tier programme, batch evaluation, monthly bundles, points jobs."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.orm import Session

from perkflow.cli.context import Context, console, get_context, handles_errors
from perkflow.errors import NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.money import format_fen, parse_yuan
from perkflow.membership import service as membership
from perkflow.membership import tasks
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers

member_app = typer.Typer(help="Membership tiers, bundles and points.", no_args_is_help=True)


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _read(path: Path) -> Any:
    if not path.exists():
        raise ValidationFailed(f"no file {path}", field="file")
    text = path.read_text("utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationFailed(f"{path.name} is not valid YAML/JSON: {exc}", field="file") from exc


def _resolve(session: Session, ctx: Context, who: str) -> int:
    if who.isdigit() and len(who) < 11:
        return int(who)
    sub = subscribers.find_by_phone(session, vault=ctx.vault, phone=who)
    if sub is None:
        raise NotFound("no subscriber with this phone number or id", field="subscriber")
    return sub.id


def _print_tiers(views: list[membership.TierView]) -> None:
    table = Table(title="Tiers")
    for col in ("level", "code", "name", "points ×", "bundle items", "worth a year"):
        table.add_column(col)
    for v in views:
        table.add_row(
            str(v.tier.level),
            v.tier.code,
            f"{v.tier.name_zh} {v.tier.name_en}",
            f"{v.tier.points_multiplier_pct / 100:g}",
            str(len(v.items)),
            format_fen(v.annual_value_fen),
        )
    console.print(table)


@member_app.command("define")
@handles_errors
def define(file: Annotated[Path, typer.Argument(help="the programme as YAML or JSON")]) -> None:
    """Replace the tier programme with the one in a file (see docs/membership.md)."""
    ctx = get_context()
    raw = _read(file)
    with ctx.uow() as session:
        membership.define_program(session, actor=SYSTEM, raw=raw, mart=ctx.mart)
        session.commit()
        _print_tiers(membership.tier_views(session))


@member_app.command("load-default")
@handles_errors
def load_default() -> None:
    """Load the default silver / gold / diamond programme (creates its catalog when missing)."""
    ctx = get_context()
    with ctx.uow() as session:
        membership.load_default_program(session, actor=SYSTEM, vault=ctx.vault)
        session.commit()
        _print_tiers(membership.tier_views(session))


@member_app.command("show-program")
@handles_errors
def show_program() -> None:
    """Print the stored programme as YAML (edit it and `perkflow member define` it back)."""
    ctx = get_context()
    with ctx.uow() as session:
        doc = membership.program_document(session)
    if doc is None:
        raise NotFound("no programme yet; run `perkflow member load-default`", field="tiers")
    console.print(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), markup=False)


@member_app.command("preview")
@handles_errors
def preview(file: Annotated[Path, typer.Argument(help="a draft programme")]) -> None:
    """How many subscribers of the mart each tier of a draft programme would hold."""
    ctx = get_context()
    raw = _read(file)
    with ctx.uow() as session:
        _, rows, none = membership.preview_program(session, actor=SYSTEM, mart=ctx.mart, raw=raw)
    table = Table(title="Preview (mart)")
    table.add_column("tier")
    table.add_column("subscribers", justify="right")
    for r in rows:
        table.add_row(f"{r.level} {r.code}", f"{r.subscribers:,}")
    table.add_row("no tier", f"{none:,}")
    console.print(table)


@member_app.command("evaluate")
@handles_errors
def evaluate(
    chunk: Annotated[int, typer.Option(help="changes per committed chunk")] = 5_000,
) -> None:
    """Evaluate every tier over the mart, apply the changes, then the due downgrades."""
    ctx = get_context()
    with _bar() as bar:
        task = bar.add_task("tier changes", total=None)
        run, changed = tasks.run_evaluation(
            ctx.sessions,
            mart=ctx.mart,
            chunk=chunk,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    due = tasks.run_downgrades(ctx.sessions)
    console.print(
        f"evaluated {run.evaluated:,}; {changed:,} to change: joined {run.joined:,}, "
        f"up {run.upgraded:,}, down {run.downgraded:,}, left {run.left:,}, "
        f"downgrades scheduled {run.scheduled:,}, cancelled {run.cancelled:,}; "
        f"due downgrades applied {due:,}"
    )


@member_app.command("downgrades")
@handles_errors
def downgrades() -> None:
    """Apply downgrades whose grace period has ended (cron it daily)."""
    ctx = get_context()
    console.print(f"applied {tasks.run_downgrades(ctx.sessions):,} downgrades")


@contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """The first Ctrl-C asks the run to stop after the chunk in hand; a second stops it at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only
        return

    def ask(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # the chunk in hand is rolled back, never half written
        stop.set()

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


RESUME = "run the same command again to continue: nothing is granted twice"


@member_app.command("issue-bundles")
@handles_errors
def issue_bundles(
    month: Annotated[str, typer.Option(help="cycle month, e.g. 2026-11 (default: now)")] = "",
    chunk: Annotated[
        int, typer.Option(min=1, max=50_000, help="members per transaction (keep it short)")
    ] = 250,
    every: Annotated[
        int, typer.Option(min=1, help="without a terminal: a progress line every N chunks")
    ] = 40,
) -> None:
    """Grant every member's automatic bundle for a month; Ctrl-C stops it, re-running continues."""
    ctx = get_context()
    zone = ctx.settings.timezone
    month = month or clock.today(zone).strftime("%Y-%m")
    started = time.monotonic()
    lines = {"chunks": 0}

    def line(done: int, total: int) -> None:
        lines["chunks"] += 1
        if lines["chunks"] % every == 0 or done >= total:
            rate = done / max(time.monotonic() - started, 1e-9)
            console.print(f"bundles {month}: {done:,} / {total:,} members ({rate:,.0f}/s)")

    try:
        with _stop_on_ctrl_c() as stop:
            if console.is_terminal:
                with _bar() as bar:
                    task = bar.add_task(f"bundles {month}", total=None)
                    count = tasks.issue_bundles(
                        ctx.sessions,
                        month=month,
                        zone=zone,
                        chunk=chunk,
                        stop=stop,
                        progress=lambda d, t: bar.update(task, completed=d, total=t),
                    )
            else:
                count = tasks.issue_bundles(
                    ctx.sessions, month=month, zone=zone, chunk=chunk, stop=stop, progress=line
                )
    except KeyboardInterrupt:
        console.print(f"stopped at once; the chunk in hand was rolled back; {RESUME}")
        raise typer.Exit(code=130) from None
    console.print(
        f"{month}: members {count.members:,}, granted {count.issued:,}, "
        f"already granted {count.replayed:,}, refused {count.refused:,}, "
        f"skipped (not active) {count.skipped:,}"
    )
    for why, n in sorted(count.refusals.items()):
        console.print(f"  refused {n:,}: {why}")
    if count.stopped:
        console.print(f"stopped after whole chunks; {RESUME}")
        raise typer.Exit(code=130)


@member_app.command("earn")
@handles_errors
def earn(
    month: Annotated[str, typer.Option(help="billed month in the mart, e.g. 2026-10")],
) -> None:
    """Points for every member's bill of a month (mart `usage_monthly`); once per bill."""
    ctx = get_context()
    with _bar() as bar:
        task = bar.add_task(f"points {month}", total=None)
        bills, points = tasks.earn_for_month(
            ctx.sessions,
            mart=ctx.mart,
            month=month,
            zone=ctx.settings.timezone,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    console.print(f"{month}: {bills:,} bills, {points:,} points earned")


@member_app.command("expire")
@handles_errors
def expire() -> None:
    """Expire points lots that have reached their end (cron it daily)."""
    ctx = get_context()
    members, points = tasks.expire_all(ctx.sessions)
    console.print(f"expired {points:,} points of {members:,} members")


@member_app.command("prepay")
@handles_errors
def prepay(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
    amount: Annotated[str, typer.Argument(help="yuan, e.g. 1000 (negative: prepaid money used)")],
    key: Annotated[str, typer.Option(help="idempotency key (the payment's reference)")],
) -> None:
    """Record a prepayment and re-evaluate the subscriber's tier."""
    try:
        fen = parse_yuan(amount)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="amount") from exc
    ctx = get_context()
    with ctx.uow() as session:
        sid = _resolve(session, ctx, subscriber)
        balance, replayed = membership.record_prepayment(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            amount_fen=fen,
            idempotency_key=key,
            zone=ctx.settings.timezone,
        )
        session.commit()
        card = membership.member_card(session, subscriber_id=sid, zone=ctx.settings.timezone)
        tier = card.tier.code if card.tier else "none"
    console.print(
        f"subscriber {sid}: prepaid {format_fen(balance)}"
        + (" (already recorded)" if replayed else "")
        + f"; tier {tier}"
    )


@member_app.command("show")
@handles_errors
def show(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A member's tier, progress, bundle, points and history."""
    ctx = get_context()
    zone = ctx.settings.timezone
    with ctx.uow() as session:
        sid = _resolve(session, ctx, subscriber)
        card = membership.member_card(session, subscriber_id=sid, zone=zone)
        data = {
            "subscriber_id": sid,
            "status": card.status.value,
            "tier": card.tier.code if card.tier else None,
            "pending_tier": card.pending_tier.code if card.pending_tier else None,
            "downgrade_due_at": card.downgrade_due_at.isoformat()
            if card.downgrade_due_at
            else None,
            "next_tier": card.next_tier.code if card.next_tier else None,
            "progress": round(card.progress.ratio, 3) if card.progress else None,
            "annual_value_fen": card.annual_value_fen,
            "used_value_fen": card.used_value_fen,
            "points": card.points,
            "points_value_fen": card.points_value_fen,
            "expiring": [[d.isoformat(), n] for d, n in card.expiring],
            "history": [
                {"kind": h.kind, "reason": h.reason, "at": h.at.isoformat()} for h in card.history
            ],
        }
    if as_json:
        console.print_json(json.dumps(data, ensure_ascii=False))
        return
    table = Table(title=f"member {sid}")
    table.add_column("field")
    table.add_column("value")
    for k in ("status", "tier", "pending_tier", "downgrade_due_at", "next_tier", "progress"):
        table.add_row(k, str(data[k]))
    table.add_row("bundle a year", format_fen(card.annual_value_fen))
    table.add_row("used this year", format_fen(card.used_value_fen))
    table.add_row("points", f"{card.points:,} ({format_fen(card.points_value_fen)})")
    for d, n in card.expiring:
        table.add_row(f"expiring {d.isoformat()}", f"{n:,}")
    console.print(table)
