"""`perkflow`: set up a home, generate an operator, manage staff and keys, serve the console."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
import uvicorn
from rich.table import Table
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.cli import insights as _insights  # noqa: F401  (registers report commands)
from perkflow.cli import migrate
from perkflow.cli.audience import (
    control_app,
    extract_app,
    optout_app,
    policy_app,
    segment_app,
    target_list_app,
)
from perkflow.cli.campaigns import campaign_app
from perkflow.cli.catalog import catalog_app
from perkflow.cli.channels import channels_app
from perkflow.cli.context import Context, PerkflowGroup, console, get_context, handles_errors
from perkflow.cli.coupons import coupons_app
from perkflow.cli.demo import (
    print_h5_link,
    print_result,
    print_seeded,
    run_demo_campaign,
    seed_operator,
)
from perkflow.cli.grants import binding_app, grants_app, partner_sim_command
from perkflow.cli.membership import member_app
from perkflow.cli.synth import synth
from perkflow.errors import NotFound, ValidationFailed
from perkflow.org import service as org
from perkflow.org.rules import SCOPES, SYSTEM, Role
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

app = typer.Typer(
    cls=PerkflowGroup,
    help="perkflow: benefit operations and precision marketing.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
staff_app = typer.Typer(help="Console users.", no_args_is_help=True)
key_app = typer.Typer(help="API keys for partners and channels.", no_args_is_help=True)
sub_app = typer.Typer(help="The subscriber master.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")
app.add_typer(key_app, name="apikey")
app.add_typer(sub_app, name="subscriber")
app.add_typer(catalog_app, name="catalog")
app.command("synth")(synth)
app.add_typer(segment_app, name="segment")
app.add_typer(target_list_app, name="target-list")
app.add_typer(optout_app, name="optout")
app.add_typer(extract_app, name="extract")
app.add_typer(control_app, name="control")
app.add_typer(policy_app, name="contact-policy")
app.add_typer(grants_app, name="grants")
app.add_typer(binding_app, name="binding")
app.add_typer(coupons_app, name="coupons")
app.add_typer(member_app, name="member")
app.add_typer(channels_app, name="channels")
app.add_typer(campaign_app, name="campaign")
app.command("partner-sim")(partner_sim_command)

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


@app.command("serve")
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


@app.command("demo")
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


@staff_app.command("create")
@handles_errors
def staff_create(
    username: str,
    role: Role,
    region: Annotated[str, typer.Option(help="region code: CN, a province (GD) or a store")],
    name: Annotated[str, typer.Option(help="display name")] = "",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a console user."""
    ctx = get_context()
    with ctx.uow() as session:
        org.create_staff(
            session,
            actor=SYSTEM,
            username=username,
            display_name=name or username,
            password=password,
            role=role,
            region_code=region,
        )
        session.commit()
    console.print(f"created {username} ({role.value}, {region})")


