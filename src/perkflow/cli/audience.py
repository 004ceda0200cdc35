"""`perkflow segment | target-list | optout | extract | control | contact-policy`: the audience."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

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
from sqlalchemy.orm import Session

from perkflow.audience import engines, rules
from perkflow.audience import service as audience
from perkflow.cli.context import Context, acting_as, console, get_context, handles_errors
from perkflow.errors import NotFound, ValidationFailed
from perkflow.org.rules import SYSTEM, Actor
from perkflow.subscribers import service as subscribers

segment_app = typer.Typer(help="Segments: count, validate, save, list.", no_args_is_help=True)
target_list_app = typer.Typer(help="Target lists: build and show.", no_args_is_help=True)
optout_app = typer.Typer(help="Opt-outs (免打扰) and the complaint list.", no_args_is_help=True)
extract_app = typer.Typer(help="Self-service extraction templates.", no_args_is_help=True)
control_app = typer.Typer(help="The universal control group.", no_args_is_help=True)
policy_app = typer.Typer(help="The contact policy: caps and quiet hours.", no_args_is_help=True)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ValidationFailed(f"no such file: {path}", field="file")
    return audience.load_definition_text(path.read_text("utf-8"), filename=path.name)


def _when(text: str | None, field: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationFailed(
            "use an ISO time such as 2026-11-02T10:00+08:00", field=field
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _actor(session: Session, username: str | None) -> Actor:
    """The system, or a console user's identity (their role, region and row limits)."""
    return acting_as(session, username)  # a person's identity needs their password


AsOption = Annotated[
    str | None, typer.Option("--as", help="act as this console user (their scope and limits)")
]


@segment_app.command("count")
@handles_errors
def segment_count(
    file: Annotated[Path, typer.Argument(help="a definition in YAML or JSON")],
    engine: Annotated[str, typer.Option(help="duckdb (embedded) or spark (local mode)")] = "duckdb",
    as_of: Annotated[str | None, typer.Option(help="time history rules count back from")] = None,
    as_user: AsOption = None,
) -> None:
    """Print {"count": N, "by_province": {...}} for a definition file."""
    ctx = get_context()
    raw = _read(file)
    mart = engines.open_engine_mart(ctx.settings.mart_dir, engine)
    with ctx.uow() as session:
        out = audience.count_definition(
            session,
            mart=mart,
            actor=_actor(session, as_user),
            raw=raw,
            as_of=_when(as_of, "as_of"),
        )
    typer.echo(json.dumps(out, ensure_ascii=False))


@segment_app.command("validate")
@handles_errors
def segment_validate(file: Annotated[Path, typer.Argument(help="YAML or JSON")]) -> None:
    """Check a definition; errors name the path of the bad node."""
    ctx = get_context()
    raw = _read(file)
    with ctx.uow() as session:
        definition = audience.parse(session, mart=ctx.mart, actor=SYSTEM, raw=raw)
    typer.echo(json.dumps(rules.dump_definition(definition), ensure_ascii=False, indent=2))


@segment_app.command("save")
@handles_errors
def segment_save(
    file: Annotated[Path, typer.Argument(help="YAML or JSON; may carry name and description")],
    segment_id: Annotated[int | None, typer.Option("--id", help="save a new version of")] = None,
    name: Annotated[str | None, typer.Option(help="the segment's name")] = None,
    as_user: AsOption = None,
) -> None:
    """Create a segment, or save a new version of one (audited)."""
    ctx = get_context()
    raw = _read(file)
    if not isinstance(raw, dict):
        raise ValidationFailed("a definition is an object", field="file")
    title = name or raw.get("name")
    description = str(raw.get("description") or "")
    with ctx.uow() as session:
        actor = _actor(session, as_user)
        if segment_id is None:
            if not title:
                raise ValidationFailed("give --name or a name in the file", field="name")
            segment = audience.create_segment(
                session,
                mart=ctx.mart,
                actor=actor,
                name=str(title),
                description=description,
                raw=raw,
            )
            sid, version = segment.id, 1
        else:
            saved = audience.save_segment_version(
                session, mart=ctx.mart, actor=actor, segment_id=segment_id, raw=raw, name=title
            )
            sid, version = saved.segment_id, saved.version
        session.commit()
    console.print(f"segment {sid} at version {version}")


