"""Pages of channels: the subscriber's in-app inbox in the H5 benefit center."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from perkflow.channels import service as channels
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import CsrfProtected, DbSession, SubscriberId
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/h5/inbox")
def inbox(request: Request, sid: SubscriberId, session: DbSession) -> Response:
    messages = channels.inbox_for(session, subscriber_id=sid, limit=100)
    # Counted in the ledger, as the badge is: the page lists only the newest 100.
    unread = channels.unread_count(session, subscriber_id=sid)
    response = render(request, "h5/inbox.html", {"messages": messages, "unread": unread})
    # Back after marking read must show the new count, not a cached page.
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/h5/inbox/badge")
def badge(request: Request, sid: SubscriberId, session: DbSession) -> Response:
    """The unread count for the H5 nav bars (loaded by htmx, so every page shows it)."""
    count = channels.unread_count(session, subscriber_id=sid)
    response = render(request, "h5/inbox_badge.html", {"unread": count})
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/h5/inbox/{message_id}/read", dependencies=[CsrfProtected])
def read(request: Request, message_id: IdParam, sid: SubscriberId, session: DbSession) -> Response:
    message = channels.mark_read(session, subscriber_id=sid, message_id=message_id)
    if request.headers.get("hx-request"):
        unread = channels.unread_count(session, subscriber_id=sid)
        # The item, and the page's "n unread" line swapped out of band beside it.
        response: HTMLResponse = render(
            request, "h5/inbox_item.html", {"m": message, "oob_unread": unread}
        )
        # The tab bar's badge reloads itself on this event.
        response.headers["HX-Trigger"] = "inbox-read"
        return response
    return RedirectResponse("/h5/inbox", status_code=303)
