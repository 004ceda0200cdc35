"""zh_CN / en: Babel catalogs compiled in memory at start, chosen by cookie or browser language."""

from __future__ import annotations

import gettext
from functools import cache
from importlib import resources
from io import BytesIO

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
