"""Shared by the audience's use cases: the 422 for a bad definition, region visibility, scope."""

from __future__ import annotations

from perkflow.audience.models import Segment
from perkflow.audience.rules import InvalidDefinition
from perkflow.errors import ValidationFailed
from perkflow.org import service as org
from perkflow.org.rules import Actor


def invalid(exc: InvalidDefinition, *, prefix: str = "") -> ValidationFailed:
    """The 422 for a bad definition: the first problem as message and field, all in details."""
    first = exc.problems[0]
    path = f"{prefix}{first.path}" if first.path else prefix.rstrip(".")
    errors = [
        {
            "path": f"{prefix}{p.path}" if p.path else prefix.rstrip("."),
            "message": p.message,
            **exc.at_fault.get(p, {}),
        }
        for p in exc.problems
    ]
    more = len(errors) - 1
    message = first.message + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
    return ValidationFailed(message, field=path or "definition", errors=errors)


def _visible(segment: Segment, actor: Actor) -> bool:
    province = org.visible_province(actor)
    return province is None or segment.province_code in (None, province)


def _scope(actor: Actor, segment_province: str | None = None) -> str | None:
    """The province a compilation is confined to: the actor's region, else the segment's."""
    return org.visible_province(actor) or segment_province
