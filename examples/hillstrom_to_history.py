"""Convert the Hillstrom e-mail experiment into perkflow's campaign-history CSV (stdlib only).

    python examples/hillstrom_to_history.py ../shared/datasets/hillstrom.csv history.csv

Each of the 64,000 customers becomes one contact: "No E-Mail" is the control cell, "Mens E-Mail"
and "Womens E-Mail" are two variants of the target cell. The response is a site visit in the two
weeks after the e-mail (``--response conversion`` for a purchase); revenue is ``spend`` in the
dataset's currency, read as yuan. The row number is the subscriber id; every e-mail went out on
one day in March 2008.
"""

from __future__ import annotations

import argparse
import csv
import sys

CELLS = {"No E-Mail": ("control", ""), "Mens E-Mail": ("target", "mens"),
         "Womens E-Mail": ("target", "womens")}  # fmt: skip
CONTACTED_AT = "2008-03-01T10:00:00+08:00"
COLUMNS = ["subscriber_id", "cell", "variant", "contacted_at", "responded", "revenue"]


def convert(source: str, target: str, *, response: str = "visit") -> int:
    """Write the history file; returns the number of rows."""
    with (
        open(source, newline="", encoding="utf-8") as src,
        open(target, "w", newline="", encoding="utf-8") as out,
    ):
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        n = 0
        for n, row in enumerate(csv.DictReader(src), start=1):
            cell, variant = CELLS[row["segment"]]
            spend = float(row["spend"])
            writer.writerow(
                [n, cell, variant, CONTACTED_AT, row[response], f"{spend:.2f}" if spend else ""]
            )
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="hillstrom.csv")
    parser.add_argument("target", help="the history CSV to write")
    parser.add_argument("--response", choices=["visit", "conversion"], default="visit")
    args = parser.parse_args(argv)
    n = convert(args.source, args.target, response=args.response)
    print(f"{n} rows written to {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
