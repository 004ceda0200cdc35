"""Tables that read in an 80-column terminal: keys and figures whole, text cut at words."""

from __future__ import annotations

from collections.abc import Collection

from rich import box as boxes
from rich.box import Box
from rich.table import Table


def table(
    *headers: str,
    keys: Collection[str] = (),
    figures: Collection[str] = (),
    title: str | None = None,
    show_header: bool = True,
    box: Box | None = boxes.HEAVY_HEAD,
    padding: int = 1,
) -> Table:
    """A table whose key and figure columns never wrap and whose text columns give way.

    Rich narrows the wrappable columns first; left to wrap a code or a number it breaks them into a
    stack of fragments. Keys (ids, codes) and figures (counts, money, rates) are kept on one line;
    text wraps at spaces, and a word too long for its column ends in "…" instead of folding.
    """
    out = Table(title=title, show_header=show_header, box=box, padding=(0, padding))
    for h in headers:
        if h in figures:
            out.add_column(h, justify="right", no_wrap=True)
        elif h in keys:
            out.add_column(h, no_wrap=True)
        else:
            out.add_column(h, overflow="ellipsis")
    return out
