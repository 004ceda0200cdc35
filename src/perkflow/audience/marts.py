"""Mart tables the audience reads and writes: names, Arrow schemas, and their one writer each."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")

PROFILE = "subscriber_profile"
CONTACT_HISTORY = "contact_history"
RESPONSE_HISTORY = "response_history"
CONTACT_LISTS = "contact_lists"
MODEL_SCORES = "model_scores"
# Per-subscriber response features, written back by evaluation (insights.write_back_features);
# segment rules read its columns like profile columns (`compiler._feature`).
RESPONSE_FEATURES = "response_features"
# Its columns that are bookkeeping, not something a rule should test.
FEATURE_COLUMNS_HIDDEN = frozenset({"subscriber_id", "computed_at"})
TARGET_LIST_PREFIX = "target_list_"

if TYPE_CHECKING:
    UTC_TS: pa.DataType
    CONTACT_HISTORY_SCHEMA: pa.Schema
    RESPONSE_HISTORY_SCHEMA: pa.Schema
    CONTACT_LISTS_SCHEMA: pa.Schema
    MODEL_SCORES_SCHEMA: pa.Schema
    TARGET_LIST_SCHEMA: pa.Schema


@cache
def _arrow_types() -> dict[str, Any]:
    """The Arrow types of the tables above, built on first use: pyarrow is slow to import."""
    utc_ts = pa.timestamp("us", tz="UTC")

    # One row per subscriber assigned to a campaign: sent, held back (control cells) or dropped
    # at send time (``status`` suppressed, with its ``reason``), so the evaluation reads intent to
    # treat. The last four columns came later: a table written before has them empty (``widen``).
    contact_history_schema = pa.schema(
        [
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("campaign_id", pa.string(), nullable=False),
            pa.field("channel", pa.string(), nullable=False),
            pa.field("cell", pa.string(), nullable=False),  # target | control
            pa.field("contacted_at", utc_ts, nullable=False),
            pa.field("target_list_id", pa.int64()),
            pa.field("variant", pa.string()),  # controls: the variant they would have got
            pa.field("wave_id", pa.int64()),
            pa.field("status", pa.string()),  # empty: counted as contacted (other sources)
            pa.field("reason", pa.string()),
        ]
    )
    # One row per thing a subscriber did after a contact (click, claim, redeem, purchase).
    response_history_schema = pa.schema(
        [
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("campaign_id", pa.string(), nullable=False),
            pa.field("channel", pa.string()),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("responded_at", utc_ts, nullable=False),
            pa.field("value_fen", pa.int64()),
        ]
    )
    # The ledger's opt-out and complaint lists, as last exported (`service.export_contact_lists`).
    contact_lists_schema = pa.schema(
        [
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),  # opted_out | complaint
            pa.field("channel", pa.string(), nullable=False),  # a channel, or "all"
            pa.field("since", utc_ts, nullable=False),
        ]
    )
    # Scores of models kept outside the profile: one row per subscriber and model.
    model_scores_schema = pa.schema(
        [
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
        ]
    )
    target_list_schema = pa.schema(
        [
            pa.field("target_list_id", pa.int64(), nullable=False),
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("province_code", pa.string(), nullable=False),
            pa.field("activity_level", pa.string()),
            pa.field("cell", pa.string(), nullable=False),
            pa.field("reason", pa.string()),
        ]
    )
    return {
        "UTC_TS": utc_ts,
        "CONTACT_HISTORY_SCHEMA": contact_history_schema,
        "RESPONSE_HISTORY_SCHEMA": response_history_schema,
        "CONTACT_LISTS_SCHEMA": contact_lists_schema,
        "MODEL_SCORES_SCHEMA": model_scores_schema,
        "TARGET_LIST_SCHEMA": target_list_schema,
    }


def __getattr__(name: str) -> Any:
    # Module attributes resolved late (PEP 562), so importing the table names stays cheap.
    if name.isupper():  # not for dunder probes such as `__path__`: those must stay cheap
        types = _arrow_types()
        if name in types:
            return types[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def target_list_table(target_list_id: int) -> str:
    """The mart table of one target list's snapshot."""
    return f"{TARGET_LIST_PREFIX}{target_list_id}"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table in exactly the schema's column order and types; ValueError names what is off."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    columns = []
    for f in schema:
        column = table[f.name]
        if not f.nullable and column.null_count:
            raise ValueError(f"column {f.name} may not be empty")
        columns.append(column.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


# The contact history's status of a target dropped at send time (campaigns' ContactStatus).
SUPPRESSED = "suppressed"


def contacts_made(contacts: Any) -> Any:
    """The contact history (an Ibis table) without the targets dropped at send time.

    They are in the history for the evaluation (intent to treat) but got no message: what reads
    the history as contacts made (contact caps, "contacted" rules, response features) reads this.
    """
    if "status" not in contacts.columns:
        return contacts
    return contacts.filter(contacts.status.isnull() | (contacts.status != SUPPRESSED))


def widen(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A stored table with the schema's newer, nullable columns added empty (then conformed).

    For a history table written before a column was added: its rows keep what they held.
    """
    for f in schema:
        if f.name not in table.column_names and f.nullable:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return conform(table, schema)


def empty(schema: pa.Schema) -> pa.Table:
    """A table with no rows."""
    return schema.empty_table()


def append(mart: Mart, name: str, schema: pa.Schema, rows: pa.Table) -> int:
    """Add rows to a history table (the whole file is rewritten atomically); returns its size."""
    new = conform(rows, schema)
    if mart.has(name):
        old = widen(mart.table(name).to_pyarrow(), schema)
        new = pa.concat_tables([old, new])
    mart.write(name, new)
    return int(new.num_rows)


def append_contacts(mart: Mart, rows: pa.Table) -> int:
    """Record contacts in the mart's contact history."""
    return append(mart, CONTACT_HISTORY, _arrow_types()["CONTACT_HISTORY_SCHEMA"], rows)


def append_responses(mart: Mart, rows: pa.Table) -> int:
    """Record responses in the mart's response history."""
    return append(mart, RESPONSE_HISTORY, _arrow_types()["RESPONSE_HISTORY_SCHEMA"], rows)


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table of the schema from Python rows (for small writes and tests)."""
    return pa.Table.from_pylist(rows, schema=schema)
