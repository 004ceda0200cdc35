"""`perkflow grants …`, `perkflow partner-sim`, `perkflow binding verify`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from perkflow.cli.context import console, err_console, get_context, handles_errors
from perkflow.cli.ports import require_free
from perkflow.errors import NotFound
from perkflow.grants import partner_sim
from perkflow.grants import service as grants
from perkflow.grants.tasks import OutboxWorker, WorkerConfig
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.kit.logs import configure_logging
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

grants_app = typer.Typer(
    help="Grants: the outbox worker, expiry, dead letters.", no_args_is_help=True
)
binding_app = typer.Typer(help="Binding (绑): grants follow network status.", no_args_is_help=True)


@grants_app.command("worker")
@handles_errors
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="deliver what is due now, then exit")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="parallel deliveries")] = 8,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="messages leased at a time")] = 32,
    lease_s: Annotated[float, typer.Option(min=1, help="lease per message, seconds")] = 60.0,
    backoff_base_s: Annotated[float, typer.Option(min=0, help="first retry delay")] = 1.0,
    callback_wait_s: Annotated[
        float, typer.Option(min=0, help="wait for a callback before asking the partner again")
    ] = 10.0,
    callback_base: Annotated[
        str, typer.Option(help="public URL partners call back (default: serve's host and port)")
    ] = "",
    max_seconds: Annotated[
        float, typer.Option(min=0, help="stop after this long (0: run until stopped)")
    ] = 0.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every delivery")] = False,
) -> None:
    """Deliver outbox messages to partners: lease, call, record; killed workers' leases expire."""
    ctx = get_context()
    configure_logging(
        json_lines=ctx.settings.log_json, level=logging.INFO if verbose else logging.WARNING
    )
    base = callback_base or f"http://{ctx.settings.host}:{ctx.settings.port}"
    config = WorkerConfig(
        callback_base=base,
        lease_s=lease_s,
        batch=batch,
        concurrency=concurrency,
        backoff_base_s=backoff_base_s,
        callback_wait_s=callback_wait_s,
    )
    runner = OutboxWorker(sessions=ctx.sessions, vault=ctx.vault, config=config)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(f"outbox worker {runner.name}: callbacks to {base}", soft_wrap=True)
    try:
        if once:
            runner.drain(max_seconds=max_seconds or 300.0)
        else:
            runner.run(stop=stop, max_seconds=max_seconds or None)
    finally:
        runner.close()
    with ctx.uow() as session:
        counts = grants.outbox_counts(session)
    done = ", ".join(f"{k} {v}" for k, v in sorted(runner.tally.items())) or "nothing due"
    console.print(f"delivered: {done}; outbox now: {counts}")


@grants_app.command("expire")
@handles_errors
def expire() -> None:
    """Expire fulfilled and paused grants past their validity (run daily, or more often)."""
    ctx = get_context()
    with ctx.uow() as session:
        n = grants.expire_grants(session, now=clock.now())
        session.commit()
    console.print(f"expired {n} grant(s)")


@grants_app.command("dead")
@handles_errors
def dead(limit: Annotated[int, typer.Option(min=1, max=1000)] = 50) -> None:
    """List the dead-letter messages (ran out of attempts)."""
    ctx = get_context()
    table = Table("message", "grant", "kind", "partner", "benefit", "attempts", "last error")
    with ctx.uow() as session:
        rows, total = grants.dead_letters(session, actor=SYSTEM, limit=limit)
        for d in rows:
            table.add_row(
                str(d.message.id),
                str(d.grant.id),
                d.message.kind,
                d.partner_code,
                d.benefit_code,
                str(d.message.attempts),
                d.message.last_error or "",
            )
    console.print(table)
    console.print(f"{total} dead letter(s)")


@grants_app.command("redrive")
@handles_errors
def redrive(message_id: int) -> None:
    """Send a dead message again (a failed grant goes back to pending)."""
    ctx = get_context()
    with ctx.uow() as session:
        new = grants.redrive(
            session, actor=SYSTEM, message_id=message_id, zone=ctx.settings.timezone
        )
        session.commit()
    console.print(f"message {message_id} re-driven as message {new.id}")


