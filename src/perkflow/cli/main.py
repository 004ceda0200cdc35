"""`perkflow`: every command by name; each is imported only when it is used (see cli/lazy.py)."""

from __future__ import annotations

import typer

from perkflow.cli.lazy import Entry, group_with

COMMANDS = (
    Entry("db", "The ledger database.", "perkflow.cli.home:db_app"),
    Entry("staff", "Console users.", "perkflow.cli.org:staff_app"),
    Entry("apikey", "API keys for partners and channels.", "perkflow.cli.org:key_app"),
    Entry("subscriber", "The subscriber master.", "perkflow.cli.subscribers:sub_app"),
    Entry(
        "catalog",
        "The benefit catalog: partners, SKUs, card codes.",
        "perkflow.cli.catalog:catalog_app",
    ),
    Entry(
        "synth",
        "Generate a synthetic operator: subscriber master, profiles, usage and hidden truth.",
        "perkflow.cli.synth:synth",
    ),
    Entry("segment", "Segments: count, validate, save, list.", "perkflow.cli.audience:segment_app"),
    Entry("target-list", "Target lists: build and show.", "perkflow.cli.audience:target_list_app"),
    Entry(
        "optout", "Opt-outs (免打扰) and the complaint list.", "perkflow.cli.audience:optout_app"
    ),
    Entry("extract", "Self-service extraction templates.", "perkflow.cli.audience:extract_app"),
    Entry("control", "The universal control group.", "perkflow.cli.audience:control_app"),
    Entry(
        "contact-policy",
        "The contact policy: caps and quiet hours.",
        "perkflow.cli.audience:policy_app",
    ),
    Entry(
        "grants",
        "Grants: the outbox worker, expiry, dead letters.",
        "perkflow.cli.grants:grants_app",
    ),
    Entry(
        "binding", "Binding (绑): grants follow network status.", "perkflow.cli.grants:binding_app"
    ),
    Entry("coupons", "Coupon batches and their codes.", "perkflow.cli.coupons:coupons_app"),
    Entry("member", "Membership tiers, bundles and points.", "perkflow.cli.membership:member_app"),
    Entry(
        "channels",
        "Channels: SMSC and SMTP peers on loopback, send tests.",
        "perkflow.cli.channels:channels_app",
    ),
    Entry(
        "campaign",
        "Campaigns: define, approve, run in waves, evaluate.",
        "perkflow.cli.campaigns:campaign_app",
        extras=("perkflow.cli.insights",),  # adds report, import-history, sync-history, write-back
    ),
    Entry(
        "insights",
        "Insights across campaigns: the programme against the universal control group.",
        "perkflow.cli.insights:insights_app",
    ),
    Entry(
        "partner-sim",
        "A simulated partner on 127.0.0.1: idempotent orders, failures, stalls, signed callbacks.",
        "perkflow.cli.grants:partner_sim_command",
    ),
    Entry("serve", "Serve the console, H5 pages and API.", "perkflow.cli.home:serve"),
    Entry(
        "demo",
        "Set up the home: migrate, generate an operator, demo staff, run the demo campaign, serve.",
        "perkflow.cli.home:demo",
    ),
)

app = typer.Typer(
    cls=group_with(COMMANDS),
    help="perkflow: benefit operations and precision marketing.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """perkflow: benefit operations and precision marketing."""
