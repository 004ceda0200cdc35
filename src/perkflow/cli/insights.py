"""`perkflow campaign import-history | report | sync-history | write-back`: evaluations."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from perkflow.cli.audience import AsOption, _actor
from perkflow.cli.campaigns import campaign_app
from perkflow.cli.context import console, err_console, get_context, handles_errors
from perkflow.cli.tables import table
from perkflow.errors import ValidationFailed
from perkflow.insights import programme as programme_report
from perkflow.insights import service as insights
from perkflow.kit.money import format_fen

__all__ = ["campaign_app", "insights_app"]

insights_app = typer.Typer(
    help="Insights across campaigns: the programme against the universal control group.",
    no_args_is_help=True,
)


def _spinner(text: str) -> Progress:
    progress = Progress(
        SpinnerColumn(),
        TextColumn(text),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    progress.add_task(text, total=None)
    return progress


@campaign_app.command("import-history")
@handles_errors
def import_history(
    file: Annotated[Path, typer.Argument(help="CSV: subscriber_id,cell,variant,contacted_at,…")],
    name: Annotated[str, typer.Option("--name", help="the campaign's name")],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="the outside system whose ids these are (hillstrom, crm_2025…)",
        ),
    ],
    match: Annotated[
        str | None,
        typer.Option(
            "--match", help="phone: match the file's phone column to our subscribers (keyed hash)"
        ),
    ] = None,
    map_file: Annotated[
        Path | None,
        typer.Option("--map", help="CSV outside_id,subscriber_id: link those ids to subscribers"),
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Load a past campaign's contacts and responses; prints {"campaign_id": N}.

    Ids not matched by --match or --map stay the source's: they count in this campaign's report
    and never in our subscribers' history, features or segments.
    """
    ctx = get_context()
    with _spinner(f"importing {file.name}"), ctx.uow() as session:
        campaign = insights.import_history_csv(
            session,
            actor=_actor(session, as_user),
            path=file,
            name=name,
            source=source,
            zone=ctx.settings.timezone,
            match=match,
            vault=ctx.vault if match is not None else None,
            map_path=map_file,
        )
        session.commit()
        campaign_id = campaign.id
    typer.echo(json.dumps({"campaign_id": campaign_id}))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.2f}"


def _ci(ci: list[float] | None) -> str:
    return "—" if ci is None else f"{ci[0] * 100:+.2f}…{ci[1] * 100:+.2f}"


def _p(p: float | None) -> str:
    return "—" if p is None else (f"{p:.4f}" if p >= 1e-4 else "<0.0001")


def _verdict(row: dict[str, Any]) -> str:
    if row["verdict"] == "not enough data":
        return "[dim]n/a[/dim]"  # not enough data: no test, never "significant"
    return "[green]yes[/green]" if row["significant"] else "[yellow]no[/yellow]"


