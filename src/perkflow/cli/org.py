"""`perkflow staff` and `perkflow apikey`: console users and API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from perkflow.catalog import service as catalog
from perkflow.cli.context import console, get_context, handles_errors
from perkflow.org import service as org
from perkflow.org.rules import SCOPES, SYSTEM, Role

staff_app = typer.Typer(help="Console users.", no_args_is_help=True)
key_app = typer.Typer(help="API keys for partners and channels.", no_args_is_help=True)


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