def partner_sim_command(
    port: Annotated[int, typer.Option(help="loopback port")] = 8900,
    secret: Annotated[
        str, typer.Option(envvar="PERKFLOW_PARTNER_SIM_SECRET", help="the partner's shared secret")
    ] = "sim-secret",  # noqa: S107  (a simulator's demo secret, overridable)
    latency_ms: Annotated[int, typer.Option(min=0, help="added to every reply")] = 20,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="share of 503 replies")] = 0.0,
    timeout_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of replies that stall past the timeout")
    ] = 0.0,
    timeout_sleep_s: Annotated[float, typer.Option(min=0, help="how long a stall lasts")] = 5.0,
    accept_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share answered 'accepted', confirmed by callback")
    ] = 0.0,
    duplicate_callbacks: Annotated[
        float, typer.Option(min=0, max=1, help="share of callbacks sent twice")
    ] = 0.0,
    callback_delay_ms: Annotated[int, typer.Option(min=0)] = 200,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """A simulated partner on 127.0.0.1: idempotent orders, failures, stalls, signed callbacks."""
    config = partner_sim.SimConfig(
        secret=secret,
        latency_ms=latency_ms,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        timeout_sleep_s=timeout_sleep_s,
        accept_rate=accept_rate,
        duplicate_callbacks=duplicate_callbacks,
        callback_delay_ms=callback_delay_ms,
        seed=seed,
    )
    require_free(port=port)
    console.print(
        f"partner simulator: connector_url http://127.0.0.1:{port}/orders  (stats: /stats)"
    )
    partner_sim.serve(config, port=port)


def _snapshot(table: Any) -> Iterator[tuple[int, str]]:
    """(subscriber_id, status) pairs from the mart, one Arrow batch at a time."""
    # Two columns only: a million subscribers is a few megabytes of Arrow.
    projected: pa.Table = table.select("subscriber_id", "status").to_pyarrow()
    for batch in projected.to_batches(max_chunksize=50_000):
        ids = batch.column(0).to_pylist()
        statuses = batch.column(1).cast(pa.string()).to_pylist()
        yield from zip(ids, statuses, strict=True)


@binding_app.command("verify")
@handles_errors
def binding_verify(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Reconcile ledger statuses with the latest mart snapshot and bind grants; report changes."""
    ctx = get_context()
    if not ctx.mart.has("subscriber_profile"):
        raise NotFound("the mart has no subscriber_profile; run `perkflow synth`", field="mart")
    from perkflow.membership import service as membership  # imported here: ibis is heavy

    change = partial(membership.change_status, zone=ctx.settings.timezone, mart=ctx.mart)
    with ctx.uow() as session:
        rows = grants.verify_binding(
            session,
            actor=SYSTEM,
            snapshot=_snapshot(ctx.mart.table("subscriber_profile")),
            change_status=change,
        )
        session.commit()
    # The mart's copy of the status follows once the changes committed (the one sync path).
    with ctx.uow() as session:
        subscribers.export_statuses(session, mart=ctx.mart)
    summary = {
        "subscribers_changed": sum(1 for r in rows if r.action == "status changed"),
        "subscribers_rebound": sum(1 for r in rows if r.action == "grants bound"),
        "skipped": sum(1 for r in rows if r.action == "skipped"),
        "grants_revoked": sum(r.revoked for r in rows),
        "grants_paused": sum(r.paused for r in rows),
        "grants_resumed": sum(r.resumed for r in rows),
    }
    if as_json:
        typer.echo(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]}))
        return
    table = Table(
        "subscriber",
        "ledger",
        "mart",
        "action",
        "revoked",
        "paused",
        "resumed",
        "note",
        title="binding verify",
    )
    for r in rows[:500]:
        table.add_row(
            str(r.subscriber_id),
            r.ledger_status,
            r.mart_status,
            r.action,
            str(r.revoked),
            str(r.paused),
            str(r.resumed),
            r.note,
        )
    console.print(table)
    if len(rows) > 500:
        err_console.print(f"… {len(rows) - 500} more rows; use --json for all of them")
    console.print(" · ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
