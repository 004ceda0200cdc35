"""`perkflow db`, `perkflow serve` and `perkflow demo`: a home's ledger, the server, the demo."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
import uvicorn
from rich.table import Table

from perkflow.cli import migrate
from perkflow.cli.context import console, get_context, handles_errors
from perkflow.cli.demo import (
    print_h5_link,
    print_result,
    print_seeded,
    run_demo_campaign,
    seed_operator,
)
from perkflow.cli.ports import require_free
from perkflow.cli.synth import synth
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers

db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)

DEMO_STAFF = [
    ("admin", "集团管理员 HQ Admin", Role.HQ_ADMIN, "CN"),
    # A second HQ person: campaigns are approved by someone other than their author.
    ("hq.approver", "集团审批 HQ Approver", Role.HQ_ADMIN, "CN"),
    ("gd.marketer", "广东营销 Guangdong Marketer", Role.PROVINCE_MARKETER, "GD"),
    ("zj.marketer", "浙江营销 Zhejiang Marketer", Role.PROVINCE_MARKETER, "ZJ"),
    ("analyst", "分析师 Analyst", Role.ANALYST, "CN"),
    ("gz.clerk", "广州店员 Guangzhou Clerk", Role.CLERK, "GD01S1"),
]


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Migrate the ledger to the latest schema and load the region tree."""
    ctx = get_context()
    ctx.vault  # noqa: B018  (creates the home's secret on first run)
    added = migrate.upgrade(ctx.ledger)
    console.print(
        f"ledger at head: {ctx.ledger.url.render_as_string(hide_password=True)}"
        + (f" (+{added} regions)" if added else "")
    )


def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the console, H5 pages and API."""
    from perkflow.main import create_app

    ctx = get_context()
    ctx.engine  # noqa: B018  (an unmigrated ledger is refused here, not on the first page)
    host = host or ctx.settings.host
    port = port or ctx.settings.port
    require_free(port=port, host=host)
    console.print(f"perkflow console: [bold]http://{host}:{port}/[/bold]  (API docs: /docs)")
    proxies = ctx.settings.trusted_proxies.strip()
    from perkflow.kit.logs import configure_logging

    configure_logging(json_lines=ctx.settings.log_json)
    uvicorn.run(
        create_app(ctx.settings),
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # configured above: plain lines, or JSON with PERKFLOW_LOG_JSON
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: only configured proxies.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@handles_errors
def demo(
    subscribers_n: Annotated[
        int, typer.Option("--subscribers", help="size on first run")
    ] = 200_000,
    seed: Annotated[int, typer.Option(help="random seed of the synthetic operator")] = 7,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve")] = True,
    campaign: Annotated[
        bool, typer.Option("--campaign/--no-campaign", help="run the demo campaign loop")
    ] = True,
) -> None:
    """Set up the home: migrate, generate an operator, demo staff, run the demo campaign, serve."""
    ctx = get_context()
    migrate.upgrade(ctx.ledger)
    with ctx.uow() as session:
        existing = subscribers.count_subscribers(session)
    if existing == 0:
        synth(subscribers=subscribers_n, seed=seed, replace=False)
    else:
        console.print(f"home {ctx.settings.home_dir} already has {existing:,} subscribers")
    created = []
    with ctx.uow() as session:
        taken = {u.username for u in org.list_staff(session, actor=SYSTEM)}
        for username, name, role, region in DEMO_STAFF:
            if username in taken:
                continue
            password = secrets.token_urlsafe(9) + "7a"
            org.create_staff(
                session,
                actor=SYSTEM,
                username=username,
                display_name=name,
                password=password,
                role=role,
                region_code=region,
            )
            created.append((username, role.value, region, password))
        session.commit()
    if created:
        table = Table(
            title="Demo console accounts (shown once; reset with `perkflow staff set-password`)"
        )
        for col in ("username", "role", "region", "password"):
            table.add_column(col)
        for row in created:
            table.add_row(*row)
        console.print(table)
    else:
        console.print("demo accounts exist; forgot a password? `perkflow staff set-password NAME`")
    campaign_id = None
    if campaign:
        base = f"http://{ctx.settings.host}:{ctx.settings.port}"
        result = run_demo_campaign(ctx, seed=seed)
        print_result(result, base_url=base)
        campaign_id = result.campaign_id
    seeded = seed_operator(ctx, campaign_id=campaign_id)
    print_seeded(seeded)
    print_h5_link(ctx, subscriber_id=seeded.subscriber_id)
    if serve_after:
        serve(host=None, port=None)