@segment_app.command("list")
@handles_errors
def segment_list(as_user: AsOption = None) -> None:
    """List segments."""
    ctx = get_context()
    table = Table("id", "name", "province", "version", "updated")
    with ctx.uow() as session:
        for s in audience.list_segments(session, actor=_actor(session, as_user)):
            table.add_row(
                str(s.id),
                s.name,
                s.province_code or "national",
                str(s.latest_version),
                f"{s.updated_at:%Y-%m-%d %H:%M}",
            )
    console.print(table)


@segment_app.command("show")
@handles_errors
def segment_show(
    segment_id: int, version: Annotated[int | None, typer.Option(help="default: latest")] = None
) -> None:
    """Print a segment version's definition as JSON."""
    ctx = get_context()
    with ctx.uow() as session:
        stored = audience.get_segment_version(
            session, actor=SYSTEM, segment_id=segment_id, version=version
        )
        typer.echo(json.dumps(stored.definition, ensure_ascii=False, indent=2))


def _print_list(t: Any) -> None:
    table = Table(title=f"target list {t.id}: {t.name}", show_header=False)
    table.add_row("segment", f"{t.segment_id} v{t.segment_version}")
    table.add_row("channel / send at", f"{t.channel} / {t.send_at:%Y-%m-%d %H:%M} UTC")
    table.add_row("members", f"{t.members:,}")
    eligible = t.target + t.control
    share = t.control / eligible if eligible else 0.0
    table.add_row("target", f"{t.target:,}")
    table.add_row(
        "control", f"{t.control:,} ({share:.2%}; configured {t.control_share_bp / 100:g} %)"
    )
    table.add_row("universal control", f"{t.universal_control:,} (period {t.universal_period})")
    table.add_row("suppressed", f"{t.suppressed:,}")
    for reason, n in t.reasons.items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("salt", t.salt)
    table.add_row("mart table", t.mart_table)
    console.print(table)


@target_list_app.command("build")
@handles_errors
def target_list_build(
    segment_id: int,
    channel: Annotated[str, typer.Option(help=", ".join(rules.CHANNELS))] = "sms",
    control_share: Annotated[float, typer.Option(help="0.1 is 10 %")] = 0.1,
    version: Annotated[int | None, typer.Option(help="default: latest")] = None,
    send_at: Annotated[str | None, typer.Option(help="ISO time; default now")] = None,
    salt: Annotated[str | None, typer.Option(help="the campaign's salt; default random")] = None,
    as_user: AsOption = None,
) -> None:
    """Snapshot a segment into the mart with control split and contact-policy suppressions."""
    ctx = get_context()
    if not 0 <= control_share <= 0.5:
        raise ValidationFailed("control share is between 0 and 0.5", field="control_share")
    with ctx.uow() as session:
        t = audience.build_target_list(
            session,
            mart=ctx.mart,
            actor=_actor(session, as_user),
            vault=ctx.vault,
            segment_id=segment_id,
            version=version,
            channel=channel,
            control_share_bp=round(control_share * 10_000),
            send_at=_when(send_at, "send_at"),
            salt=salt,
            default_zone=ctx.settings.timezone,
        )
        session.commit()
        _print_list(t)


@target_list_app.command("show")
@handles_errors
def target_list_show(target_list_id: int) -> None:
    """Counts of a target list per cell and suppression reason."""
    ctx = get_context()
    with ctx.uow() as session:
        _print_list(audience.get_target_list(session, actor=SYSTEM, target_list_id=target_list_id))


def _subscriber(ctx: Context, session: Session, who: str) -> int:
    if who.isdigit() and len(who) < 11:
        return int(who)
    sub = subscribers.find_by_phone(session, vault=ctx.vault, phone=who)
    if sub is None:
        raise NotFound("no subscriber with this phone number or id", field="subscriber")
    return sub.id


