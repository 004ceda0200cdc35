"""create_app(): API routers, console and H5 pages, error handling, sessions."""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow import __version__
from perkflow.audience import api as audience_api
from perkflow.audience import pages as audience_pages
from perkflow.campaigns import api as campaigns_api
from perkflow.campaigns import pages as campaigns_pages
from perkflow.catalog import api as catalog_api
from perkflow.catalog import pages as catalog_pages
from perkflow.channels import pages as channels_pages
from perkflow.coupons import api as coupons_api
from perkflow.coupons import pages as coupons_pages
from perkflow.coupons.claim_lane import ClaimLane
from perkflow.db import is_busy, make_engine, make_session_factory
from perkflow.envelopes import api as envelopes_api
from perkflow.envelopes import pages as envelopes_pages
from perkflow.errors import PerkflowError, Problem
from perkflow.grants import api as grants_api
from perkflow.grants import pages as grants_pages
from perkflow.insights import api as insights_api
from perkflow.insights import pages as insights_pages
from perkflow.kit.crypto import Vault
from perkflow.mart import open_mart
from perkflow.membership import api as membership_api
from perkflow.membership import pages as membership_pages
from perkflow.org import api as org_api
from perkflow.org import pages as org_pages
from perkflow.settings import Settings, get_settings
from perkflow.subscribers import api as subscribers_api
from perkflow.subscribers import pages as subscribers_pages
from perkflow.web import dashboard, h5
from perkflow.web.auth import LoginRequired, SubscriberLoginRequired
from perkflow.web.i18n import N_, translate_text, translations, validation_message
from perkflow.web.limits import AuthFirst, BodyLimit
from perkflow.web.metrics import check_stores, install_metrics
from perkflow.web.openapi import API_RESPONSES, field_problems, install_openapi
from perkflow.web.render import build_env, render, request_locale


