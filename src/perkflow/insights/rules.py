"""Evaluation statistics and history parsing: pure functions, no database, no web.

The comparison of a target cell with its control cell (intent-to-treat: everyone assigned counts,
whether or not the message arrived):

* rates ``p_t = x_t / n_t`` and ``p_c = x_c / n_c``; absolute uplift ``p_t − p_c``;
* its 95 % interval, **Newcombe hybrid score** (``stats.intervals``; statsmodels
  ``confint_proportions_2indep(method="newcomb", compare="diff")``), inside [−1, 1] and never of
  zero width;
* relative uplift ``(p_t − p_c) / p_c`` and its interval from the **log risk ratio** (Katz):
  ``exp(log(p_t/p_c) ± z · sqrt(1/x_t − 1/n_t + 1/x_c − 1/n_c)) − 1``
  (statsmodels ``confint_proportions_2indep(method="log", compare="ratio")`` minus one);
* the test (``stats.tests``): the **pooled** two-proportion z-test where every expected count is
  at least 5 (statsmodels ``proportions_ztest``), **Fisher's exact test** where one is smaller, and
  **not enough data** (no p-value, never significant) for an empty cell, a cell of fewer than 10
  contacts, or no variation at all.

Anything undefined is None, never NaN, so JSON stays plain.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from perkflow.campaigns.rules import Cell, HistoryRow
from perkflow.errors import Problem
from perkflow.insights.stats import intervals, revenue
from perkflow.insights.stats import tests as rate_tests
from perkflow.kit.money import parse_yuan

ALPHA = 0.05
# scipy.stats.norm.ppf(1 - ALPHA / 2), written out: importing this module must not load scipy.
Z95 = 1.959963984540054

# What one message costs to send, in fen, by channel. Operator SMS is billed per message (about
# 0.05 yuan at wholesale rates); e-mail, in-app and webhooks cost nothing per message here. A
# channel not listed has an unknown cost, and so does the campaign that used it.
SEND_COST_FEN: dict[str, int] = {"sms": 5, "email": 0, "in_app": 0, "webhook": 0}

HISTORY_COLUMNS = ("subscriber_id", "cell", "variant", "contacted_at", "responded", "revenue")
MAX_VARIANT = 32
PHONE_COLUMN = "phone"  # optional: what `--match phone` matches to the subscriber master
MAP_COLUMNS = ("outside_id", "subscriber_id")
_MAX_ID = 2**63 - 1
_TRUE = {"1", "true"}
_FALSE = {"0", "false"}

# Local hours of each time slot of the day (the operator's zone): [start, end).
TIME_SLOTS: tuple[tuple[str, int, int], ...] = (
    ("morning", 6, 12),
    ("afternoon", 12, 18),
    ("evening", 18, 23),
    ("night", 23, 6),
)


# ---- two cells compared -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arm:
    """One cell's counts: contacts assigned, distinct responders, revenue in fen."""

    contacts: int
    responders: int
    revenue_fen: int = 0
    # For the revenue interval: how many contacts spent, and the sum of squared spend (fen²).
    # None when the source gives only totals; the report then shows no revenue interval.
    spenders: int | None = None
    revenue_sq_fen2: int | None = None

    @property
    def rate(self) -> float | None:
        """Responders per contact, or None for an empty cell."""
        return self.responders / self.contacts if self.contacts else None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Target against control: uplift with its interval, the z-test, incremental figures."""

    target: Arm
    control: Arm
    absolute: float | None
    ci95: tuple[float, float] | None
    relative: float | None
    relative_ci95: tuple[float, float] | None
    z: float | None
    p_value: float | None
    significant: bool
    incremental_responses: float | None
    incremental_ci95: tuple[float, float] | None
    incremental_revenue_fen: int | None
    # Which test gave the p-value (``z`` or ``fisher``), or why there is none (``not_enough_data``).
    test: str | None = None
    not_enough_data: str | None = None
    # Incremental revenue per target contact (fen) with its interval, or why there is none.
    revenue_per_target_fen: float | None = None
    revenue_per_target_ci95: tuple[float, float] | None = None
    revenue_note: str | None = None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def diff_ci(target: Arm, control: Arm, *, z: float = Z95) -> tuple[float, float] | None:
    """Newcombe hybrid-score interval of the difference of two rates; None for an empty cell."""
    return intervals.newcombe(
        target.responders, target.contacts, control.responders, control.contacts, z=z
    )


def ratio_ci(target: Arm, control: Arm, *, z: float = Z95) -> tuple[float, float] | None:
    """Log-ratio (Katz) interval of the ratio of two rates; None when a cell has no responders."""
    if min(target.responders, control.responders, target.contacts, control.contacts) <= 0:
        return None
    p1, p2 = target.responders / target.contacts, control.responders / control.contacts
    var = (
        1 / target.responders - 1 / target.contacts + 1 / control.responders - 1 / control.contacts
    )
    half = z * math.sqrt(max(var, 0.0))
    log_ratio = math.log(p1 / p2)
    return (math.exp(log_ratio - half), math.exp(log_ratio + half))


def z_test(target: Arm, control: Arm) -> tuple[float, float] | None:
    """The pooled two-proportion z statistic and its two-sided p-value; None when undefined."""
    if not target.contacts or not control.contacts:
        return None
    pooled = (target.responders + control.responders) / (target.contacts + control.contacts)
    var = pooled * (1 - pooled) * (1 / target.contacts + 1 / control.contacts)
    if var <= 0:  # nobody responded, or everybody did: no variation to test
        return None
    z = (target.responders / target.contacts - control.responders / control.contacts) / math.sqrt(
        var
    )
    from scipy.stats import norm  # imported where used: scipy takes a second to import

    return z, float(2 * norm.sf(abs(z)))


def compare(target: Arm, control: Arm, *, alpha: float = ALPHA) -> Comparison:
    """Everything an evaluation says about a target cell against its control."""
    from scipy.stats import norm  # imported where used: scipy takes a second to import

    z = float(norm.ppf(1 - alpha / 2))
    p1, p2 = target.rate, control.rate
    absolute = p1 - p2 if p1 is not None and p2 is not None else None
    ci = diff_ci(target, control, z=z)
    relative = absolute / p2 if absolute is not None and p2 else None
    ratio = ratio_ci(target, control, z=z)
    relative_ci = (
        (ratio[0] - 1, ratio[1] - 1) if ratio is not None and relative is not None else None
    )
    result = rate_tests.rate_test(
        target.responders, target.contacts, control.responders, control.contacts
    )
    tested = result if isinstance(result, rate_tests.TestResult) else None
    p_value = tested.p_value if tested else None
    significant = p_value is not None and p_value < alpha
    incremental = absolute * target.contacts if absolute is not None else None
    incremental_ci = (ci[0] * target.contacts, ci[1] * target.contacts) if ci else None
    incremental_revenue = None
    if target.contacts and control.contacts:
        incremental_revenue = round(
            target.revenue_fen - control.revenue_fen / control.contacts * target.contacts
        )
    spend = revenue_uplift(target, control)
    return Comparison(
        target=target,
        control=control,
        absolute=absolute,
        ci95=ci,
        relative=relative,
        relative_ci95=relative_ci,
        z=_finite(tested.z) if tested and tested.z is not None else None,
        p_value=p_value,
        significant=significant,
        incremental_responses=incremental,
        incremental_ci95=incremental_ci,
        incremental_revenue_fen=incremental_revenue,
        test=tested.method.value if tested else None,
        not_enough_data=None if tested else str(result),
        revenue_per_target_fen=(
            spend.per_target_fen if isinstance(spend, revenue.RevenueUplift) else None
        ),
        revenue_per_target_ci95=spend.ci95 if isinstance(spend, revenue.RevenueUplift) else None,
        revenue_note=None if isinstance(spend, revenue.RevenueUplift) else str(spend),
    )


def revenue_uplift(target: Arm, control: Arm) -> revenue.RevenueUplift | revenue.TooSmall:
    """Revenue per target contact minus per control contact, with its interval, or why not."""
    if target.contacts < 2 or control.contacts < 2:
        return revenue.TooSmall.EMPTY_CELL
    cells = []
    for arm in (target, control):
        if arm.spenders is None or arm.revenue_sq_fen2 is None:
            return revenue.TooSmall.NO_SPEND_DETAIL
        cells.append(
            revenue.Spend(arm.contacts, arm.spenders, arm.revenue_fen, arm.revenue_sq_fen2)
        )
    return revenue.uplift(cells[0], cells[1])


def campaign_cost_fen(
    *, offer_cost_fen: int | None, offers_issued: int, sends: Mapping[str, int]
) -> int | None:
    """Offers taken up times their cost plus messages sent times their channel's price.

    None when any part is unknown (no offer cost given, a channel without a price).
    """
    if offer_cost_fen is None:
        return None
    total = offer_cost_fen * offers_issued
    for channel, n in sends.items():
        price = SEND_COST_FEN.get(channel)
        if price is None:
            return None
        total += price * n
    return total


def cost_per_incremental_fen(cost_fen: int | None, comparison: Comparison) -> int | None:
    """Cost over incremental responses — only for a significant, positive uplift.

    A cost per response divided by an uplift that may be noise (or negative) is a misleading
    number; such evaluations say "not significant" instead.
    """
    incremental = comparison.incremental_responses
    if cost_fen is None or not comparison.significant or incremental is None or incremental <= 0:
        return None
    return round(cost_fen / incremental)


# ---- time ---------------------------------------------------------------------------------


def time_slot(at: datetime, zone: str) -> str:
    """morning / afternoon / evening / night of an aware time, in the given zone."""
    hour = at.astimezone(ZoneInfo(zone)).hour
    for name, start, end in TIME_SLOTS:
        if (start <= hour < end) if start < end else (hour >= start or hour < end):
            return name
    raise AssertionError(hour)  # the slots cover the day


@dataclass(frozen=True, slots=True)
class Timeline:
    """Cumulative response rate of each cell at the end of each local day."""

    days: list[str]
    rates: dict[str, list[float]]
    responders: dict[str, list[int]]


def cumulative_timeline(
    firsts: Iterable[tuple[str, datetime]], contacts: Mapping[str, int], *, zone: str
) -> Timeline:
    """From (cell, first response time) pairs: responders so far per cell per day, as rates."""
    tz = ZoneInfo(zone)
    per_day: dict[str, dict[date, int]] = {cell: {} for cell in contacts}
    for cell, at in firsts:
        if cell not in per_day:
            continue
        day = at.astimezone(tz).date()
        per_day[cell][day] = per_day[cell].get(day, 0) + 1
    days = sorted({d for counts in per_day.values() for d in counts})
    if days:
        # Every calendar day between the first and the last response, so the x axis is time.
        span = (days[-1] - days[0]).days
        days = [date.fromordinal(days[0].toordinal() + i) for i in range(span + 1)]
    responders: dict[str, list[int]] = {}
    rates: dict[str, list[float]] = {}
    for cell, counts in per_day.items():
        running, series = 0, []
        for day in days:
            running += counts.get(day, 0)
            series.append(running)
        responders[cell] = series
        n = contacts[cell]
        rates[cell] = [r / n if n else 0.0 for r in series]
    return Timeline(days=[d.isoformat() for d in days], rates=rates, responders=responders)


# ---- imported histories -------------------------------------------------------------------


def _at(line: int, field: str, message: str) -> Problem:
    """A problem on one line of a file, at `line N [column]` (or `[file]`, `[header]`)."""
    return Problem(f"line {line} [{field}]", message)


def _parse_time(text: str, zone: ZoneInfo) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def parse_history(lines: Iterable[str], *, zone: str) -> tuple[list[HistoryRow], list[Problem]]:
    """Rows of a history CSV, or every problem found (line numbers count the header as 1).

    Columns: subscriber_id, cell (target | control), variant (may be empty), contacted_at (ISO
    8601; without a zone it is read in ``zone``), responded (0/1/true/false), revenue (yuan with
    at most two decimals; may be empty). Extra columns are ignored.
    """
    tz = ZoneInfo(zone)
    reader = csv.reader(lines)
    problems: list[Problem] = []
    header = next(reader, None)
    if header is None:
        return [], [_at(1, "file", "the file is empty")]
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    missing = [c for c in HISTORY_COLUMNS if c not in names]
    if missing:
        return [], [_at(1, "header", f"missing column(s): {', '.join(missing)}")]
    at = {c: names.index(c) for c in HISTORY_COLUMNS}
    phone_at = names.index(PHONE_COLUMN) if PHONE_COLUMN in names else None
    rows: list[HistoryRow] = []
    first_line: dict[int, int] = {}
    for record in reader:
        line = reader.line_num
        if not any(v.strip() for v in record):
            continue  # blank lines are not rows
        if len(record) < len(names):
            problems.append(
                _at(line, "file", f"{len(record)} fields where the header has {len(names)}")
            )
            continue
        values = {c: record[i].strip() for c, i in at.items()}
        bad = len(problems)

        sid_text = values["subscriber_id"]
        sid = int(sid_text) if sid_text.isascii() and sid_text.isdigit() else 0
        if not 0 < sid <= _MAX_ID:
            problems.append(_at(line, "subscriber_id", f"{sid_text!r} is not a positive id"))
        elif sid in first_line:
            problems.append(
                _at(line, "subscriber_id", f"{sid} also appears on line {first_line[sid]}")
            )
        else:
            first_line[sid] = line

        cell_text = values["cell"].lower()
        if cell_text not in (Cell.TARGET.value, Cell.CONTROL.value):
            problems.append(_at(line, "cell", f"{values['cell']!r} is neither target nor control"))

        phone = (record[phone_at].strip() or None) if phone_at is not None else None

        variant = values["variant"] or None
        if variant is not None and len(variant) > MAX_VARIANT:
            problems.append(_at(line, "variant", f"longer than {MAX_VARIANT} characters"))

        contacted_at = None
        try:
            contacted_at = _parse_time(values["contacted_at"], tz)
        except ValueError:
            problems.append(
                _at(
                    line,
                    "contacted_at",
                    f"{values['contacted_at']!r} is not an ISO 8601 time "
                    "(such as 2026-03-01T10:00:00+08:00)",
                )
            )

        responded_text = values["responded"].lower()
        if responded_text not in _TRUE | _FALSE:
            problems.append(
                _at(line, "responded", f"{values['responded']!r} is not 0, 1, true or false")
            )
        responded = responded_text in _TRUE

        revenue: int | None = None
        if values["revenue"]:
            try:
                revenue = parse_yuan(values["revenue"])
            except ValueError as exc:
                problems.append(_at(line, "revenue", str(exc)))
            else:
                if revenue < 0:
                    problems.append(_at(line, "revenue", "revenue may not be negative"))
                elif revenue and not responded and responded_text in _FALSE:
                    problems.append(_at(line, "revenue", "revenue on a row that did not respond"))

        if len(problems) == bad and contacted_at is not None:
            rows.append(
                HistoryRow(
                    subscriber_id=sid,
                    cell=Cell(cell_text),
                    variant=variant,
                    contacted_at=contacted_at,
                    responded=responded,
                    revenue_fen=revenue,
                    phone=phone,
                )
            )
    if not rows and not problems:
        problems.append(_at(1, "file", "the file has no rows"))
    return (rows if not problems else []), problems


def parse_id_map(lines: Iterable[str]) -> tuple[dict[int, int], list[Problem]]:
    """A declared mapping ``outside_id,subscriber_id`` (outside id → subscriber), or its problems.

    Each outside id and each subscriber appears once: two outside ids for one subscriber would
    make them two contacts of one campaign.
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return {}, [_at(1, "file", "the mapping is empty")]
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    missing = [c for c in MAP_COLUMNS if c not in names]
    if missing:
        return {}, [_at(1, "header", f"missing column(s): {', '.join(missing)}")]
    at = [names.index(c) for c in MAP_COLUMNS]
    mapping: dict[int, int] = {}
    taken: dict[int, int] = {}
    problems: list[Problem] = []
    for record in reader:
        line = reader.line_num
        if not any(v.strip() for v in record):
            continue
        if len(record) < len(names):
            problems.append(
                _at(line, "file", f"{len(record)} fields where the header has {len(names)}")
            )
            continue
        ids: list[int] = []
        for column, i in zip(MAP_COLUMNS, at, strict=True):
            text = record[i].strip()
            value = int(text) if text.isascii() and text.isdigit() else 0
            if not 0 < value <= _MAX_ID:
                problems.append(_at(line, column, f"{text!r} is not a positive id"))
            ids.append(value)
        if len(ids) != 2 or not all(ids):
            continue
        outside, subscriber = ids
        if outside in mapping:
            problems.append(_at(line, "outside_id", f"{outside} is mapped twice"))
        elif subscriber in taken:
            problems.append(
                _at(line, "subscriber_id", f"{subscriber} is also outside id {taken[subscriber]}")
            )
        else:
            mapping[outside] = subscriber
            taken[subscriber] = outside
    return (mapping if not problems else {}), problems


def summarize_problems(problems: Sequence[Problem], *, limit: int = 20) -> str:
    """The first problems, one per line, and how many more there are."""
    text = "\n".join(str(p) for p in problems[:limit])
    if len(problems) > limit:
        text += f"\n… and {len(problems) - limit} more problem(s)"
    return text