@optout_app.command("add")
@handles_errors
def optout_add(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
    channel: Annotated[str, typer.Option(help="all, or one channel")] = "all",
    complaint: Annotated[bool, typer.Option("--complaint", help="the complaint list")] = False,
    note: Annotated[str, typer.Option(help="why")] = "",
) -> None:
    """Put a subscriber on the opt-out list (or the complaint list), then sync the mart."""
    ctx = get_context()
    with ctx.uow() as session:
        sid = _subscriber(ctx, session, subscriber)
        audience.add_to_contact_list(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            kind="complaint" if complaint else "opted_out",
            channel=channel,
            source="cli",
            note=note,
        )
        session.commit()
        audience.export_contact_lists(session, mart=ctx.mart)
    console.print(f"subscriber {sid}: on the {'complaint' if complaint else 'opt-out'} list")


@optout_app.command("remove")
@handles_errors
def optout_remove(
    subscriber: Annotated[str, typer.Argument(help="subscriber id or phone number")],
    channel: Annotated[str, typer.Option(help="all, or one channel")] = "all",
    complaint: Annotated[bool, typer.Option("--complaint", help="the complaint list")] = False,
    note: Annotated[str, typer.Option(help="why")] = "",
) -> None:
    """Take a subscriber off the list, then sync the mart."""
    ctx = get_context()
    with ctx.uow() as session:
        sid = _subscriber(ctx, session, subscriber)
        audience.remove_from_contact_list(
            session,
            actor=SYSTEM,
            subscriber_id=sid,
            kind="complaint" if complaint else "opted_out",
            channel=channel,
            note=note,
        )
        session.commit()
        audience.export_contact_lists(session, mart=ctx.mart)
    console.print(f"subscriber {sid}: removed from the list")


@optout_app.command("list")
@handles_errors
def optout_list(
    complaint: Annotated[bool, typer.Option("--complaint", help="the complaint list")] = False,
) -> None:
    """The newest list entries."""
    ctx = get_context()
    table = Table("subscriber", "kind", "channel", "source", "by", "since", "note")
    with ctx.uow() as session:
        rows, total = audience.list_contact_list(
            session, actor=SYSTEM, kind="complaint" if complaint else "opted_out", limit=200
        )
        for r in rows:
            table.add_row(
                str(r.subscriber_id),
                r.kind,
                r.channel,
                r.source,
                r.created_by,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                r.note,
            )
    console.print(table)
    console.print(f"{total:,} in all")


@optout_app.command("sync")
@handles_errors
def optout_sync() -> None:
    """Export the ledger's opt-out and complaint lists to the mart."""
    ctx = get_context()
    with ctx.uow() as session:
        n = audience.export_contact_lists(session, mart=ctx.mart)
    console.print(f"{n:,} list entries written to the mart")


@extract_app.command("save")
@handles_errors
def extract_save(
    file: Annotated[Path, typer.Argument(help="a template in YAML or JSON")],
    as_user: AsOption = None,
) -> None:
    """Save an extraction template (replaces one of the same name)."""
    ctx = get_context()
    raw = _read(file)
    with ctx.uow() as session:
        row = audience.save_template(
            session, mart=ctx.mart, actor=_actor(session, as_user), raw=raw
        )
        session.commit()
        console.print(f"template {row.id}: {row.name}")


@extract_app.command("list")
@handles_errors
def extract_list() -> None:
    """Saved templates."""
    ctx = get_context()
    table = Table("id", "name", "columns", "parameters")
    with ctx.uow() as session:
        for t in audience.list_templates(session, actor=SYSTEM):
            params = ", ".join(p["name"] for p in t.body.get("parameters") or [])
            table.add_row(str(t.id), t.name, ", ".join(t.body["columns"]), params)
    console.print(table)


