"""`perkflow catalog`: partners, benefit SKUs, their lifecycle and card-code imports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus, Category, FulfilmentKind, ValidityKind
from perkflow.catalog.schemas import BenefitCreate, PartnerCreate, parse_input
from perkflow.cli import tables
from perkflow.cli.context import console, get_context, handles_errors
from perkflow.errors import ValidationFailed
from perkflow.kit.money import format_fen
from perkflow.org.rules import SYSTEM

catalog_app = typer.Typer(
    help="The benefit catalog: partners, SKUs, card codes.", no_args_is_help=True
)


@catalog_app.command("partner-add")
@handles_errors
def partner_add(
    code: Annotated[str, typer.Argument(help="stable partner code, e.g. tencent-video")],
    name: Annotated[str, typer.Option(help="display name")],
    contact_name: Annotated[str, typer.Option(help="contact person")] = "",
    contact_email: Annotated[str, typer.Option(help="contact e-mail")] = "",
    contact_phone: Annotated[str, typer.Option(help="contact phone")] = "",
    cycle: Annotated[str, typer.Option(help="settlement cycle: monthly or quarterly")] = "monthly",
    statement_day: Annotated[int, typer.Option(help="statement day of the month, 1-28")] = 5,
    payment_days: Annotated[int, typer.Option(help="days from statement to payment")] = 30,
    connector_url: Annotated[
        str, typer.Option(help="partner endpoint; set it for direct recharge over HTTP")
    ] = "",
    connector_secret: Annotated[
        str, typer.Option(help="shared signing secret (stored encrypted)", envvar="PARTNER_SECRET")
    ] = "",
    timeout_ms: Annotated[int, typer.Option(help="connector timeout in ms")] = 3000,
    max_attempts: Annotated[int, typer.Option(help="delivery attempts before failing")] = 5,
    supports_revoke: Annotated[
        bool, typer.Option("--supports-revoke", help="the partner accepts revocations")
    ] = False,
) -> None:
    """Add a partner (its connector secret is stored encrypted)."""
    ctx = get_context()
    spec = parse_input(
        PartnerCreate,
        {
            "code": code,
            "name": name,
            "contact_name": contact_name,
            "contact_email": contact_email,
            "contact_phone": contact_phone,
            "settlement_terms": {
                "cycle": cycle,
                "statement_day": statement_day,
                "payment_days": payment_days,
            },
            "connector_kind": "http" if connector_url else "none",
            "connector_url": connector_url,
            "connector_secret": connector_secret or None,
            "connector_timeout_ms": timeout_ms,
            "connector_max_attempts": max_attempts,
            "supports_revoke": supports_revoke,
        },
    )
    with ctx.uow() as session:
        partner = catalog.create_partner(session, actor=SYSTEM, vault=ctx.vault, spec=spec)
        session.commit()
    console.print(f"partner {partner.id} {partner.code} added ({partner.connector_kind})")


@catalog_app.command("benefit-add")
@handles_errors
def benefit_add(
    code: Annotated[str, typer.Argument(help="stable benefit code, e.g. video-vip-month")],
    partner: Annotated[str, typer.Option(help="partner code")],
    name_zh: Annotated[str, typer.Option(help="Chinese name")],
    name_en: Annotated[str, typer.Option(help="English name")],
    category: Annotated[Category, typer.Option(help="category")],
    kind: Annotated[FulfilmentKind, typer.Option(help="fulfilment kind")],
    face_value_fen: Annotated[int, typer.Option(help="face value in fen")],
    cost_price_fen: Annotated[int, typer.Option(help="cost price in fen")],
    sale_price_fen: Annotated[int, typer.Option(help="the one national sale price in fen")],
    valid_days: Annotated[
        int | None, typer.Option(help="valid N days from grant (or use --valid-until)")
    ] = None,
    valid_from: Annotated[str, typer.Option(help="fixed validity start, YYYY-MM-DD")] = "",
    valid_until: Annotated[str, typer.Option(help="fixed validity end, YYYY-MM-DD")] = "",
    stock: Annotated[
        int | None, typer.Option(help="units on sale; omit for unlimited (card codes: import)")
    ] = None,
    low_stock_threshold: Annotated[int, typer.Option(help="alert at or below this")] = 0,
    limit_per_month: Annotated[int | None, typer.Option(help="per subscriber per month")] = None,
    limit_total: Annotated[int | None, typer.Option(help="per subscriber in total")] = None,
    revocable: Annotated[bool, typer.Option("--revocable/--not-revocable")] = True,
) -> None:
    """Add a benefit SKU as a draft."""
    ctx = get_context()
    fixed = bool(valid_until or valid_from)
    values: dict[str, Any] = {
        "code": code,
        "partner_code": partner,
        "name_zh": name_zh,
        "name_en": name_en,
        "category": category,
        "fulfilment_kind": kind,
        "face_value_fen": face_value_fen,
        "cost_price_fen": cost_price_fen,
        "sale_price_fen": sale_price_fen,
        "validity_kind": ValidityKind.FIXED if fixed else ValidityKind.DAYS,
        "valid_days": valid_days,
        "valid_from": valid_from or None,
        "valid_until": valid_until or None,
        "stock": stock,
        "low_stock_threshold": low_stock_threshold,
        "limit_per_month": limit_per_month,
        "limit_total": limit_total,
        "revocable": revocable,
    }
    spec = parse_input(BenefitCreate, values)
    with ctx.uow() as session:
        benefit = catalog.create_benefit(session, actor=SYSTEM, spec=spec)
        session.commit()
    console.print(f"benefit {benefit.id} {benefit.code} added as draft")


@catalog_app.command("list")
@handles_errors
def benefit_list(
    status: Annotated[BenefitStatus | None, typer.Option(help="only this status")] = None,
    category: Annotated[Category | None, typer.Option(help="only this category")] = None,
    low: Annotated[bool, typer.Option("--low", help="only benefits low on stock")] = False,
) -> None:
    """List benefits with price, stock and status."""
    ctx = get_context()
    table = tables.table(
        "id",
        "code",
        "partner",
        "kind",
        "sale price",
        "stock",
        "status",
        keys={"id", "code", "kind", "status"},
        figures={"sale price", "stock"},
        box=box.SIMPLE_HEAD,
        padding=0,
    )
    with ctx.uow() as session:
        rows, total = catalog.list_benefits(
            session,
            actor=SYSTEM,
            status=status.value if status else None,
            category=category.value if category else None,
            low_stock_only=low,
            limit=10_000,
        )
        partners = catalog.partners_by_id(session, ids={b.partner_id for b in rows})
        for b in rows:
            stock = (
                "unlimited"
                if b.stock_total is None
                else f"{b.stock_remaining:,} / {b.stock_total:,}"
            )
            if catalog.is_low_on_stock(b):
                stock = f"[red]{stock} low[/red]"
            table.add_row(
                str(b.id),
                b.code,
                partners[b.partner_id].code,
                b.fulfilment_kind,
                format_fen(b.sale_price_fen),
                stock,
                b.status,
            )
    console.print(table)
    console.print(f"{total} benefit(s)")


def _set_status(code: str, status: BenefitStatus) -> None:
    ctx = get_context()
    with ctx.uow() as session:
        benefit = catalog.find_benefit(session, actor=SYSTEM, code=code)
        before = benefit.status
        catalog.set_benefit_status(
            session,
            actor=SYSTEM,
            benefit_id=benefit.id,
            status=status,
            zone=ctx.settings.timezone,
        )
        session.commit()
    console.print(f"{code}: {before} → {status.value}")


@catalog_app.command("list-benefit")
@handles_errors
def list_benefit(
    code: Annotated[str, typer.Argument(help="benefit code")],
    to: Annotated[
        BenefitStatus, typer.Option("--to", help="target status (listed or delisted)")
    ] = BenefitStatus.LISTED,
) -> None:
    """Put a benefit on sale (or, with --to delisted, take it off)."""
    _set_status(code, to)


@catalog_app.command("delist-benefit")
@handles_errors
def delist_benefit(code: Annotated[str, typer.Argument(help="benefit code")]) -> None:
    """Take a benefit off sale."""
    _set_status(code, BenefitStatus.DELISTED)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) + 1


@catalog_app.command("import-codes")
@handles_errors
def import_codes(
    benefit_code: Annotated[str, typer.Argument(help="benefit code of a card_code benefit")],
    file: Annotated[Path, typer.Argument(help="CSV: code[,pin[,expiry YYYY-MM-DD]] per line")],
    unit_cost_fen: Annotated[int, typer.Option(help="what one code cost, in fen")],
) -> None:
    """Import a partner's card codes as one lot; a bad file is refused whole."""
    if not file.is_file():
        raise ValidationFailed(f"no such file: {file}", field="file")
    ctx = get_context()
    total = _count_lines(file)
    columns = (
        TextColumn("[bold]lines"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with ctx.uow() as session:
        benefit = catalog.find_benefit(session, actor=SYSTEM, code=benefit_code)
        with (
            Progress(*columns, console=console, transient=False) as bar,
            file.open(encoding="utf-8-sig", newline="") as fh,
        ):
            task = bar.add_task("import", total=total)
            try:
                outcome = catalog.import_card_codes(
                    session,
                    actor=SYSTEM,
                    vault=ctx.vault,
                    benefit_id=benefit.id,
                    file_name=file.name,
                    unit_cost_fen=unit_cost_fen,
                    rows=fh,
                    progress=lambda done: bar.update(task, completed=done),
                    zone=ctx.settings.timezone,
                )
            except ValidationFailed as exc:
                for bad in exc.details.get("errors", []):
                    console.print(escape(f"  line {bad['line']}: {bad['reason']}"))
                raise
            bar.update(task, completed=total)
        session.commit()
        stock = f"{benefit.stock_remaining:,} / {benefit.stock_total:,}"
    console.print(
        f"lot {outcome.lot.id}: {outcome.imported:,} codes imported, "
        f"{outcome.duplicates:,} duplicates skipped; stock {stock}"
    )