def _print_evidence(report: dict[str, Any]) -> None:
    """Adjusted p-values, the sequential verdict, the planned sample, Bayes and revenue."""
    rows = [(f"{v['variant'] or '—'}", v) for v in report["variants"]]
    rows += [(f"{p['province_code']}", p) for p in report["provinces"]]
    if any(r["uplift"]["adjustment"] for _, r in rows):
        adjusted = table(
            "group",
            "p-value",
            "adjusted",
            "by",
            "verdict",
            keys={"group"},
            figures={"p-value", "adjusted"},
            title="Several comparisons at once: the badge reads the adjusted p-value",
            box=box.SIMPLE_HEAD,
            padding=0,
        )
        for label, r in rows:
            u = r["uplift"]
            adjusted.add_row(
                label, _p(u["p_value"]), _p(u["p_value_adjusted"]), u["adjustment"], r["verdict"]
            )
        console.print(adjusted)
    seq = report["sequential"]
    cs = _ci(seq["cs"])
    console.print(
        f"sequential test (valid however often read): {seq['verdict']}, "
        f"always-valid p {_p(seq['p_value'])}, confidence sequence {cs} pts"
    )
    plan = report["plan"]
    needed = plan["control_needed"]
    progress = plan["progress"]
    console.print(
        f"planned sample: {report['cells']['control']['contacts']:,} of "
        + (f"{needed:,}" if needed is not None else "—")
        + " controls"
        + (f" ({progress:.0%})" if progress is not None else "")
        + " to detect "
        + f"{plan['effect'] * 100:.2f} pts at a {plan['base_rate']:.0%} base rate "
        + f"({plan['base_rate_source']}); "
        + ("fixed-horizon p is final" if plan["reached"] else "fixed-horizon p is preliminary")
        + ("; the control group is too small" if plan["control_too_small"] else "")
    )
    bayes = report["uplift"]["bayes"]
    if bayes is not None:
        console.print(
            f"Bayesian: P(target better) {bayes['prob_better']:.1%}, "
            f"expected loss {bayes['expected_loss'] * 100:.3f} pts"
        )
    inc = report["incremental"]
    ci = inc["revenue_ci95"]
    console.print(
        "incremental revenue 95% CI "
        + (
            f"{format_fen(round(ci[0]))} to {format_fen(round(ci[1]))}"
            if ci is not None
            else f"none: sample too small ({inc['revenue_interval']})"
        )
    )


def _print_design(report: dict[str, Any]) -> None:
    """The sample-ratio check, the headline's wave, the other readings, the variants' controls."""
    sr = report["sample_ratio"]
    if sr is not None and sr["p_value"] is not None:
        shares = (
            f"{sr['observed_control_share']:.1%} control "
            f"(planned {sr['planned_control_share'] * 100:g}%)"
        )
        if sr["mismatch"]:
            console.print(
                f"[bold red]SAMPLE RATIO MISMATCH[/bold red]: {shares}, chi-square p "
                f"{_p(sr['p_value'])}. The cells do not fit the planned split: something "
                "between assignment and this report lost or added rows; do not act on the "
                "uplift until the cause is found."
            )
        else:
            console.print(f"split as planned: {shares}")
    wave = report["headline_wave"]
    console.print(
        "headline: "
        + (
            "the rollout wave (confirmatory; the test wave decided the rollout)"
            if wave == "rollout" and report["test_wave"]
            else (f"the {wave} wave" if wave else "every wave together")
        )
        + ", intent to treat (every assigned target, reached or not)"
    )
    readings = (
        ("test wave (decided the rollout)", report["test_wave"]),
        ("all waves pooled", report["pooled"]),
        ("among those actually reached (treated-on-treated, not the headline)",
         report["treated_on_treated"]),
    )  # fmt: skip
    for label, row in readings:
        if row is None:
            continue
        t, c, u = row["cells"]["target"], row["cells"]["control"], row["uplift"]
        console.print(
            f"{label}: {t['contacts']:,} targets {_pct(t['rate'])} against {c['contacts']:,} "
            f"controls {_pct(c['rate'])}, uplift {_num(u['absolute'])} pts "
            f"(95% CI {_ci(u['ci95'])}), p {_p(u['p_value'])}, {row['verdict']}"
        )
    if report["variants"]:
        console.print(
            "variants compared with: "
            + "; ".join(
                f"{v['variant'] or '—'} "
                + ("its own controls" if v["own_control"] else "the shared control")
                + f" ({v['control']['contacts']:,})"
                for v in report["variants"]
            )
        )


