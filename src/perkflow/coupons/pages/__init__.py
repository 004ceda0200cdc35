"""Pages of coupons: the H5 claim center and wallet, the clerk counter, the console editor.

One router for all of them (`_common.router`); importing each part (h5, clerk, console)
registers its routes on it.
"""

from __future__ import annotations

from perkflow.coupons.pages import clerk, console, h5
from perkflow.coupons.pages._common import qr_svg, router

__all__ = ["clerk", "console", "h5", "qr_svg", "router"]
