"""Ledger engine, declarative Base, request session and unit of work."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every ledger model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# How long a SQLite writer waits for the one write lock before it gives up ("database is locked").
BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the console read while a job writes; busy_timeout waits instead of failing. The
    # driver's own BEGIN comes just before a transaction's first write, so the wait covers it:
    # reads before it hold no snapshot that a writer's commit could make stale (SQLITE_BUSY at
    # once, busy_timeout or not). A write transaction therefore waits only for other writers,
    # which is why batch jobs keep theirs short (Pacer below).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the ledger URL, with SQLite tuned for one file shared by several processes."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


# What one batch transaction may cost on SQLite, where every writer shares one write lock: an
# interactive writer (a sign-in, a claim) waits at most about this long, far inside busy_timeout.
BATCH_BUDGET_S = 0.1
# The gap a batch leaves after each commit. SQLite has no queue for its lock: a waiter polls it
# (after 10 ms every 10-25 ms, later every 100 ms), so a batch that began again at once would
# win nearly every race. A gap a fifth of the budget lets a waiter in within a few polls.
BATCH_PAUSE_S = 0.02
# Locks that ran out (SQLite's busy_timeout; PostgreSQL's lock_timeout, a serialization failure
# or a deadlock that no retry absorbed): the work can succeed if tried again in a moment.
_SQLITE_BUSY = ("database is locked", "database table is locked")
_PG_BUSY = frozenset({"55P03", "40001", "40P01"})


def is_busy(exc: BaseException) -> bool:
    """Whether a database error is a lock that could not be had in time (worth retrying later)."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig).startswith(_SQLITE_BUSY)
    return getattr(orig, "sqlstate", None) in _PG_BUSY


class Pacer:
    """Sizes a batch job's transactions by time, so interactive writers get SQLite's lock in turn.

    Each job keeps its own chunk size as the ceiling; on SQLite a chunk shrinks to what fits in
    `BATCH_BUDGET_S` at the rate measured so far, and the job pauses briefly after each commit.
    PostgreSQL locks rows, not the file: there the chunks stay as they were and nobody pauses.
    """

    def __init__(self, sessions: sessionmaker[Session], *, most: int, first: int = 20) -> None:
        bind = sessions.kw.get("bind")
        self.shared_lock = bind is None or bind.dialect.name == "sqlite"
        self.most = max(1, most)
        self.size = min(first, self.most) if self.shared_lock else self.most
        self.transactions = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Time one transaction of `size` rows (the body commits); size the next; give way."""
        started = time.perf_counter()
        yield
        self.transactions += 1
        if not self.shared_lock:
            return
        spent = max(time.perf_counter() - started, 1e-4)
        fits = int(self.size * BATCH_BUDGET_S / spent)
        # Grow at most fourfold a turn: one fast chunk (cached rows) is no promise for the next.
        self.size = max(1, min(self.most, fits, self.size * 4))
        time.sleep(BATCH_PAUSE_S)

    def chunks(self, items: Sequence[T]) -> Iterator[Sequence[T]]:
        """`items` in consecutive chunks of the current size; commit each in the loop's body."""
        start = 0
        while start < len(items):
            part = items[start : start + self.size]
            with self.turn():
                yield part
            start += len(part)


def chunked_commits(
    sessions: sessionmaker[Session], items: Sequence[T], *, most: int
) -> Iterator[Sequence[T]]:
    """`items` in chunks a batch job commits one by one (each within the SQLite budget)."""
    return Pacer(sessions, most=most).chunks(items)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that rolls back unless the caller commits: CLI and jobs own their transaction."""
    session = factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC times and gives them back aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use kit.clock.now()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def postgres_driver(session: Session) -> Any | None:
    """The psycopg connection under the session's own transaction, or None off PostgreSQL.

    For the few bulk statements of the flash-sale claim path only: executed on the driver they
    skip SQLAlchemy's per-statement work (compiled-cache lookup, result metadata), which was a
    large share of a claim's server CPU, and stay inside the same transaction.
    """
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return None
    return conn.connection.driver_connection
