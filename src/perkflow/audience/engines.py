"""The engines a mart can be read through: embedded DuckDB, or Spark (local mode here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perkflow.errors import ValidationFailed
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart

if TYPE_CHECKING:
    import ibis
else:
    ibis = lazy_module("ibis")

ENGINES = ("duckdb", "spark")
SPARK_MISSING = "the Spark engine needs `pip install perkflow[spark]`"


def _require_pyspark() -> None:
    # PySpark is an extra: a plain install reads the mart through DuckDB only.
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ValidationFailed(SPARK_MISSING, field="engine") from exc


def spark_session(*, cores: int = 2, app_name: str = "perkflow") -> Any:
    """A local-mode SparkSession bound to loopback, without its web UI, in UTC."""
    # The JVM reads this at launch: without it Spark binds to the first non-loopback address.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    _require_pyspark()
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Small data in tests and previews: a few partitions, not the default 200.
        .config("spark.sql.shuffle.partitions", str(max(2, cores)))
        # Contact times are UTC instants; the session must not shift them to the host's zone.
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def stop_spark(session: Any) -> None:
    """Stop a session and the JVM behind it, so no bridge thread outlives its user."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        # `stop()` ends the context but leaves py4j's gateway (its JVM and Python threads)
        # running until the interpreter exits; shut it so finalization meets no live bridge.
        gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


def open_engine_mart(root: Path, engine: str, *, spark: Any | None = None) -> Mart:
    """The mart under `root` read through the named engine."""
    if engine == "duckdb":
        return Mart(root)
    if engine == "spark":
        _require_pyspark()
        return Mart(root, backend=ibis.pyspark.connect(spark or spark_session()))
    raise ValidationFailed(f"engine must be one of {', '.join(ENGINES)}", field="engine")