@staff_app.command("set-password")
@handles_errors
def staff_set_password(
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Replace a console user's password."""
    ctx = get_context()
    with ctx.uow() as session:
        org.set_password(session, actor=SYSTEM, username=username, password=password)
        session.commit()
    console.print(f"password of {username} replaced")


@staff_app.command("list")
def staff_list() -> None:
    """List console users."""
    ctx = get_context()
    table = Table("id", "username", "role", "region", "active")
    with ctx.uow() as session:
        for u in org.list_staff(session, actor=SYSTEM):
            table.add_row(str(u.id), u.username, u.role, u.region_code, str(u.is_active))
    console.print(table)


@key_app.command(
    "create",
    epilog="Scopes: " + "; ".join(f"{name} — {what}" for name, what in SCOPES.items()),
)
@handles_errors
def apikey_create(
    name: str,
    owner: Annotated[str, typer.Option(help="partner or channel")],
    scope: Annotated[list[str], typer.Option(help="repeatable, one of: " + ", ".join(SCOPES))],
    partner: Annotated[
        str | None, typer.Option(help="partner code: the key sees only that partner's data")
    ] = None,
) -> None:
    """Create an API key; the key is printed once."""
    ctx = get_context()
    with ctx.uow() as session:
        if partner is not None:
            catalog.find_partner(session, actor=SYSTEM, code=partner)
        key, plaintext = org.create_api_key(
            session, actor=SYSTEM, name=name, owner_kind=owner, scopes=scope, owner_ref=partner
        )
        session.commit()
    console.print(f"API key {key.id} ({', '.join(key.scopes)}): [bold]{plaintext}[/bold]")
    console.print("store it now: only its hash is kept.")


@key_app.command("revoke")
@handles_errors
def apikey_revoke(key_id: int) -> None:
    """Revoke an API key."""
    ctx = get_context()
    with ctx.uow() as session:
        org.revoke_api_key(session, actor=SYSTEM, key_id=key_id)
        session.commit()
    console.print(f"API key {key_id} revoked")


@key_app.command("list")
def apikey_list() -> None:
    """List API keys (never their secrets)."""
    ctx = get_context()
    table = Table("id", "name", "owner", "prefix", "scopes", "revoked")
    with ctx.uow() as session:
        for k in org.list_api_keys(session, actor=SYSTEM):
            table.add_row(
                str(k.id),
                k.name,
                k.owner_kind,
                k.key_prefix,
                ",".join(k.scopes),
                "yes" if k.revoked_at else "",
            )
    console.print(table)


def _resolve(session: Session, ctx: Context, who: str) -> int:
    """A subscriber id from an id or a phone number."""
    if who.isdigit() and len(who) < 11:
        return int(who)
    sub = subscribers.find_by_phone(session, vault=ctx.vault, phone=who)
    if sub is None:
        raise NotFound("no subscriber with this phone number or id", field="subscriber")
    return sub.id


@sub_app.command("set-status")
@handles_errors
def subscriber_set_status(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
    status: Annotated[Status, typer.Option("--to", help="active, suspended or churned")],
    reason: Annotated[str, typer.Option(help="why; kept with the event")],
) -> None:
    """Change a subscriber's status (kept as an event, audited)."""
    from perkflow.membership import service as membership  # imported here: ibis is heavy

    ctx = get_context()
    with ctx.uow() as session:
        sid = _resolve(session, ctx, subscriber)
        changed = membership.change_status(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            status=status,
            reason=reason,
            source="cli",
            zone=ctx.settings.timezone,
            mart=ctx.mart,
        )
        session.commit()
    # The mart's copy of the status follows once the change committed (the one sync path).
    with ctx.uow() as session:
        subscribers.export_statuses(session, mart=ctx.mart)
    event, bound = changed.event, changed.binding
    console.print(
        f"subscriber {sid}: {event.from_status} → {event.to_status}"
        + (
            f" (grants revoked {len(bound.revoked)}, paused {len(bound.paused)},"
            f" resumed {len(bound.resumed)})"
            if bound.changed
            else ""
        )
        + (" (left the membership tier)" if changed.run.left else "")
    )


@sub_app.command("show")
@handles_errors
def subscriber_show(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
) -> None:
    """Show a subscriber (phone masked) and their status history."""
    ctx = get_context()
    with ctx.uow() as session:
        sid = _resolve(session, ctx, subscriber)
        view = subscribers.get_subscriber(session, actor=SYSTEM, vault=ctx.vault, subscriber_id=sid)
        history = subscribers.status_history(session, actor=SYSTEM, subscriber_id=sid)
        console.print(
            f"{view.id}  {view.phone}  {view.province_code}/{view.city_code}  "
            f"plan ¥{view.plan_fee_fen // 100}  {view.status.value}  joined {view.joined_on}"
        )
        for e in history:
            console.print(
                f"  {e.at:%Y-%m-%d %H:%M} {e.from_status} → {e.to_status}  {e.reason} "
                f"({e.source}, {e.actor_name})"
            )


@sub_app.command("login-link")
@handles_errors
def subscriber_login_link(
    phone: Annotated[str, typer.Argument(help="the subscriber's phone number")],
    base_url: Annotated[str, typer.Option(help="where the console is served")] = "",
) -> None:
    """Print a signed, short-lived one-click link into the subscriber's H5 pages."""
    ctx = get_context()
    if not phone.strip():
        raise ValidationFailed("phone is required", field="phone")
    with ctx.uow() as session:
        _, signed = subscribers.issue_login_token(
            session,
            actor=SYSTEM,
            vault=ctx.vault,
            phone=phone,
            max_age_s=ctx.settings.h5_link_max_age_s,
        )
        session.commit()
    base = base_url or f"http://{ctx.settings.host}:{ctx.settings.port}"
    console.print(f"{base}/h5/enter?t={signed}", soft_wrap=True)
    console.print(f"valid for {ctx.settings.h5_link_max_age_s // 60} minutes")
