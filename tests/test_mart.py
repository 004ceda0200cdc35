"""The mart's DuckDB connections: one per thread, owned and closed by the mart."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from perkflow.mart import Mart


def _count(mart: Mart) -> int:
    return int(mart.table("t").count().to_pyarrow().as_py())


def test_each_thread_reads_through_its_own_connection_and_reuses_it(tmp_path: Path) -> None:
    mart = Mart(tmp_path)
    mart.write("t", pa.table({"x": [1, 2, 3]}))
    seen: dict[str, Any] = {}

    def read(name: str) -> None:
        assert _count(mart) == 3
        seen[name] = mart.con
        assert mart.con is seen[name]  # the same thread keeps its connection

    threads = [threading.Thread(target=read, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read("main")
    assert len({id(c) for c in seen.values()}) == 4


def test_close_disconnects_what_every_thread_opened(tmp_path: Path) -> None:
    # A pool thread that ends while the interpreter exits must not be the one to destroy a
    # connection (DuckDB's destructor then aborts the process): the mart holds them and closes them.
    mart = Mart(tmp_path)
    mart.write("t", pa.table({"x": [1]}))
    opened: list[Any] = []

    def read() -> None:
        _count(mart)
        opened.append(mart.con)

    worker = threading.Thread(target=read)
    worker.start()
    worker.join()
    read()
    mart.close()
    for con in opened:
        with pytest.raises(duckdb.ConnectionException):
            con.raw_sql("select 1")
    assert _count(mart) == 1  # a read after close opens a new connection
