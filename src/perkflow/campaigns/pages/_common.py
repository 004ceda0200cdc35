"""The campaign pages' router and what every part of them reads: the operator's zone."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(include_in_schema=False)


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)
