"""Which rows each comparison of an evaluation reads: pure functions over cell counts.

A variant chosen by ``match`` (plan fee ≥ 100 → A, else B) gets a different kind of subscriber
than the other variants, and those subscribers respond differently whatever the message says.
Control rows carry the variant their subscriber would have received, so each variant is compared
with its own control rows: like with like. The campaign's overall figure compares all targets
with all controls, which is fair as it stands, since the control was split off within each
variant's assignment: it is the mix of the variants' effects, weighted by their sizes.

An imported history whose control rows carry no variant cannot be split that way; there every
variant is compared with the whole control, which is fair only if the variants were assigned at
random, and the evaluation says so (``own_control`` False).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from perkflow.campaigns.rules import Cell, CellCount
from perkflow.insights.rules import Arm


@dataclass(frozen=True)
class Selection:
    """One comparison's rows: a key (variant or province), its targets and its controls."""

    key: str | None
    target: list[CellCount]
    control: list[CellCount]
    own_control: bool = True  # False: the whole control shared (controls carry no variant)


def _sum(values: Iterable[int | None]) -> int | None:
    """A total, or None when any part is unknown (a source that gives only totals)."""
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def arm(rows: Iterable[CellCount]) -> Arm:
    """Assigned contacts, responders, revenue and spend detail of some rows (intent to treat)."""
    rows = list(rows)
    return Arm(
        contacts=sum(r.contacts for r in rows),
        responders=sum(r.responders for r in rows),
        revenue_fen=sum(r.revenue_fen for r in rows),
        spenders=_sum(r.spenders for r in rows),
        revenue_sq_fen2=_sum(r.revenue_sq_fen2 for r in rows),
    )


def treated_arm(rows: Iterable[CellCount]) -> Arm:
    """Only the rows whose message went out (sent or delivered): treated-on-treated."""
    rows = list(rows)
    return Arm(
        contacts=sum(r.treated for r in rows),
        responders=sum(r.treated_responders for r in rows),
        revenue_fen=sum(r.treated_revenue_fen for r in rows),
        spenders=_sum(r.treated_spenders for r in rows),
        revenue_sq_fen2=_sum(r.treated_revenue_sq_fen2 for r in rows),
    )


def split(counts: Sequence[CellCount]) -> tuple[list[CellCount], list[CellCount]]:
    """Target rows and control rows."""
    return (
        [r for r in counts if r.cell == Cell.TARGET.value],
        [r for r in counts if r.cell == Cell.CONTROL.value],
    )


def _order(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


def by_variant(counts: Sequence[CellCount]) -> list[Selection]:
    """Each variant's targets against its own control rows (see the module's note)."""
    target, control = split(counts)
    labelled = any(r.variant is not None for r in control)
    keys = sorted(
        {r.variant for r in target} | {r.variant for r in control if labelled}, key=_order
    )
    out = []
    for key in keys:
        mine = [r for r in target if r.variant == key]
        if labelled:
            out.append(Selection(key, mine, [r for r in control if r.variant == key]))
        else:
            out.append(Selection(key, mine, list(control), own_control=False))
    return out


def by_province(counts: Sequence[CellCount]) -> list[Selection]:
    """Each province's targets against its controls: control is drawn per province."""
    target, control = split(counts)
    codes = sorted({r.province_code for r in counts if r.province_code is not None})
    return [
        Selection(
            code,
            [r for r in target if r.province_code == code],
            [r for r in control if r.province_code == code],
        )
        for code in codes
    ]
