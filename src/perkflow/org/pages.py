"""Console pages of the organisation: sign-in, language, audit log."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.errors import TooManyRequests
from perkflow.kit.ids import token
from perkflow.kit.pagination import Page
from perkflow.org import service as org
from perkflow.web.auth import CsrfProtected, DbSession, Staff, client_ip, csrf_token
from perkflow.web.i18n import LANG_COOKIE, LOCALES
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only same-site absolute paths: an open redirect after sign-in would help phishing. Browsers
    # read a backslash as `/` and drop tabs and newlines, and a proxy may decode `%2F` before
    # routing, so the path of every decoded form of the target must be a plain path too.
    def plain(text: str) -> bool:
        if not text.startswith("/") or text[1:2] in ("/", "\\") or "\\" in text:
            return False
        return all(c.isprintable() and not c.isspace() for c in text)

    if not target or len(target) > 2048 or not plain(target):
        return "/console"
    form = target
    for _ in range(4):
        decoded = unquote(form)
        if decoded == form:
            break
        form = decoded
        if not plain(re.split(r"[?#]", form, maxsplit=1)[0]):
            return "/console"
    else:
        return "/console"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/console"
    return parts.path + (f"?{parts.query}" if parts.query else "")


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    csrf_token(request)
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", dependencies=[CsrfProtected])
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form()] = "/console",
) -> Response:
    settings = request.app.state.settings
    try:
        # The try is counted in its own transaction, committed before the password is checked:
        # parallel guesses each see the others' turns, so at most the limit are ever verified.
        with request.app.state.sessions() as turns:
            turn = org.take_sign_in_turn(
                turns,
                username=username.strip(),
                ip=client_ip(request),
                max_failures=settings.login_max_failures,
                window_s=settings.login_window_s,
            )
            turns.commit()
    except TooManyRequests as exc:
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "locked", "message": exc.message},
            status_code=429,
        )
    # The try is recorded whatever its outcome, and a wrong password answers 401, which rolls the
    # request's transaction back (web/auth.doom): the check has its own transaction, committed here.
    with request.app.state.sessions() as attempt:
        result = org.sign_in(attempt, turn=turn, password=password)
        attempt.commit()
    if result.user is None:
        return render(
            request, "login.html", {"next": _safe_next(next), "error": "wrong"}, status_code=401
        )
    # A fresh session on sign-in: nothing from before (a planted token) carries over.
    request.session.clear()
    request.session["staff_id"] = result.user.id
    request.session["epoch"] = result.user.session_epoch
    request.session["csrf"] = token(24)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", dependencies=[CsrfProtected])
def logout(request: Request, session: DbSession) -> Response:
    staff_id = request.session.get("staff_id")
    epoch = request.session.get("epoch")
    if staff_id and org.staff_of_session(session, staff_id=int(staff_id), epoch=epoch):
        # Ends this session everywhere: a copy of the cookie taken before logout stops working.
        org.end_sessions(session, staff_id=int(staff_id))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/lang/{code}")
def switch_language(code: str, next: str | None = None) -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    if code in LOCALES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="lax")
    return response


@router.get("/console/audit")
def audit_log(
    request: Request,
    staff: Staff,
    session: DbSession,
    page: Annotated[int, Query(ge=1)] = 1,
    action: str | None = None,
) -> Response:
    size = 50
    rows, total = org.list_audit(
        session, actor=staff.actor, offset=(page - 1) * size, limit=size, action=action or None
    )
    return render(
        request,
        "audit.html",
        {"rows": rows, "page": Page(number=page, size=size, total=total), "action": action or ""},
    )
