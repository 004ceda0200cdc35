"""`perkflow coupons`: create batches, generate or import their codes, list them."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from perkflow.cli.context import console, err_console, get_context, handles_errors
from perkflow.coupons import reach, tasks
from perkflow.coupons import service as coupons
from perkflow.coupons.rules import BatchStatus, CodeSource, ValueKind
from perkflow.coupons.schemas import BatchSpec
from perkflow.errors import ValidationFailed
from perkflow.kit.money import format_fen
from perkflow.org.rules import SYSTEM

coupons_app = typer.Typer(help="Coupon batches and their codes.", no_args_is_help=True)
IMPORT_CHUNK = 10_000


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@coupons_app.command("create")
@handles_errors
def create(
    code: Annotated[str, typer.Argument(help="slug, e.g. d11-gd-20")],
    name_zh: Annotated[str, typer.Option(help="name in Chinese")],
    name_en: Annotated[str, typer.Option(help="name in English")],
    stock: Annotated[int, typer.Option(help="total stock")],
    amount_fen: Annotated[int, typer.Option(help="fixed amount off, in fen")] = 0,
    percent_off: Annotated[int | None, typer.Option(help="percentage off instead")] = None,
    cap_fen: Annotated[int | None, typer.Option(help="cap of a percentage, in fen")] = None,
    min_spend_fen: Annotated[int, typer.Option(help="minimum order, in fen")] = 0,
    valid_days: Annotated[int, typer.Option(help="days from claim")] = 30,
    starts_at: Annotated[str, typer.Option(help="claims open (ISO time with offset)")] = "",
    flash_sale: Annotated[bool, typer.Option("--flash-sale/--no-flash-sale")] = False,
    shards: Annotated[int | None, typer.Option(help="stock shards (default 16 for flash)")] = None,
    limit_total: Annotated[int, typer.Option(help="per subscriber in total")] = 1,
    limit_per_day: Annotated[int | None, typer.Option(help="per subscriber per day")] = None,
    code_source: Annotated[CodeSource, typer.Option(help="auto, pattern or import")] = (
        CodeSource.AUTO
    ),
    charset: Annotated[str, typer.Option(help="digits, alnum, upper or the characters")] = "alnum",
    prefix: Annotated[str, typer.Option(help="code prefix")] = "",
    length: Annotated[int, typer.Option(help="code length after the prefix")] = 10,
    region: Annotated[str, typer.Option(help="owner: CN or a province code")] = "CN",
    activate: Annotated[bool, typer.Option("--activate/--draft")] = False,
) -> None:
    """Create a coupon batch (a draft unless --activate)."""
    try:
        start = datetime.fromisoformat(starts_at) if starts_at else None
    except ValueError as exc:
        raise ValidationFailed(
            "an ISO time such as 2026-11-11T00:00+08:00", field="starts_at"
        ) from exc
    spec = BatchSpec(
        code=code,
        name_zh=name_zh,
        name_en=name_en,
        owner_region=region,
        value_kind=ValueKind.PERCENT if percent_off else ValueKind.AMOUNT,
        amount_fen=amount_fen,
        percent_off=percent_off,
        cap_fen=cap_fen,
        min_spend_fen=min_spend_fen,
        valid_days=valid_days,
        claim_starts_at=start,
        flash_sale=flash_sale,
        stock_total=stock,
        shard_count=shards,
        limit_total=limit_total,
        limit_per_day=limit_per_day,
        code_source=code_source,
        code_charset=charset,
        code_prefix=prefix,
        code_length=length,
    )
    ctx = get_context()
    with ctx.uow() as session:
        batch = coupons.create_batch(session, actor=SYSTEM, spec=spec)
        if activate:
            coupons.set_batch_status(
                session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
            )
        warnings = reach.batch_warnings(session, batch=batch)
        session.commit()
        console.print(f"batch {batch.id} [bold]{batch.code}[/bold]: {batch.status}")
        for w in warnings:
            err_console.print(
                f"[yellow]warning[/yellow] {escape(f'[{w.field}]')}: {escape(w.message)}",
                soft_wrap=True,
            )


@coupons_app.command("status")
@handles_errors
def status(batch_id: int, to: Annotated[BatchStatus, typer.Option(help="the new status")]) -> None:
    """Activate, pause, resume or end a batch."""
    ctx = get_context()
    with ctx.uow() as session:
        batch = coupons.set_batch_status(session, actor=SYSTEM, batch_id=batch_id, status=to)
        session.commit()
        console.print(f"batch {batch.id}: {batch.status}")


@coupons_app.command("prune-rate-limits")
@handles_errors
def prune_rate_limits(
    every: Annotated[
        float, typer.Option(help="keep running, pruning every N seconds (0: once and exit)")
    ] = 0.0,
) -> None:
    """Drop finished claim-rate windows (run from cron, or keep it running with --every)."""
    ctx = get_context()
    if every <= 0:
        console.print(f"dropped {tasks.prune_rate_limits(ctx.sessions):,} finished rate windows")
        return
    stop = threading.Event()
    try:
        tasks.run_rate_pruner(ctx.sessions, every_s=every, stop=stop)
    except KeyboardInterrupt:
        stop.set()


@coupons_app.command("housekeeping")
@handles_errors
def housekeeping(
    every: Annotated[
        float, typer.Option(help="keep running, a round every N seconds (0: one round and exit)")
    ] = 0.0,
) -> None:
    """Prune finished rate windows and expire unopened share envelopes (cron, or --every)."""
    ctx = get_context()

    def show(done: tasks.Housekeeping) -> None:
        console.print(
            f"dropped {done.rate_windows:,} rate windows; expired {done.envelopes:,} envelopes, "
            f"{format_fen(done.returned_fen)} back to budgets"
        )

    if every <= 0:
        show(tasks.housekeep(ctx.sessions))
        return
    stop = threading.Event()
    try:
        tasks.run_housekeeping(ctx.sessions, every_s=every, stop=stop, on_round=show)
    except KeyboardInterrupt:
        stop.set()


@coupons_app.command("add-stock")
@handles_errors
def add_stock(batch_id: int, quantity: Annotated[int, typer.Option(help="units to add")]) -> None:
    """Add stock to an active or paused batch (new shards after the existing slots)."""
    ctx = get_context()
    with ctx.uow() as session:
        view = coupons.add_stock(session, actor=SYSTEM, batch_id=batch_id, quantity=quantity)
        session.commit()
    console.print(f"batch {batch_id}: {view.remaining:,} of {view.total:,} left")


@coupons_app.command("generate-codes")
@handles_errors
def generate_codes(
    batch_id: int,
    chunk: Annotated[int, typer.Option(help="codes per committed chunk")] = tasks.CHUNK,
    count: Annotated[
        int | None, typer.Option(help="make this many more codes (for stock to add later)")
    ] = None,
) -> None:
    """Generate a pattern batch's missing codes with progress; re-run to resume a stopped job."""
    ctx = get_context()
    with ctx.uow() as session:
        live = [
            j
            for j in coupons.jobs_of(session, batch_id=batch_id)
            if j.status in ("queued", "running")
        ]
        if live and not coupons.job_is_stale(live[0]) and live[0].status == "running":
            console.print(f"job {live[0].id} is running elsewhere; watch it in the console")
            raise typer.Exit(code=1)
        job = (
            live[0]
            if live
            else coupons.start_code_job(session, actor=SYSTEM, batch_id=batch_id, count=count)
        )
        job_id, done, total = job.id, job.done, job.total
        session.commit()
    with _bar() as bar:
        task = bar.add_task(f"codes of batch {batch_id}", total=total, completed=done)
        outcome = tasks.run_code_job(
            ctx.sessions,
            vault=ctx.vault,
            job_id=job_id,
            chunk=chunk,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    console.print(f"job {job_id}: {outcome}")
    if outcome != "done":
        raise typer.Exit(code=1)


@coupons_app.command("import-codes")
@handles_errors
def import_codes(
    batch_id: int,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="one code per line")],
) -> None:
    """Import a partner's or printer's codes into an import batch, in committed chunks."""
    ctx = get_context()
    lines = file.read_text("utf-8-sig").splitlines()
    added = duplicates = 0
    invalid: list[tuple[int, str]] = []
    with _bar() as bar:
        task = bar.add_task(f"import into batch {batch_id}", total=len(lines))
        for start in range(0, len(lines), IMPORT_CHUNK):
            part = lines[start : start + IMPORT_CHUNK]
            with ctx.uow() as session:
                report = coupons.import_codes(
                    session, actor=SYSTEM, vault=ctx.vault, batch_id=batch_id, codes=part
                )
                session.commit()
            added += report.added
            duplicates += report.duplicates
            invalid += [(start + n, why) for n, why in report.invalid]
            bar.update(task, advance=len(part))
    console.print(f"added {added:,}, duplicates skipped {duplicates:,}, bad lines {len(invalid):,}")
    for line_no, why in invalid[:20]:
        console.print(f"  line {line_no}: {why}")


@coupons_app.command("list")
def list_batches() -> None:
    """List coupon batches with their stock."""
    ctx = get_context()
    table = Table("id", "code", "value", "status", "codes", "remaining / stock")
    with ctx.uow() as session:
        batches = coupons.list_batches(session, actor=SYSTEM)
        levels = coupons.stock_levels(session, batch_ids=[b.id for b in batches])
        for b in batches:
            value = (
                format_fen(b.amount_fen)
                if b.value_kind == ValueKind.AMOUNT
                else f"{b.percent_off}%"
            )
            remaining, total = levels.get(b.id, (0, 0))
            table.add_row(
                str(b.id),
                b.code,
                value,
                b.status,
                b.code_source if b.code_source == CodeSource.AUTO else f"{b.pool_size:,}",
                f"{remaining:,} / {total:,}",
            )
    console.print(table)
