"""Set-based writes straight to the driver, inside the session's own transaction.

On PostgreSQL one JSON array parameter per column (`INSERT … SELECT FROM ROWS FROM
(json_array_elements_text(…), …)`), so the statement stays short whatever the rows; on SQLite
one executemany (multi-row VALUES when rows come back).

For the ledger's bulk paths only (the monthly bundle run): a chunk writes thousands of rows per
table, and SQLAlchemy's per-row parameter processing was most of its time. Values are converted
by each column's own bind processor (so they are stored exactly as the ORM stores them), repeated
values (a chunk's one timestamp) once, and sent as one executemany or multi-row VALUES statement.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, FromClause, Table
from sqlalchemy.orm import Session

Row = Sequence[Any]
_MAX_PARAMS = 30_000  # under SQLite's 32,766 variables per statement


# Tracked objects allocated (net) before the collector's youngest generation runs, during a bulk
# job: a chunk's rows are freed at its end anyway, so most of those runs found nothing.
_BULK_GEN0_THRESHOLD = 20_000


@contextmanager
def few_collections() -> Iterator[None]:
    """Garbage collection sized for a bulk job: older objects frozen out, the youngest runs rarer.

    A chunk allocates hundreds of thousands of objects, so the collector's oldest generation ran
    every few chunks and walked every object of the process each time (a third of the bundle
    run's CPU), and the youngest ran thousands of times a run to free almost nothing. Frozen,
    the objects that exist before the job (modules, mappers, caches) are left out of its runs;
    both come back as they were at the end. Cyclic garbage is still collected, only in larger
    steps.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], _BULK_GEN0_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _driver(session: Session) -> tuple[Any, str, Any]:
    conn = session.connection()
    dialect = conn.dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    return conn.connection.dbapi_connection, mark, dialect


def _table(clause: FromClause) -> Table:
    if not isinstance(clause, Table):
        raise TypeError("bulk writes go to tables")
    return clause


def _known(table: Table, names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {unknown[0]!r}")


def _converters(
    table: Table, columns: Sequence[str], dialect: Any
) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, converter) of the columns whose type converts values for the driver."""
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(columns):
        proc = table.c[name].type._cached_bind_processor(dialect)
        if proc is None:
            continue
        memo: dict[Any, Any] = {}

        def convert(v: Any, proc: Callable[[Any], Any] = proc, memo: dict[Any, Any] = memo) -> Any:
            if v is None:
                return None
            try:
                return memo[v]
            except KeyError:
                memo[v] = proc(v)
                return memo[v]
            except TypeError:  # unhashable (JSON documents)
                return proc(v)

        out.append((i, convert))
    return out


def _prepared(table: Table, columns: Sequence[str], rows: Sequence[Row], dialect: Any) -> Any:
    conv = _converters(table, columns, dialect)
    if not conv:
        return rows
    # Column by column, back to tuples: a chunk is thousands of rows, and a list per row was both
    # the loop's time and work for the garbage collector (lists stay tracked, these tuples do not).
    cols = list(zip(*rows, strict=True))
    for i, f in conv:
        cols[i] = tuple(map(f, cols[i]))
    return list(zip(*cols, strict=True))


def insert(
    session: Session,
    clause: FromClause,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    conflict: Sequence[str] = (),
    add_on_conflict: str | None = None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT rows; ON CONFLICT (conflict) DO NOTHING, or add `add_on_conflict`'s value to it.

    With `returning`, the rows this statement wrote (a conflicting row is not among them).
    """
    if not rows:
        return []
    table = _table(clause)
    _known(
        table, [*columns, *conflict, *returning, *([add_on_conflict] if add_on_conflict else [])]
    )
    dbapi, mark, dialect = _driver(session)
    if dialect.name == "postgresql":
        return _insert_pg(
            dbapi, dialect, table, columns, rows, conflict, add_on_conflict, returning
        )
    values = _prepared(table, columns, rows, dialect)
    # Names only from the table's own metadata (checked above); every value is a parameter.
    head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "  # noqa: S608
    tail = ""
    if conflict:
        target = ", ".join(conflict)
        if add_on_conflict:
            c = add_on_conflict
            tail = f" ON CONFLICT ({target}) DO UPDATE SET {c} = {table.name}.{c} + excluded.{c}"
        else:
            tail = f" ON CONFLICT ({target}) DO NOTHING"
    one = "(" + ", ".join([mark] * len(columns)) + ")"
    cur = dbapi.cursor()
    try:
        if not returning:
            cur.executemany(head + one + tail, values)
            return []
        tail += " RETURNING " + ", ".join(returning)
        per = max(1, _MAX_PARAMS // len(columns))
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(values), per):
            part = values[start : start + per]
            cur.execute(
                head + ", ".join([one] * len(part)) + tail, [v for row in part for v in row]
            )
            out += [tuple(r) for r in cur.fetchall()]
        return out
    finally:
        cur.close()


