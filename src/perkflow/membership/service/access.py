"""Membership use cases: who may do what."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from perkflow.errors import Forbidden
from perkflow.kit.lazy import lazy_module
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")


# --- who may do what -----------------------------------------------------------------------------


def _require_read(actor: Actor) -> None:
    if actor.kind in ("subscriber", "partner"):
        raise Forbidden("not for subscribers or partners")
    org.require_perm_or_scope(
        actor, perm=Perm.MEMBERSHIP_READ, scope=("members:read", "members:write")
    )


def _require_national(actor: Actor) -> None:
    _require_read(actor)
    if org.visible_province(actor) is not None:
        raise Forbidden("membership reports are national; your scope is one province")


def _require_edit(actor: Actor) -> None:
    if actor.kind == "staff":
        org.require(actor, Perm.MEMBERSHIP_EDIT)
    elif actor.kind != "system":
        raise Forbidden("only HQ staff define the tier program")


def _require_write(actor: Actor) -> None:
    """Events about a subscriber: prepayments, plan changes, bills (operator systems, HQ staff)."""
    if actor.kind in ("subscriber", "partner"):
        raise Forbidden("not for subscribers or partners")
    org.require_perm_or_scope(actor, perm=Perm.MEMBERSHIP_EDIT, scope="members:write")


def _require_adjust(actor: Actor) -> None:
    if actor.kind == "staff":
        org.require(actor, Perm.POINTS_ADJUST)
    else:
        _require_write(actor)


def _in_scope(session: Session, *, actor: Actor, subscriber_id: int) -> None:
    if actor.kind in ("staff", "api_key"):
        subscribers.require_in_scope(session, actor=actor, subscriber_id=subscriber_id)


def require_read(actor: Actor) -> None:
    """403 unless the actor may read membership."""
    _require_read(actor)