@extract_app.command("run")
@handles_errors
def extract_run(
    template: Annotated[str, typer.Argument(help="template id or name")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, repeatable")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[Path | None, typer.Option(help="folder; default the home's exports")] = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="full phone numbers (audited)")] = False,
    limit: Annotated[int | None, typer.Option(help="at most this many rows")] = None,
    as_user: AsOption = None,
) -> None:
    """Export a template's rows with a progress bar; the export is audited."""
    ctx = get_context()
    params: dict[str, str] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationFailed(f"--param takes NAME=VALUE, not {item!r}", field="param")
        params[key.strip()] = value
    columns = (
        TextColumn("[bold]rows"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with ctx.uow() as session:
        actor = _actor(session, as_user)
        rows = audience.list_templates(session, actor=actor)
        chosen = next((t for t in rows if str(t.id) == template or t.name == template), None)
        if chosen is None:
            raise NotFound(f"no template {template!r}", field="template")
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("extract", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = audience.run_extraction(
                session,
                mart=ctx.mart,
                actor=actor,
                vault=ctx.vault,
                template_id=chosen.id,
                params=params,
                fmt=fmt,
                out_dir=out or ctx.settings.exports_dir,
                reveal=reveal,
                limit=limit,
                progress=on_progress,
                # The home's exports folder is kept owner-only and pruned; --out is the user's.
                ttl_s=None if out else ctx.settings.export_ttl_s,
            )
        session.commit()
    phones = "revealed" if report.revealed else "masked"
    console.print(
        f"{report.rows:,} rows → {report.path} ({report.format}, phones {phones}, "
        f"{report.seconds:.1f} s)"
    )


@extract_app.command("prune")
@handles_errors
def extract_prune() -> None:
    """Delete the home's exports older than PERKFLOW_EXPORT_TTL_S (cron); each deletion audited."""
    ctx = get_context()
    ttl = ctx.settings.export_ttl_s
    with ctx.uow() as session:
        gone = audience.prune_exports(
            session, actor=SYSTEM, folder=ctx.settings.exports_dir, ttl_s=ttl
        )
        session.commit()
    console.print(f"deleted {len(gone):,} exports older than {ttl / 3600:g} h")


@control_app.command("show")
@handles_errors
def control_show() -> None:
    """The universal control group of the current rotation period."""
    ctx = get_context()
    with ctx.uow() as session:
        r = audience.universal_control_report(session, mart=ctx.mart, actor=SYSTEM, vault=ctx.vault)
    console.print(
        f"universal control: {r.setting.share_bp / 100:g} % of {r.population:,} = {r.size:,} "
        f"held out; period {r.period} ({r.first_day} – {r.last_day}, every "
        f"{r.setting.rotation_days} days)"
    )


@control_app.command("set")
@handles_errors
def control_set(
    share: Annotated[float, typer.Option(help="0.05 is 5 %")],
    rotation_days: Annotated[int, typer.Option(help="draw new members every N days")] = 90,
    salt: Annotated[str | None, typer.Option(help="a new salt draws new members now")] = None,
) -> None:
    """Set the universal control share and rotation (audited)."""
    ctx = get_context()
    with ctx.uow() as session:
        audience.set_universal_control(
            session,
            actor=SYSTEM,
            share_bp=round(share * 10_000),
            rotation_days=rotation_days,
            salt=salt,
        )
        session.commit()
    control_show()


@policy_app.command("show")
@handles_errors
def policy_show() -> None:
    """The contact policy in force as JSON."""
    ctx = get_context()
    with ctx.uow() as session:
        typer.echo(json.dumps(rules.policy_to_dict(audience.get_contact_policy(session)), indent=2))


@policy_app.command("set")
@handles_errors
def policy_set(
    file: Annotated[Path, typer.Argument(help="caps and quiet_hours, YAML or JSON")],
) -> None:
    """Replace the contact policy (audited)."""
    ctx = get_context()
    raw = _read(file)
    with ctx.uow() as session:
        audience.set_contact_policy(session, actor=SYSTEM, raw=raw)
        session.commit()
    console.print("contact policy replaced")
