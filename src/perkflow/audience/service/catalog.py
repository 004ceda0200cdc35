"""The catalog of what rules may test: profile and feature columns, scores, segments; parsing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.rules import Catalog, ColumnSpec, Definition, InvalidDefinition, Kind
from perkflow.errors import NotFound
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor

from ._common import _visible, invalid

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
else:
    pa = lazy_module("pyarrow")
    pc = lazy_module("pyarrow.compute")
    pq = lazy_module("pyarrow.parquet")


# String columns with at most this many distinct values get a vocabulary: typos become errors.
VOCABULARY_LIMIT = 200

_catalog_cache: dict[tuple[str, int], dict[str, ColumnSpec]] = {}


def _kind(arrow_type: pa.DataType) -> Kind | None:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type):
        return Kind.INTEGER
    if pa.types.is_floating(arrow_type):
        return Kind.NUMBER
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return Kind.STRING
    if pa.types.is_date(arrow_type):
        return Kind.DATE
    if pa.types.is_boolean(arrow_type):
        return Kind.BOOLEAN
    if pa.types.is_timestamp(arrow_type):
        return Kind.TIMESTAMP
    return None


def profile_columns(mart: Mart) -> dict[str, ColumnSpec]:
    """The profile's columns with their kinds and small vocabularies (cached per file version)."""
    path = mart.path(marts.PROFILE)
    if not path.exists():
        raise NotFound(
            "the mart has no subscriber profile yet; run `perkflow synth` first", field="mart"
        )
    key = (str(path), path.stat().st_mtime_ns)
    cached = _catalog_cache.get(key)
    if cached is not None:
        return cached
    schema = pq.read_schema(path)
    kinds = {f.name: _kind(f.type) for f in schema}
    strings = [n for n, k in kinds.items() if k == Kind.STRING]
    vocab: dict[str, tuple[str, ...] | None] = {}
    if strings:
        table = pq.read_table(path, columns=strings, read_dictionary=strings)
        for name in strings:
            values = pc.unique(table[name].combine_chunks().dictionary_decode())
            distinct = sorted(v for v in values.to_pylist() if v is not None)
            vocab[name] = tuple(distinct) if len(distinct) <= VOCABULARY_LIMIT else None
    columns = {
        name: ColumnSpec(name=name, kind=kind, values=vocab.get(name))
        for name, kind in kinds.items()
        if kind is not None
    }
    _catalog_cache.clear()  # one profile at a time is all a process reads
    _catalog_cache[key] = columns
    return columns


def feature_columns(mart: Mart) -> dict[str, ColumnSpec]:
    """Response features a rule may test (none before the first write-back); profile names win."""
    if not mart.has(marts.RESPONSE_FEATURES):
        return {}
    profile = profile_columns(mart)
    out: dict[str, ColumnSpec] = {}
    for f in pq.read_schema(mart.path(marts.RESPONSE_FEATURES)):
        kind = _kind(f.type)
        if kind is None or f.name in marts.FEATURE_COLUMNS_HIDDEN or f.name in profile:
            continue
        out[f.name] = ColumnSpec(name=f.name, kind=kind)
    return out


def _score_models(mart: Mart) -> frozenset[str]:
    if not mart.has(marts.MODEL_SCORES):
        return frozenset()
    table = pq.read_table(mart.path(marts.MODEL_SCORES), columns=["model"])
    return frozenset(str(v) for v in pc.unique(table["model"]).to_pylist() if v is not None)


def catalog_for(session: Session, *, mart: Mart, actor: Actor) -> Catalog:
    """What the actor's definitions may refer to."""
    columns = profile_columns(mart)
    features = feature_columns(mart)
    province = org.visible_province(actor)
    segments = repo.latest_versions(session, province=None)
    if province is not None:
        visible = {s.id for s in repo.list_segments(session, province=None) if _visible(s, actor)}
        segments = {k: v for k, v in segments.items() if k in visible}
    return Catalog(
        columns={**columns, **features},
        score_columns=frozenset(c for c in ("churn_risk",) if c in columns),
        score_models=_score_models(mart),
        feature_columns=frozenset(features),
        segments=segments,
    )


def parse(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> Definition:
    """A validated definition; 422 naming the path of the bad node otherwise."""
    try:
        return rules.parse_definition(raw, catalog_for(session, mart=mart, actor=actor))
    except InvalidDefinition as exc:
        raise invalid(exc) from exc


def load_definition_text(text: str, *, filename: str = "") -> Any:
    """A definition or template read from JSON or YAML text (422 when it is neither)."""
    try:
        return rules.load_text(text, filename=filename)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
