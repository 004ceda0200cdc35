"""`perkflow subscriber`: the subscriber master — status changes, a subscriber's view, H5 links."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from perkflow.cli.context import Context, console, get_context, handles_errors
from perkflow.errors import NotFound, ValidationFailed
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

sub_app = typer.Typer(help="The subscriber master.", no_args_is_help=True)


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
