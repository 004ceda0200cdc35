"""The coupon pages' router and their shared helpers: QR codes, times, devices, error texts."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.kit.ids import token

router = APIRouter(include_in_schema=False)
DEVICE_COOKIE = "pf_device"


def qr_svg(text: str, *, scale: int = 6) -> Markup:
    """A QR code as inline SVG, drawn on the server (no script, works offline)."""
    svg = segno.make(text, error="m", micro=False).svg_inline(scale=scale, border=2, dark="#111")
    return Markup(svg)  # noqa: S704  (segno's own markup; the code is [0-9A-Z] only)


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


def _local_input(request: Request, text: str, *, field: str) -> datetime | None:
    """A `datetime-local` form value, read in the operator's zone."""
    if not text.strip():
        return None
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValidationFailed("not a date and time", field=field) from exc
    return naive.replace(tzinfo=ZoneInfo(_zone(request))) if naive.tzinfo is None else naive


def _device_id(request: Request) -> str:
    value = request.cookies.get(DEVICE_COOKIE, "")
    return value if re.fullmatch(r"[A-Za-z0-9_\-]{8,64}", value) else ""


def _with_device(request: Request, response: Response) -> Response:
    """Give the browser a device id cookie if it has none (per-device rate limits)."""
    if not _device_id(request):
        response.set_cookie(
            DEVICE_COOKIE, token(16), max_age=365 * 86400, httponly=True, samesite="lax"
        )
    return response


def _csv(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s，、]+", text) if p.strip()]


def _error_text(exc: PerkflowError) -> str:
    return (f"{exc.field}: " if exc.field else "") + exc.message
