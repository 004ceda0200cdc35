"""QR codes drawn on the server as inline SVG (no script, works offline)."""

from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(text: str, *, scale: int = 5) -> Markup:
    """The QR code of a short code as inline SVG."""
    svg = segno.make(text, error="m", micro=False).svg_inline(scale=scale, border=2, dark="#111")
    return Markup(svg)  # noqa: S704  (segno's own markup; the text is escaped by segno)
