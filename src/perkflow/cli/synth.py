"""`perkflow synth`: generate a synthetic operator into the ledger, the mart and the truth file."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from perkflow.cli.context import console, get_context, handles_errors
from perkflow.synth.service import generate_operator


@handles_errors
def synth(
    subscribers: Annotated[
        int, typer.Option("--subscribers", "-n", help="How many subscribers to generate.")
    ] = 100_000,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same operator.")
    ] = 42,
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete the subscribers the ledger already holds.")
    ] = False,
) -> None:
    """Generate a synthetic operator: subscriber master, profiles, usage and hidden truth."""
    ctx = get_context()
    ctx.engine  # noqa: B018  (an unmigrated ledger is refused before the progress bar starts)
    columns = (
        TextColumn("[bold]subscribers"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("synth", total=subscribers)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with ctx.uow() as session:
            report = generate_operator(
                session,
                mart=ctx.mart,
                truth_dir=ctx.settings.truth_dir,
                vault=ctx.vault,
                n=subscribers,
                seed=seed,
                replace=replace,
                progress=on_progress,
            )
            session.commit()

    table = Table(title=f"synthetic operator (seed {report.seed})", show_header=False)
    table.add_row("subscribers", f"{report.subscribers:,}")
    if report.replaced:
        table.add_row("replaced", f"{report.replaced:,}")
    table.add_row("provinces", str(report.provinces))
    table.add_row("mart files", "\n".join(str(p) for p in report.mart_files))
    table.add_row("truth file", str(report.truth_file))
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
