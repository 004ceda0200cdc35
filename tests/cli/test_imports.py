"""The CLI starts without loading the analytics stack, and Spark is an extra asked for by name."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from perkflow.audience import engines
from perkflow.errors import ValidationFailed

HEAVY = {"scipy", "ibis", "pyarrow", "pyspark", "numpy", "duckdb", "sqlglot", "holidays", "alembic"}


def test_the_cli_imports_no_heavy_library() -> None:
    probe = (
        "import json, sys, perkflow.cli.main; "
        "roots = {m.split('.')[0] for m in sys.modules}; "
        f"print(json.dumps(sorted(roots & set({sorted(HEAVY)!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == []


def test_help_lists_the_commands_without_the_analytics_stack() -> None:
    perkflow = Path(sys.executable).with_name("perkflow")
    out = subprocess.run(
        [str(perkflow), "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    assert "segment" in out.stdout and "campaign" in out.stdout


def test_help_loads_no_capability() -> None:
    # `perkflow --help` lists every command from cli/main.py's table: neither the ledger's
    # libraries nor any capability's service is imported to answer it.
    probe = (
        "import json, sys\n"
        "from perkflow.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'argon2', "
        "'uvicorn', 'fastapi') or m.endswith('.service')]\n"
        "print(json.dumps(sorted(loaded)), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
    assert "campaign" in out.stdout and "partner-sim" in out.stdout


def test_each_listed_command_is_the_command_it_names() -> None:
    from perkflow.cli.main import COMMANDS

    for entry in COMMANDS:
        command = entry.load()
        assert command.name == entry.name
        # The listing's line is the command's own help, so the two cannot drift apart.
        assert (command.help or "").strip().splitlines()[0] == entry.help, entry.name


def test_the_written_out_z95_is_scipys() -> None:
    from scipy.stats import norm

    from perkflow.insights import rules

    assert float(norm.ppf(1 - rules.ALPHA / 2)) == rules.Z95


def test_mart_schemas_resolve_on_first_use() -> None:
    from perkflow.audience import marts

    assert marts.CONTACT_HISTORY_SCHEMA.field("contacted_at").type == marts.UTC_TS
    with pytest.raises(AttributeError):
        _ = marts.NO_SUCH_SCHEMA  # type: ignore[attr-defined]


@pytest.fixture
def no_pyspark(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fail_pyspark(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pyspark" or name.startswith("pyspark."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fail_pyspark)


@pytest.mark.usefixtures("no_pyspark")
def test_the_spark_engine_without_pyspark_says_which_extra(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        engines.open_engine_mart(tmp_path, "spark")
    assert str(caught.value) == "the Spark engine needs `pip install perkflow[spark]`"
    with pytest.raises(ValidationFailed, match=r"perkflow\[spark\]"):
        engines.spark_session()


@pytest.mark.usefixtures("no_pyspark")
def test_the_duckdb_engine_needs_no_pyspark(tmp_path: Path) -> None:
    assert engines.open_engine_mart(tmp_path, "duckdb") is not None