class SecurityHeaders:
    """Headers every page needs: a Content-Security-Policy, no framing, no sniffing, no referrer."""

    # Scripts only from our own /static (htmx, ECharts, the page scripts; the inline <script>
    # blocks in templates are JSON data, which is never run). Styles allow inline: htmx adds
    # its indicator <style>, ECharts' tooltips carry style attributes. No eval: htmx runs with
    # allowEval off and no template uses hx-on or event-handler attributes.
    POLICY = (
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; font-src 'self'; connect-src 'self'; media-src 'self'; "
        b"object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    # FastAPI's /docs page is Swagger UI from its CDN, started by an inline script.
    DOCS_POLICY = (
        b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
        b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
        b"img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; "
        b"base-uri 'self'; frame-ancestors 'none'"
    )
    DOCS_PATHS = ("/docs", "/docs/oauth2-redirect")

    # Served over HTTPS (PERKFLOW_COOKIE_SECURE): browsers keep to HTTPS for a year.
    HSTS = (b"strict-transport-security", b"max-age=31536000")

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.DOCS_POLICY if scope["path"] in self.DOCS_PATHS else self.POLICY
        extra = [self.HSTS] if self.https else []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", policy),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    *extra,
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/v1") or request.url.path == "/healthz"


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def _json_invalid(error: Any, doc: Any) -> Problem:
    """The body's decode error as line and column, the way an editor shows them."""
    pos = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    text = doc if isinstance(doc, str) else ""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    reason = error.get("ctx", {}).get("error", "")
    where = f"invalid JSON at line {line} column {column}"
    return Problem("body", f"{where} ({reason})" if reason else where)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
UNSTORABLE = N_("a value is out of range or malformed")
# What a page says when the error's own words have no translation yet.
_GENERIC = {
    400: N_("The request could not be carried out."),
    403: N_("Your role or region does not allow this."),
    404: N_("What you asked for does not exist, or is outside your region."),
    405: N_("This address does not take that kind of request."),
    409: N_("This conflicts with the current state; reload the page and try again."),
    413: N_("What you sent is too large."),
    422: N_("Some of what you entered is not valid."),
    429: N_("Too many attempts; wait a moment and try again."),
}


def _error_page(request: Request, status: int, message: str, *, field: str = "") -> Response:
    """The error page in the reader's language: the message translated, else a general sentence.

    An untranslated message is still shown, marked as English, so nothing the reader could act on
    is hidden (the zh_CN page test lists such messages on the pages it visits).
    """
    trans = translations(request_locale(request))
    text = translate_text(message, trans)
    context: dict[str, Any] = {"status": status, "message": text, "field": field}
    if text is None:
        generic = _GENERIC.get(status, _GENERIC[400])
        context.update(message=trans.gettext(generic), original=message)
    return render(request, "error.html", context, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PerkflowError)
    async def domain_error(request: Request, exc: PerkflowError) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)
        return _error_page(request, exc.status_code, exc.message, field=exc.field or "")

    def invalid(
        request: Request, problems: list[Problem], pydantic: list[dict[str, Any]] | None = None
    ) -> Response:
        first = problems[0] if problems else Problem("", "invalid request")
        if _wants_json(request):
            body = {
                "code": "validation_failed",
                "message": first.text(),
                "field": first.path,
                "errors": field_problems(problems),
            }
            return JSONResponse({"error": body}, status_code=422)
        # A page shows the problem in the reader's language, naming the field as it is sent.
        trans = translations(request_locale(request))
        text = (
            validation_message(pydantic[0], trans)
            if pydantic
            else translate_text(first.message, trans) or first.message
        )
        context = {"status": 422, "message": text, "field": first.path}
        return render(request, "error.html", context, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            # The decoder's loc is ("body", character offset): the offset is no field.
            return invalid(request, [_json_invalid(errors[0], exc.body)])
        return invalid(
            request,
            [Problem(_field_of(e["loc"]), e["msg"]) for e in errors],
            [dict(e) for e in errors],
        )

    # The last resort: a value the edge's types let through but the ledger cannot store (an
    # integer beyond 64 bits, a NUL in PostgreSQL text) is the caller's error, never a 500.
    # The request's transaction is rolled back as for any error (web/auth.py).
    async def unstorable(request: Request, exc: Exception) -> Response:
        return invalid(request, [Problem("", UNSTORABLE)])

    app.add_exception_handler(DataError, unstorable)
    app.add_exception_handler(psycopg.DataError, unstorable)
    app.add_exception_handler(OverflowError, unstorable)

    # A lock that stayed taken past the wait (SQLite's busy_timeout behind a batch job, a
    # PostgreSQL lock timeout or serialization failure no retry absorbed) is not the caller's
    # fault nor a bug: nothing was written, and the same request succeeds a moment later.
    async def busy(request: Request, exc: Exception) -> Response:
        if not is_busy(exc):
            raise exc
        headers = {"Retry-After": "1"}
        message = "the ledger is busy; try again in a moment"
        if _wants_json(request):
            body = {"error": {"code": "busy", "message": message}}
            return JSONResponse(body, status_code=503, headers=headers)
        text = translations(request_locale(request)).gettext(
            "The ledger is busy with a batch job. Please try again in a moment."
        )
        page = render(request, "error.html", {"status": 503, "message": text}, status_code=503)
        page.headers.update(headers)
        return page

    app.add_exception_handler(OperationalError, busy)
    app.add_exception_handler(psycopg.OperationalError, busy)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if _wants_json(request):
            return JSONResponse(
                {"error": {"code": "unauthenticated", "message": "sign in"}}, status_code=401
            )
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(SubscriberLoginRequired)
    async def subscriber_login_required(request: Request, exc: SubscriberLoginRequired) -> Response:
        return render(request, "h5/expired.html", {"message": None}, status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            code = _HTTP_CODES.get(exc.status_code, "http_error")
            return JSONResponse(
                {"error": {"code": code, "message": str(exc.detail)}},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        page = _error_page(request, exc.status_code, str(exc.detail))
        if exc.headers:
            page.headers.update(exc.headers)
        return page


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The whole perkflow web application over one home's stores."""
    settings = settings or get_settings()
    engine = engine or make_engine(settings.ledger_url)
    vault = Vault(settings.master_secret)
    app = FastAPI(title="perkflow", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.vault = vault
    app.state.mart = open_mart(settings)
    app.state.templates = build_env()

    # Innermost of the middleware: bodies are bounded and anonymous API calls refused before
    # any route parses a body (web/limits.py).
    app.add_middleware(AuthFirst)
    app.add_middleware(
        BodyLimit, api_limit=settings.max_body_bytes, page_limit=settings.max_form_bytes
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=vault.signing_key,
        session_cookie="perkflow_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        # `Secure` once the console is reached over HTTPS: the cookie never travels in clear.
        https_only=settings.cookie_secure,
    )
    if settings.claim_fast_lane:
        # The flash-sale claims skip the framework (coupons/claim_lane.py), inside the security
        # headers so that its answers carry the app's own.
        app.add_middleware(ClaimLane)
    app.add_middleware(SecurityHeaders, https=settings.cookie_secure)
    # Outermost of all: every request is timed by route and logged, the claim lane's too.
    install_metrics(app, engine=engine)
    _install_error_handlers(app)

    static = str(resources.files("perkflow").joinpath("web/static"))
    app.mount("/static", StaticFiles(directory=static), name="static")
    for router in (
        # First: the flash-sale claim is the hottest route, and matching walks the routes in
        # order (about half of a claim's CPU went to route matching when it came late).
        coupons_api.router,
        envelopes_api.router,
        org_pages.router,
        dashboard.router,
        subscribers_pages.router,
        h5.router,
        org_api.router,
        subscribers_api.router,
        catalog_pages.router,
        catalog_api.router,
        grants_pages.router,
        grants_api.router,
        audience_pages.router,
        audience_api.router,
        coupons_pages.router,
        envelopes_pages.router,
        membership_pages.router,
        membership_api.router,
        channels_pages.router,
        insights_pages.router,
        insights_api.router,
        campaigns_api.router,
        campaigns_pages.router,
    ):
        # Every /v1 operation documents the errors it can answer (web/openapi.py).
        is_api = any(getattr(r, "path", "").startswith("/v1") for r in router.routes)
        app.include_router(router, responses=API_RESPONSES if is_api else None)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """Readiness for load balancers: both stores answer (503 names the one that does not)."""
        stores = check_stores(engine=app.state.engine, mart=app.state.mart)
        ok = all(v == "ok" for v in stores.values())
        body = {"status": "ok" if ok else "failing", "version": __version__, **stores}
        return JSONResponse(body, status_code=200 if ok else 503)

    install_openapi(app)
    return app
