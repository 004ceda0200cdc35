"""Self-service extraction (自助取数): templates, owner-only exports, their expiry and download."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import repository as repo
from perkflow.audience import rules
from perkflow.audience.models import ExtractionTemplate
from perkflow.audience.rules import InvalidDefinition
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.ids import token
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers

from ._common import _scope, invalid
from .catalog import catalog_for
from .compiling import sources

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")
    pa = lazy_module("pyarrow")
    pacsv = lazy_module("pyarrow.csv")
    pq = lazy_module("pyarrow.parquet")


Progress = Callable[[int, int], None]
EXPORT_BATCH = 50_000


def parse_template(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> rules.Template:
    """A validated template; 422 naming the bad part."""
    try:
        return rules.parse_template(raw, catalog_for(session, mart=mart, actor=actor))
    except InvalidDefinition as exc:
        raise invalid(exc) from exc


def save_template(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> ExtractionTemplate:
    """Create a template, or replace the one of the same name."""
    org.require(actor, Perm.EXTRACT_TEMPLATES)
    template = parse_template(session, mart=mart, actor=actor, raw=raw)
    body = rules.template_to_dict(template)
    now = clock.now()
    row = repo.get_template_by_name(session, template.name)
    action = "extraction_template.update"
    if row is None:
        action = "extraction_template.create"
        row = ExtractionTemplate(name=template.name, created_by=actor.name, created_at=now)
        session.add(row)
    row.body = body
    row.updated_at = now
    try:
        session.flush()  # the unique name decides between two first saves
    except IntegrityError as exc:
        raise Conflict(f"a template named {template.name!r} exists", field="name") from exc
    org.record_audit(
        session,
        actor=actor,
        action=action,
        target_type="extraction_template",
        target_id=str(row.id),
        details={"name": template.name, "columns": list(template.columns)},
    )
    return row


def list_templates(session: Session, *, actor: Actor) -> Sequence[ExtractionTemplate]:
    """Every saved template."""
    org.require(actor, Perm.EXTRACT)
    return repo.list_templates(session)


def get_template(session: Session, *, actor: Actor, template_id: int) -> ExtractionTemplate:
    """One template (404 otherwise)."""
    org.require(actor, Perm.EXTRACT)
    row = repo.get_template(session, template_id)
    if row is None:
        raise NotFound(f"no extraction template {template_id}", field="template_id")
    return row


@dataclass(frozen=True)
class ExtractionReport:
    """What one export wrote."""

    path: Path
    rows: int
    columns: tuple[str, ...]
    format: str
    revealed: bool
    seconds: float


def _writer(path: Path, fmt: str, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        return pq.ParquetWriter(path, schema, compression="zstd")
    return pacsv.CSVWriter(path, schema)


def run_extraction(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    vault: Vault,
    template_id: int,
    params: Mapping[str, Any],
    fmt: str,
    out_dir: Path,
    reveal: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
    ttl_s: int | None = None,
) -> ExtractionReport:
    """Export a template's rows to CSV or Parquet within the role's row limit; audited.

    The file is owner-only (0600). With `ttl_s`, `out_dir` is the home's exports folder: it is
    kept owner-only and exports older than `ttl_s` are deleted first (each deletion audited).
    """
    org.require(actor, Perm.EXTRACT)
    started = time.perf_counter()
    if fmt not in rules.EXPORT_FORMATS:
        raise ValidationFailed(
            f"format is one of {', '.join(rules.EXPORT_FORMATS)}", field="format"
        )
    if reveal:
        org.require(actor, Perm.PHONE_REVEAL)
    row = get_template(session, actor=actor, template_id=template_id)
    subscribers.export_statuses(session, mart=mart)  # churned in the ledger is churned here
    template = parse_template(session, mart=mart, actor=actor, raw=row.body)
    try:
        raw = rules.bind_params(template, params)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    src = sources(session, mart=mart, catalog=catalog, definition=definition)
    table = compiler.members(compiler.Scoped(definition, _scope(actor)), src, clock.now())
    total = int(table.count().to_pyarrow().as_py())
    allowed = rules.row_limit(actor)
    if limit is not None and limit < 1:
        raise ValidationFailed("limit is 1 or more", field="limit")
    if allowed is not None and allowed == 0:
        raise Forbidden("your role may not export rows")
    if allowed is not None and limit is not None and limit > allowed:
        raise ValidationFailed(f"your role may export at most {allowed:,} rows", field="limit")
    if allowed is not None and total > allowed and limit is None:
        raise ValidationFailed(
            f"this extraction has {total:,} rows; your role may export at most {allowed:,}: "
            "narrow it, or give a limit",
            field="limit",
        )
    rows_wanted = min(total, limit) if limit is not None else total
    mart_columns = [c for c in template.columns if c != rules.PHONE_COLUMN]
    if "subscriber_id" not in mart_columns:
        mart_columns = ["subscriber_id", *mart_columns]
    query = table.select(*mart_columns).order_by("subscriber_id").limit(rows_wanted)
    if ttl_s is not None:
        private_folder(out_dir)
        prune_exports(session, actor=actor, folder=out_dir, ttl_s=ttl_s)
    else:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{rules.safe_filename(template.name)}-{stamp}-{os.getpid()}-{token(4)}.{fmt}"
    tmp = path.with_suffix(path.suffix + ".part")
    # Created owner-only before a byte is written (a revealed export holds full phone numbers);
    # the writers reopen the existing file, which keeps its mode.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    written = 0
    writer = None
    try:
        # One Arrow result (bounded by the row limit), then batches: the phone join, the writer
        # and the progress bar go batch by batch. (Ibis's streaming reader is not used: it breaks
        # on DuckDB 2.)
        result = query.to_pyarrow()
        for batch in result.to_batches(max_chunksize=EXPORT_BATCH):
            chunk = pa.Table.from_batches([batch])
            if rules.PHONE_COLUMN in template.columns:
                ids = chunk["subscriber_id"].to_pylist()
                phones = subscribers.phones_for(
                    session,
                    actor=actor,
                    vault=vault,
                    subscriber_ids=ids,
                    reveal=reveal,
                    purpose=f"extraction_template:{row.id}",
                )
                chunk = chunk.append_column(
                    rules.PHONE_COLUMN, pa.array([phones.get(i) for i in ids], type=pa.string())
                )
            chunk = chunk.select(list(template.columns))
            # Dictionary-typed strings and float32 become plain types every reader takes.
            chunk = chunk.cast(_plain_schema(chunk.schema))
            if writer is None:
                writer = _writer(tmp, fmt, chunk.schema)
            writer.write_table(chunk)
            written += chunk.num_rows
            if progress is not None:
                progress(written, rows_wanted)
        if writer is None:
            empty = pa.schema([pa.field(c, pa.string()) for c in template.columns])
            writer = _writer(tmp, fmt, empty)
        writer.close()
        writer = None
    except BaseException:
        # A failed export leaves nothing behind (not even its first batches).
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    if progress is not None:
        progress(written, rows_wanted)
    org.record_audit(
        session,
        actor=actor,
        action="extraction.export",
        target_type="extraction_template",
        target_id=str(row.id),
        details={
            "name": template.name,
            "params": {k: str(v) for k, v in params.items()},
            "rows": written,
            "format": fmt,
            "columns": list(template.columns),
            "phones": "revealed" if reveal else "masked",
            "file": path.name,
        },
    )
    return ExtractionReport(
        path=path,
        rows=written,
        columns=template.columns,
        format=fmt,
        revealed=reveal,
        seconds=time.perf_counter() - started,
    )


# What an export leaves in its folder: the files, and a `.part` of one that was cut short.
_EXPORT_SUFFIXES = (".csv", ".parquet", ".part")


def private_folder(path: Path) -> Path:
    """The folder, owner-only (0700): created so, or narrowed when it exists wider."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


def prune_exports(session: Session, *, actor: Actor, folder: Path, ttl_s: int) -> list[str]:
    """Delete the exports in the folder older than `ttl_s`; each deletion audited; their names."""
    if not folder.is_dir():
        return []
    cutoff = clock.now().timestamp() - ttl_s
    gone: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.suffix not in _EXPORT_SUFFIXES:
            continue
        if entry.stat().st_mtime >= cutoff:
            continue
        entry.unlink(missing_ok=True)
        gone.append(entry.name)
        org.record_audit(
            session,
            actor=actor,
            action="extraction.expire",
            target_type="extraction_file",
            target_id=entry.name,
            details={"ttl_s": ttl_s},
        )
    return gone


def discard_export(session: Session, *, actor: Actor, path: Path, downloaded: bool) -> None:
    """Delete an export once it was sent (or its download broke off); audited."""
    path.unlink(missing_ok=True)
    org.record_audit(
        session,
        actor=actor,
        action="extraction.download" if downloaded else "extraction.download_failed",
        target_type="extraction_file",
        target_id=path.name,
        details={"deleted": True},
    )


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)
