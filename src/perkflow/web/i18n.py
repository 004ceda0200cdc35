"""zh_CN / en: Babel catalogs compiled in memory at start, chosen by cookie or browser language."""

from __future__ import annotations

import gettext
import re
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

from babel.core import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
LANG_COOKIE = "perkflow_lang"


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The catalog of a locale; English is the source language and needs none."""
    if locale == "en":
        return gettext.NullTranslations()
    po = resources.files("perkflow").joinpath(f"locale/{locale}/LC_MESSAGES/messages.po")
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buf = BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


def pick_locale(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's choice if valid, else the best match of the browser's languages."""
    if cookie in LOCALES:
        return cookie
    if accept_language:
        preferred = []
        for part in accept_language.split(","):
            tag = part.split(";")[0].strip().replace("-", "_")
            if tag:
                preferred.append(tag)
        aliases = {"zh": "zh_CN", "zh_Hans": "zh_CN", "zh_Hans_CN": "zh_CN", "en_US": "en"}
        found = negotiate_locale(preferred, list(LOCALES), aliases=aliases)
        if found in LOCALES:
            return found
        for tag in preferred:
            if tag.lower().startswith("zh"):
                return "zh_CN"
            if tag.lower().startswith("en"):
                return "en"
    return DEFAULT_LOCALE


class Msg(str):
    """A message marked for translation, shown in the reader's language when a page renders.

    It is a str holding the English text (so logs, JSON and tests read it as before) that also
    keeps its msgid, context and parameters, so `localize` can translate it later, in the locale
    of the request that shows it.
    """

    msgid: str
    context: str | None
    params: dict[str, Any]

    def __new__(cls, msgid: str, context: str | None = None, **params: Any) -> Msg:
        text = msgid.format(**params) if params else msgid
        self = super().__new__(cls, text)
        self.msgid, self.context, self.params = msgid, context, params
        return self

    def in_language(self, trans: gettext.NullTranslations) -> str:
        """This message in the language of `trans`, its parameters filled in."""
        if self.context is None:
            text = trans.gettext(self.msgid)
        else:
            text = trans.pgettext(self.context, self.msgid)
        params = {k: localize(v, trans) for k, v in self.params.items()}
        return text.format(**params) if params else text


def l_(msgid: str, **params: Any) -> Msg:
    """Mark a message for translation at render time (`{name}` placeholders filled from params)."""
    return Msg(msgid, None, **params)


def lp_(context: str, msgid: str, **params: Any) -> Msg:
    """`l_` with a context, for a word whose translation depends on where it is used."""
    return Msg(msgid, context, **params)


def localize(value: Any, trans: gettext.NullTranslations) -> Any:
    """`value` with every Msg in it (dicts, lists, tuples) translated; other values as they are."""
    if isinstance(value, Msg):
        return value.in_language(trans)
    if isinstance(value, dict):
        return {k: localize(v, trans) for k, v in value.items()}
    if isinstance(value, list):
        return [localize(v, trans) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(localize(v, trans) for v in value)
    return value


def translate_text(text: str, trans: gettext.NullTranslations) -> str | None:
    """A plain message (a domain error's text) in the catalog's language, None if it has none.

    Messages with values in them are catalogued with `{placeholders}` (marked in web/terms.py);
    the text is matched against those patterns and the values carried over.
    """
    if isinstance(text, Msg):
        return text.in_language(trans)
    if isinstance(trans, Translations):
        found = trans.gettext(text)
        if found != text:
            return found
        for pattern, msgid in _patterns():
            m = pattern.fullmatch(text)
            if m:
                translated = trans.gettext(msgid)
                if translated != msgid:
                    return translated.format(**m.groupdict())
        # "field: problem", the way form pages name the field they refuse: the field as sent.
        named = _NAMED.fullmatch(text)
        if named:
            rest = translate_text(named["problem"], trans)
            if rest is not None:
                return f"{named['field']}{trans.pgettext('punctuation', ': ')}{rest}"
        return None
    return text


_NAMED = re.compile(r"(?P<field>[\w.\[\]-]+): (?P<problem>.+)", re.S)


@cache
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    from perkflow.web.terms import MESSAGE_PATTERNS

    found = []
    for msgid in [*MESSAGE_PATTERNS, *(m for m in _VALIDATION.values() if "{" in m)]:
        parts = re.split(r"\{(\w+)\}", msgid)
        regex = "".join(
            re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)
        )
        found.append((re.compile(regex), msgid))
    return found


def N_(message: str) -> str:  # noqa: N802  (gettext's conventional marker name)
    """Mark a string for extraction without translating it here."""
    return message


# The edge's validation problems (pydantic error types) in words a reader of the page knows.
_VALIDATION = {
    "missing": N_("this field is required"),
    "int_parsing": N_("enter a whole number"),
    "int_type": N_("enter a whole number"),
    "int_from_float": N_("enter a whole number"),
    "float_parsing": N_("enter a number"),
    "float_type": N_("enter a number"),
    "decimal_parsing": N_("enter a number"),
    "bool_parsing": N_("choose yes or no"),
    "greater_than_equal": N_("enter {ge} or more"),
    "greater_than": N_("enter more than {gt}"),
    "less_than_equal": N_("enter {le} or less"),
    "less_than": N_("enter less than {lt}"),
    "string_too_short": N_("enter at least {min_length} characters"),
    "string_too_long": N_("enter at most {max_length} characters"),
    "too_short": N_("give at least {min_length} items"),
    "too_long": N_("give at most {max_length} items"),
    "string_pattern_mismatch": N_("the value does not have the expected form"),
    "enum": N_("choose one of the listed values"),
    "literal_error": N_("choose one of the listed values"),
    "date_parsing": N_("enter a date (YYYY-MM-DD)"),
    "date_from_datetime_parsing": N_("enter a date (YYYY-MM-DD)"),
    "datetime_parsing": N_("enter a date and time"),
    "datetime_from_date_parsing": N_("enter a date and time"),
    "time_parsing": N_("enter a time (HH:MM)"),
    "json_invalid": N_("the body is not valid JSON"),
    "extra_forbidden": N_("this field is not expected here"),
    "url_parsing": N_("enter a web address"),
    "string_type": N_("enter text"),
}


def validation_message(error: dict[str, Any], trans: gettext.NullTranslations) -> str:
    """One pydantic error in the reader's language; the catalog's generic words if unknown."""
    msgid = _VALIDATION.get(str(error.get("type")))
    if msgid is None:
        return trans.gettext(N_("the value is not valid"))
    ctx = {k: str(v) for k, v in (error.get("ctx") or {}).items()}
    try:
        return trans.gettext(msgid).format(**ctx)
    except (KeyError, IndexError):
        return trans.gettext(N_("the value is not valid"))


def validation_problem(error: Any) -> Msg:
    """One pydantic error as a message translated where it is shown (see validation_message)."""
    msgid = _VALIDATION.get(str(error.get("type")), N_("the value is not valid"))
    ctx = {k: str(v) for k, v in (error.get("ctx") or {}).items() if f"{{{k}}}" in msgid}
    if any(f"{{{name}}}" in msgid and name not in ctx for name in re.findall(r"\{(\w+)\}", msgid)):
        msgid = N_("the value is not valid")
        ctx = {}
    return Msg(msgid, None, **ctx)
