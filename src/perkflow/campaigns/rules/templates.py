"""Message templates: the sandbox, the fields a template may use, region names, rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from .spec import DEFAULT_LOCALE

# What a template may use; the values are filled from the profile, the offer and the ledger.
FIELDS = ("plan_fee_yuan", "province", "city", "offer_name", "masked_phone", "campaign_name")
SAMPLE_FIELDS: dict[str, Any] = {
    "plan_fee_yuan": 79,
    "province": "广东",
    "city": "广州",
    "offer_name": "视频会员月卡",
    "masked_phone": "138****1234",
    "campaign_name": "campaign",
}
# Fields that hold a region code in a contact's row and a region's name in the message.
REGION_FIELDS = ("province", "city")
# How copy names a region: 广东 for 广东省, 广西 for 广西壮族自治区, 广州 for 广州市.
_ZH_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")


def template_env() -> SandboxedEnvironment:
    """Jinja in a sandbox: no attribute tricks, an unknown name is an error, not an empty string."""
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


_ENV = template_env()


def template_problem(source: str) -> str | None:
    """Why a template cannot be used (syntax, unknown field, fails on sample values), or None."""
    try:
        parsed = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(FIELDS))
    if unknown:
        return f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})"
    try:
        _ENV.from_string(source).render(**SAMPLE_FIELDS)
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        return f"template fails on sample values: {exc}"
    return None


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Compiling costs ~0.5 ms; a campaign has a handful of templates and renders them per contact.
    return _ENV.from_string(source)


@lru_cache(maxsize=256)
def template_fields(source: str) -> frozenset[str]:
    """The fields a template reads; its text depends on their values alone."""
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def short_name_zh(name: str) -> str:
    """A region's Chinese name as a message says it (广东省 → 广东, 广州市 → 广州)."""
    for suffix in _ZH_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return name


def region_names(regions: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """code → locale → name, from (code, Chinese name, English name) of the region tree."""
    return {code: {"zh_CN": short_name_zh(zh), "en": en} for code, zh, en in regions}


def message_fields(
    fields: Mapping[str, Any], *, regions: Mapping[str, Mapping[str, str]], locale: str
) -> dict[str, Any]:
    """A contact's fields as its message shows them: region codes become names in its language."""
    out = dict(fields)
    for name in REGION_FIELDS:
        code = out.get(name)
        if isinstance(code, str) and code in regions:
            out[name] = regions[code].get(locale) or regions[code].get(DEFAULT_LOCALE) or code
    return out


def render(source: str, fields: Mapping[str, Any]) -> str:
    """Render a validated template with a subscriber's fields."""
    return _compiled(source).render(**{**SAMPLE_FIELDS, **fields})
