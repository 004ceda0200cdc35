"""The mart: Ibis over DuckDB, tables stored as Parquet under the home."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perkflow.kit.lazy import lazy_module
from perkflow.settings import Settings

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")


class Mart:
    """Named Parquet tables read through one Ibis backend (DuckDB by default)."""

    def __init__(self, root: Path, backend: Any | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._backend = backend
        # Connections by thread, owned here rather than in thread-local storage: a DuckDB connection
        # must be closed by its owner, not by a pool thread that ends on its own while the
        # interpreter exits (its destructor then aborts the process).
        self._cons: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def con(self) -> Any:
        """The given backend, or this thread's own DuckDB connection."""
        # One DuckDB connection refuses a second call while one runs ("connection is busy"), and
        # the web app serves requests from a thread pool: each thread gets its own connection.
        if self._backend is not None:
            return self._backend
        key = threading.get_ident()
        con = self._cons.get(key)
        if con is None:
            # A thread id is reused only once its thread has ended: its connection is free again.
            con = ibis.duckdb.connect()
            with self._lock:
                self._cons[key] = con
        return con

    def close(self) -> None:
        """Close every connection this mart opened (the next read opens a new one)."""
        with self._lock:
            cons, self._cons = list(self._cons.values()), {}
        for con in cons:
            con.disconnect()

    def path(self, name: str) -> Path:
        """Where a table's Parquet file lives."""
        return self.root / f"{name}.parquet"

    def has(self, name: str) -> bool:
        """Whether the table has been written."""
        return self.path(name).exists()

    def table(self, name: str) -> Any:
        """An Ibis table expression over the stored Parquet file."""
        if not self.has(name):
            raise LookupError(f"mart table {name!r} does not exist; run `perkflow synth` first")
        return self.con.read_parquet(str(self.path(name)), table_name=name)

    def write(self, name: str, table: pa.Table) -> Path:
        """Replace a table atomically: readers see the old file or the new one, never half."""
        target = self.path(name)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(target)
        return target

    def check(self) -> None:
        """Raise unless the mart answers: its folder can be listed and the engine runs a query."""
        with os.scandir(self.root):
            pass
        self.con.to_pyarrow(ibis.literal(1).name("ok"))

    def tables(self) -> list[str]:
        """Names of the stored tables."""
        return sorted(p.stem for p in self.root.glob("*.parquet"))


def open_mart(settings: Settings) -> Mart:
    """The mart of a home."""
    return Mart(settings.mart_dir)
