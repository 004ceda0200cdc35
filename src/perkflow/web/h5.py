"""The subscriber's mobile H5 shell, entered through a signed one-click link."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.errors import Unauthenticated
from perkflow.org import service as org
from perkflow.subscribers import service as subscribers
from perkflow.web.auth import CsrfProtected, DbSession, SubscriberId, VaultDep
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/h5/enter", name="h5_enter")
def enter(request: Request, session: DbSession, vault: VaultDep, t: str = "") -> Response:
    try:
        sid = subscribers.redeem_login_token(
            session, vault=vault, signed=t, max_age_s=request.app.state.settings.h5_link_max_age_s
        )
    except Unauthenticated as exc:
        return render(request, "h5/expired.html", {"message": exc.message}, status_code=401)
    request.session.pop("staff_id", None)
    request.session["subscriber_id"] = sid
    return RedirectResponse("/h5", status_code=303)


@router.get("/h5")
def home(request: Request, sid: SubscriberId, session: DbSession, vault: VaultDep) -> Response:
    me = subscribers.subscriber_home(session, vault=vault, subscriber_id=sid)
    province = org.get_region(session, code=me.province_code)
    city = org.get_region(session, code=me.city_code)
    return render(request, "h5/home.html", {"me": me, "province": province, "city": city})


@router.post("/h5/logout", dependencies=[CsrfProtected])
def logout(request: Request) -> Response:
    request.session.pop("subscriber_id", None)
    return render(request, "h5/expired.html", {"message": None})