def _print_report(report: dict[str, Any]) -> None:
    wave = f" · {report['wave']} wave" if report["wave"] else ""
    console.print(f"[bold]Campaign {report['campaign_id']}[/bold] {report['name']}{wave}")
    cells = Table(title="Cells (intent-to-treat)")
    for col in ("cell", "contacts", "responses", "rate", "revenue"):
        cells.add_column(col, justify="left" if col == "cell" else "right")
    for cell in ("target", "control"):
        c = report["cells"][cell]
        cells.add_row(
            cell,
            f"{c['contacts']:,}",
            f"{c['responses']:,}",
            _pct(c["rate"]),
            format_fen(c["revenue_fen"]),
        )
    console.print(cells)
    _print_design(report)
    # Eight columns: spaces between them, points without their unit (the title says it) and
    # "sig." for significant at 5%, so the table fits an 80-column terminal without wrapping.
    groups = table(
        "group",
        "contacts",
        "rate",
        "uplift",
        "95% CI",
        "relative",
        "p-value",
        "sig.",
        keys={"group", "sig."},
        figures={"contacts", "rate", "uplift", "95% CI", "relative", "p-value"},
        title="Uplift against the control, in points (Newcombe 95% CI; z or Fisher test)",
        box=box.SIMPLE_HEAD,
        padding=0,
    )

    def group_row(label: str, row: dict[str, Any], contacts: int, rate: float | None) -> None:
        u = row["uplift"]
        groups.add_row(
            label,
            f"{contacts:,}",
            _pct(rate),
            _num(u["absolute"]),
            _ci(u["ci95"]),
            _pct(u["relative"]),
            _p(u["p_value"]),
            _verdict(row),
        )

    target = report["cells"]["target"]
    group_row("all", report, target["contacts"], target["rate"])
    if report["variants"]:
        groups.add_section()
    for v in report["variants"]:
        group_row(f"{v['variant'] or '—'}", v, v["contacts"], v["rate"])
    if report["provinces"]:
        groups.add_section()
    for p in report["provinces"]:
        group_row(f"{p['province_code']}", p, p["target"]["contacts"], p["target"]["rate"])
    console.print(groups)
    inc = report["incremental"]
    responses = "—" if inc["responses"] is None else f"{inc['responses']:,.0f}"
    revenue = "—" if inc["revenue_fen"] is None else format_fen(inc["revenue_fen"])
    cost = report["cost_per_incremental_fen"]
    console.print(
        f"incremental responses {responses} {_ci_count(inc['responses_ci95'])}, "
        f"incremental revenue {revenue}, cost per incremental response "
        + (
            format_fen(cost)
            if cost is not None
            else ("not significant" if not report["significant"] else "unknown")
        )
    )
    _print_evidence(report)
    _print_mart_readings(report)


def _print_mart_readings(report: dict[str, Any]) -> None:
    """The CUPED line beside the plain one, and a table per breakdown (from the mart)."""
    cu = report["cuped"]
    variants = cu.get("variants") or []
    for v in variants or [cu]:
        label = f"variant {v.get('variant') or '—'}: " if variants else ""
        against = "" if v.get("own_control", True) else " against the shared control"
        read = v.get("waves", "all")
        waves = "all waves" if read == "all" else f"the {read} wave"
        if "adjusted" in v:
            console.print(
                f"CUPED (pre-period mean bill, {waves}, mart history, intent to treat): {label}"
                f"adjusted uplift {_num(v['adjusted']['absolute'])} "
                f"{_ci(v['adjusted']['ci95'])} beside the plain {_num(v['plain']['absolute'])} "
                f"{_ci(v['plain']['ci95'])} points{against}; variance reduced by "
                f"{v['variance_reduction'] * 100:.0f}%, {v['verdict']}"
            )
        else:
            console.print(f"CUPED: {label}not enough data ({v['reason']})")
    tables = report["breakdowns"]["tables"]
    if not tables:
        console.print(f"Breakdowns: not enough data ({report['breakdowns']['reason']})")
    for t in tables:
        out = table(
            "variant",
            "group",
            "target",
            "control",
            "uplift",
            "95% CI",
            "p-value",
            "adj. p",
            "sig.",
            keys={"variant", "group", "sig."},
            figures={"target", "control", "uplift", "95% CI", "p-value", "adj. p"},
            title=f"Uplift by {t['name'].replace('_', ' ')} (BH-adjusted; the badge reads adj. p)",
            box=box.SIMPLE_HEAD,
            padding=0,
        )
        for r in t["rows"]:
            u = r["uplift"]
            out.add_row(
                r.get("variant") or "—",
                r["group"],
                f"{r['target']['contacts']:,}",
                f"{r['control']['contacts']:,}",
                _num(u["absolute"]),
                _ci(u["ci95"]),
                _p(u["p_value"]),
                _p(u["p_value_adjusted"]),
                _verdict(r),
            )
        console.print(out)


