"""A refused form: its writes undone, the page shown again with its errors and the values sent."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from perkflow.errors import PerkflowError
from perkflow.web.auth import doom
from perkflow.web.render import render

# Not the form's fault: these stay errors (the error page), they are not shown on the form.
NOT_THE_FORMS = (403, 404)


def refuse(
    request: Request,
    session: Session,
    exc: PerkflowError,
    *,
    let_through: Collection[int] = NOT_THE_FORMS,
) -> int:
    """Undo a refused write and doom the request; the status to answer the form with.

    Errors whose status is in `let_through` are raised again. The rollback happens now, so
    the page shown again reads what is stored and not what the refused write left in the
    session; the doom makes the request's transaction end in a rollback too, whatever the
    page does after this.
    """
    if exc.status_code in let_through:
        raise exc
    session.rollback()
    doom(request)
    return exc.status_code


def refused_form(
    request: Request,
    session: Session,
    exc: PerkflowError,
    template: str,
    context: dict[str, Any],
    *,
    let_through: Collection[int] = NOT_THE_FORMS,
) -> HTMLResponse:
    """`refuse`, then the form's template again with `context` (its errors and the values sent).

    `context` is built before the rollback: give it the submitted values and the error texts,
    nothing read from the database (for that, call `refuse` and then the page's own builder).
    """
    status = refuse(request, session, exc, let_through=let_through)
    return render(request, template, context, status_code=status)