def _as_text(memo: dict[Any, str]) -> Callable[[Any], str]:
    """JSON's fallback for values it has no type for: times and dates as ISO 8601, once each."""

    def text(v: Any) -> str:
        try:
            return memo[v]
        except KeyError:
            pass
        if isinstance(v, datetime | date | dtime):
            memo[v] = v.isoformat()
        elif isinstance(v, Decimal | UUID):
            memo[v] = str(v)
        else:
            raise TypeError(f"no bulk text for {type(v).__name__}")
        return memo[v]

    return text


def _arrays(dialect: Any, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> Any:
    """One JSON array per column (PostgreSQL), with how to read each element back as its type.

    A JSON array of a column's values is one C-speed `json.dumps`; psycopg's own array dumper
    went value by value in Python (a regular expression each), most of the bundle run's CPU
    there. The server reads the elements back as text (`json_array_elements_text`, JSON null is
    SQL NULL) and casts each to the column's type, as it would cast a text parameter.
    """
    plain = [i for i, name in enumerate(columns) if not isinstance(table.c[name].type, JSON)]
    # Bind processors (memoized, as on SQLite) for every column but JSON documents, which are
    # sent as their own text and cast back: psycopg's own dumps, as for the ORM's JSON values.
    conv = [(i, f) for i, f in _converters(table, columns, dialect) if i in plain]
    cols: list[Sequence[Any]] = [list(c) for c in zip(*rows, strict=True)]
    for i, f in conv:
        cols[i] = list(map(f, cols[i]))
    text = _as_text({})
    params, reads = [], []
    for i, name in enumerate(columns):
        kind = table.c[name].type
        values = cols[i]
        if i not in plain:
            values = [None if v is None else json.dumps(v) for v in values]
        params.append(json.dumps(values, default=text))
        reads.append(f"c{i}::{kind.compile(dialect=dialect)}")
    return params, reads


def _elements(n: int) -> str:
    """The FROM clause that zips n JSON array parameters into rows (c0 … cn-1)."""
    arrays = ", ".join(["json_array_elements_text(%s::json)"] * n)
    return f"ROWS FROM ({arrays}) AS u({', '.join(f'c{i}' for i in range(n))})"


def _insert_pg(
    dbapi: Any,
    dialect: Any,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    conflict: Sequence[str],
    add_on_conflict: str | None,
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """INSERT … SELECT FROM unnest(one array per column): a short statement, whatever the rows."""
    params, reads = _arrays(dialect, table, columns, rows)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)})"  # noqa: S608 (names from metadata)
        f" SELECT {', '.join(reads)} FROM {_elements(len(columns))}"
    )
    if conflict:
        target = ", ".join(conflict)
        if add_on_conflict:
            c = add_on_conflict
            sql += f" ON CONFLICT ({target}) DO UPDATE SET {c} = {table.name}.{c} + excluded.{c}"
        else:
            sql += f" ON CONFLICT ({target}) DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(returning)
    cur = dbapi.cursor()
    try:
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()] if returning else []
    finally:
        cur.close()


def update_by_key(
    session: Session, clause: FromClause, *, key: str, column: str, pairs: Sequence[tuple[Any, Any]]
) -> None:
    """SET column = value WHERE key = k for each (k, value), as one executemany."""
    if not pairs:
        return
    table = _table(clause)
    dbapi, mark, dialect = _driver(session)
    _known(table, [key, column])
    if dialect.name == "postgresql":
        params, reads = _arrays(dialect, table, [key, column], pairs)
        cur = dbapi.cursor()
        try:
            cur.execute(
                f"UPDATE {table.name} SET {column} = {reads[1]}"  # noqa: S608 (from metadata)
                f" FROM {_elements(2)} WHERE {table.name}.{key} = {reads[0]}",
                params,
            )
        finally:
            cur.close()
        return
    values = _prepared(table, [column, key], [(v, k) for k, v in pairs], dialect)
    cur = dbapi.cursor()
    try:
        sql = f"UPDATE {table.name} SET {column} = {mark} WHERE {key} = {mark}"  # noqa: S608
        cur.executemany(sql, values)
    finally:
        cur.close()
