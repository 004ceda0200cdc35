"""The ledger engine's helpers: batch transactions sized by time, lock errors told apart."""

from __future__ import annotations

import sqlite3
import time

import psycopg.errors
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from perkflow import db
from perkflow.db import Pacer, is_busy, make_engine, make_session_factory


def test_a_slow_batch_commits_in_chunks_that_fit_the_budget_and_skips_nothing(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setattr(db, "BATCH_PAUSE_S", 0.0)
    pacer = Pacer(make_session_factory(make_engine(sqlite_url)), most=1000)
    items = list(range(300))
    seen: list[int] = []
    sizes: list[int] = []
    for part in pacer.chunks(items):
        time.sleep(0.005 * len(part))  # 5 ms a row: 20 rows fit in the 100 ms budget
        seen += part
        sizes.append(len(part))
    assert seen == items
    assert max(sizes) <= 40 and max(sizes[2:-1]) <= 25, sizes
    assert pacer.transactions == len(sizes)


def test_a_fast_batch_grows_to_its_own_chunk_size() -> None:
    pacer = Pacer(make_session_factory(make_engine("sqlite://")), most=500)
    sizes = [len(part) for part in pacer.chunks(list(range(3000)))]
    assert sizes[0] == 20 and max(sizes) == 500 and sum(sizes) == 3000


def test_postgresql_batches_keep_their_chunk_size_and_never_pause() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    pacer = Pacer(make_session_factory(engine), most=1000)
    started = time.perf_counter()
    sizes = [len(part) for part in pacer.chunks(list(range(2500)))]
    assert sizes == [1000, 1000, 500]
    assert time.perf_counter() - started < 0.01


def test_busy_tells_a_lock_that_ran_out_from_other_database_errors() -> None:
    def wrapped(orig: Exception) -> OperationalError:
        return OperationalError("SELECT 1", {}, orig)

    assert is_busy(wrapped(sqlite3.OperationalError("database is locked")))
    assert is_busy(wrapped(sqlite3.OperationalError("database table is locked: members")))
    assert not is_busy(wrapped(sqlite3.OperationalError("no such table: members")))
    assert not is_busy(wrapped(sqlite3.OperationalError("disk I/O error")))
    for busy in (
        psycopg.errors.LockNotAvailable,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
    ):
        assert is_busy(wrapped(busy("lock"))) and is_busy(busy("raw driver"))
    assert not is_busy(wrapped(psycopg.errors.ConnectionFailure("server closed")))
