"""Request dependencies: the request's transaction, who is acting, CSRF, sign-in redirects."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from perkflow.errors import Forbidden, Unauthenticated
from perkflow.kit import clock
from perkflow.kit.crypto import Vault, sha256_hex
from perkflow.kit.ids import token
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.models import Region, StaffUser
from perkflow.org.rules import Actor
from perkflow.subscribers import service as subscribers


class LoginRequired(Exception):
    """A console page was opened without a signed-in staff member."""


class SubscriberLoginRequired(Exception):
    """An H5 page was opened without a valid one-click sign-in."""


def doom(request: Request) -> None:
    """Mark this request's transaction for rollback: the request answers a refusal (4xx).

    `render` dooms every page it answers with 4xx and `web.forms.refuse` a refused form; call
    this by hand only for a 4xx response built some other way.
    """
    request.state.doomed = True


def is_doomed(request: Request) -> bool:
    """Whether this request's transaction is rolled back instead of committed."""
    return bool(getattr(request.state, "doomed", False))


def _request_session(request: Request) -> Iterator[Session]:
    # The request owns the transaction: once the handler returns, commit, or roll back if the
    # request was doomed (it answers 4xx); roll back if the handler raised.
    session: Session = request.app.state.sessions()
    try:
        yield session
        if is_doomed(request):
            session.rollback()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the commit (or rollback) happens before the response is sent, so a failed
# commit is a 500.
DbSession = Annotated[Session, Depends(_request_session, scope="function")]


async def vault_of(request: Request) -> Vault:
    """The app's key vault."""
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(vault_of)]


async def mart_of(request: Request) -> Mart:
    """The app's mart."""
    mart: Mart = request.app.state.mart
    return mart


MartDep = Annotated[Mart, Depends(mart_of)]


def client_ip(request: Request) -> str:
    """The peer address; X-Forwarded-For counts only from `PERKFLOW_TRUSTED_PROXIES` (serve)."""
    return request.client.host if request.client else "-"


def csrf_token(request: Request) -> str:
    """This browser session's CSRF token, created on first use."""
    value = request.session.get("csrf")
    if not value:
        value = token(24)
        request.session["csrf"] = value
    return str(value)


async def csrf_protect(request: Request) -> None:
    """Refuse a state-changing browser request that does not carry the session's CSRF token."""
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        raw = form.get("csrf_token")
        sent = raw if isinstance(raw, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise Forbidden("CSRF token missing or wrong; reload the page", field="csrf_token")


CsrfProtected = Depends(csrf_protect)


@dataclass(frozen=True)
class StaffContext:
    """The signed-in staff member, their region and their acting identity."""

    user: StaffUser
    region: Region
    actor: Actor


def current_staff(request: Request, session: DbSession) -> StaffContext:
    """The signed-in staff member, or a redirect to the sign-in page."""
    staff_id = request.session.get("staff_id")
    user = (
        org.staff_of_session(session, staff_id=int(staff_id), epoch=request.session.get("epoch"))
        if staff_id
        else None
    )
    if user is None:
        # Ended (logout, new password or role elsewhere) or never signed in: signed out here too.
        request.session.pop("staff_id", None)
        raise LoginRequired()
    csrf_token(request)
    region = org.get_region(session, code=user.region_code)
    # Snapshots for the layout: an error page renders them after the transaction rolled back.
    session.expunge(user)
    session.expunge(region)
    ctx = StaffContext(
        user=user,
        region=region,
        actor=org.actor_for_staff(session, user=user, ip=client_ip(request)),
    )
    request.state.staff_context = ctx
    return ctx


Staff = Annotated[StaffContext, Depends(current_staff)]


# A known API key's actor is reused for this long in each process, sparing a query (and a
# thread hop) per call: a revoked or re-scoped key keeps working here for at most this long.
# Unknown keys are never cached.
API_KEY_CACHE_S = 5.0
_API_KEY_CACHE_MAX = 4096


def _api_key_cache(app: Any) -> dict[str, tuple[Actor, float]]:
    cache: dict[str, tuple[Actor, float]] | None = getattr(app.state, "api_actors", None)
    if cache is None:
        cache = app.state.api_actors = {}
    return cache


def _lookup_key(app: Any, presented: str, ip: str) -> Actor | None:
    # Its own short read-only transaction: the request's transaction need not exist yet.
    with app.state.sessions() as session:
        return org.actor_for_api_key(session, presented=presented, ip=ip)


def _lookup_staff(request: Request, staff_id: int, epoch: Any) -> Actor | None:
    # Never cached: a session ended by logout or a password change stops at its next call.
    with request.app.state.sessions() as session:
        user = org.staff_of_session(session, staff_id=staff_id, epoch=epoch)
        return (
            None if user is None else org.actor_for_staff(session, user=user, ip=client_ip(request))
        )


async def actor_for_key(app: Any, presented: str, *, ip: str) -> Actor | None:
    """The actor of a presented API key (cached per process), or None if unknown or revoked."""
    cache = _api_key_cache(app)
    digest = sha256_hex(presented)
    now = clock.now().timestamp()
    hit = cache.get(digest)
    if hit is not None and now - hit[1] < API_KEY_CACHE_S:
        return replace(hit[0], ip=ip)
    # Database calls go to a worker thread: a blocking query on the event loop stalls every
    # request, and with the pool exhausted it deadlocks against the requests' own teardowns.
    actor = await run_in_threadpool(_lookup_key, app, presented, ip)
    if actor is not None:
        if len(cache) >= _API_KEY_CACHE_MAX:
            cache.clear()
        cache[digest] = (actor, now)
    else:
        cache.pop(digest, None)
    return actor


async def api_actor(request: Request) -> Actor:
    """The caller of a /v1 endpoint: an API key (Bearer), or a signed-in staff member."""
    # No DbSession here: a hot endpoint need not open the request's transaction (and pay the
    # thread hops of its set-up and tear-down) just to learn who is calling.
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        actor = await actor_for_key(request.app, auth[7:].strip(), ip=client_ip(request))
        if actor is None:
            raise Unauthenticated("unknown or revoked API key", field="authorization")
        return actor
    staff_id = request.session.get("staff_id")
    staff = (
        await run_in_threadpool(_lookup_staff, request, int(staff_id), request.session.get("epoch"))
        if staff_id
        else None
    )
    if staff is None:
        raise Unauthenticated(
            "send an API key as 'Authorization: Bearer …' or sign in", field="authorization"
        )
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        await csrf_protect(request)
    return staff


ApiActor = Annotated[Actor, Depends(api_actor)]


def current_subscriber_id(request: Request, session: DbSession) -> int:
    """The subscriber signed in to the H5 pages through a one-click link, while not churned."""
    sub_id = request.session.get("subscriber_id")
    # Checked on every request: churn ends an open H5 session at its next page, not hours later.
    if not sub_id or not subscribers.may_use_h5(session, subscriber_id=int(sub_id)):
        request.session.pop("subscriber_id", None)
        raise SubscriberLoginRequired()
    csrf_token(request)
    return int(sub_id)


SubscriberId = Annotated[int, Depends(current_subscriber_id)]
