"""Jinja2 environment and the one function pages use to render."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from perkflow.kit.money import format_fen
from perkflow.web.auth import doom
from perkflow.web.i18n import LANG_COOKIE, localize, pick_locale, translate_text, translations


def _tojson(value: Any) -> Markup:
    # Safe inside <script type="application/json">: no closing tag can be smuggled in.
    text = json.dumps(value, ensure_ascii=False).replace("</", "<\\/")
    return Markup(text)  # noqa: S704


def build_env() -> Environment:
    """The template environment, loading from the package."""
    folder = str(resources.files("perkflow").joinpath("web/templates"))
    env = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]))
    env.filters["fen"] = format_fen
    env.filters["chartjson"] = _tojson
    return env


def request_locale(request: Request) -> str:
    """The locale of this request."""
    return pick_locale(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render a page in the request's language with the shared layout values.

    A page answered with 4xx is a refusal: it dooms the request, so its transaction is rolled
    back instead of committed (`web.auth.doom`).
    """
    if 400 <= status_code < 500:
        doom(request)
    env: Environment = request.app.state.templates
    locale = request_locale(request)
    trans = translations(locale)
    zone = ZoneInfo(request.app.state.settings.timezone)

    def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(zone).strftime(fmt) if value else ""

    def rname(region: Any) -> str:
        if region is None:
            return ""
        return str(region.name_zh if locale == "zh_CN" else region.name_en)

    def tr(value: Any) -> Any:
        # A domain error's text is looked up in the catalog (web/i18n.translate_text); shown
        # as it is when the catalog has no translation for it.
        if isinstance(value, str):
            return translate_text(value, trans) or value
        return localize(value, trans)

    values: dict[str, Any] = {
        "request": request,
        "_": trans.gettext,
        "ngettext": trans.ngettext,
        "pgettext": trans.pgettext,
        "npgettext": trans.npgettext,
        # Messages marked in Python (l_/lp_ in web/i18n.py) are translated here, in this
        # request's language: the values passed below and any the template meets (`tr`).
        "tr": tr,
        "locale": locale,
        "localtime": localtime,
        "rname": rname,
        "csrf_token": request.session.get("csrf", ""),
        "current": getattr(request.state, "staff_context", None),
    }
    values.update(localize(context or {}, trans))
    html = env.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code)