def _ci_count(ci: list[float] | None) -> str:
    return "" if ci is None else f"(95% CI {ci[0]:,.0f} to {ci[1]:,.0f})"


@campaign_app.command("report")
@handles_errors
def report(
    campaign_id: Annotated[int, typer.Argument(help="the campaign's id")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    wave: Annotated[
        str | None, typer.Option("--wave", help="only the test or the rollout wave")
    ] = None,
    segment: Annotated[
        list[int] | None,
        typer.Option("--segment", help="a saved segment's id to split by (repeatable, up to 5)"),
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Target against control: rates, uplift with its 95% CI, p-value, per variant and province."""
    ctx = get_context()
    with ctx.uow() as session:
        evaluation = insights.evaluate(
            session,
            actor=_actor(session, as_user),
            campaign_id=campaign_id,
            wave=wave,
            zone=ctx.settings.timezone,
            mart=ctx.mart,
            segment_ids=segment or (),
        )
        out = insights.report_dict(evaluation)
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        _print_report(out)


@campaign_app.command("sync-history")
@handles_errors
def sync_history(as_user: AsOption = None) -> None:
    """Export every campaign's contacts and responses to the mart (idempotent)."""
    ctx = get_context()
    with _spinner("exporting contact and response history"), ctx.uow() as session:
        n = insights.sync_history(session, actor=_actor(session, as_user), mart=ctx.mart)
    typer.echo(json.dumps({"contacts": n}))


@campaign_app.command("write-back")
@handles_errors
def write_back(as_user: AsOption = None) -> None:
    """Compute per-subscriber response features into the mart's response_features."""
    ctx = get_context()
    with _spinner("computing response features"), ctx.uow() as session:
        n = insights.write_back_features(session, actor=_actor(session, as_user), mart=ctx.mart)
    typer.echo(json.dumps({"subscribers": n, "table": insights.RESPONSE_FEATURES}))


def _day(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationFailed(f"{field}: a day like 2026-11-02", field=field) from exc


@insights_app.command("programme")
@handles_errors
def programme(
    since: Annotated[str | None, typer.Option(help="first day (default: the period's)")] = None,
    until: Annotated[str | None, typer.Option(help="last day (default: today)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    as_user: AsOption = None,
) -> None:
    """All marketing against the universal control group: responses and revenue per subscriber."""
    ctx = get_context()
    with ctx.uow() as session:
        result = programme_report.programme_uplift(
            session,
            actor=_actor(session, as_user),
            mart=ctx.mart,
            vault=ctx.vault,
            since=_day(since, "since"),
            until=_day(until, "until"),
        )
        out = programme_report.programme_dict(result)
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    heads = ("group", "subscribers", "responders", "rate", "revenue per subscriber")
    t = table(
        *heads,
        keys=heads[:1],
        figures=heads[1:],
        title=f"Programme {out['first_day']} to {out['last_day']} (period {out['period']})",
    )
    for name, key in (("marketed", "marketed"), ("universal control", "universal_control")):
        c = out[key]
        per = c["revenue_per_subscriber_fen"]
        t.add_row(
            name,
            f"{c['subscribers']:,}",
            f"{c['responders']:,}",
            "—" if c["rate"] is None else f"{c['rate']:.2%}",
            "—" if per is None else format_fen(round(per)),
        )
    console.print(t)
    u = out["uplift"]
    uplift = "—" if u["absolute"] is None else f"{u['absolute'] * 100:+.2f} pts"
    verdict = "significant" if u["significant"] else "not significant"
    typer.echo(f"uplift of all marketing: {uplift}, {verdict} (p = {u['p_value']})")
