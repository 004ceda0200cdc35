"""Forms: a refused one undone and shown again with its errors; a typed amount of money read."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.kit.bounds import FEN_MAX
from perkflow.kit.money import parse_yuan
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


YUAN_EXAMPLE = "give an amount in yuan such as 88 or 12.50"
YUAN_TOO_LARGE = "the amount is too large"


def yuan_to_fen(text: str, *, field: str, signed: bool = False, most: int = FEN_MAX) -> int:
    """Exact fen of a form field's amount in yuan (`88`, `12.5`, `1,234.50`); 422 naming the field.

    The one money parser reads it (`kit.money.parse_yuan`: decimal digits, never a float). It
    is refused below 0 (below -`most` if `signed`) and above `most`: a number out of the
    ledger's bounds is a clear 422 here, not a 500 from the driver.
    """
    try:
        fen = parse_yuan(text)
    except ValueError:
        raise ValidationFailed(YUAN_EXAMPLE, field=field) from None
    if fen < 0 and not signed:
        raise ValidationFailed(YUAN_EXAMPLE, field=field)
    if abs(fen) > most:
        raise ValidationFailed(YUAN_TOO_LARGE, field=field)
    return fen
