"""Export transactions to CSV: streamed row by row, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from schemewatch import schemes, store
from schemewatch.errors import SchemewatchError

IST = timezone(timedelta(seconds=schemes.IST_OFFSET_SECONDS), "IST")
LABEL_COLUMNS = ("label", "group_id")
# A cell starting with one of these is run as a formula by spreadsheet programs.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell):
    """Prefix text that a spreadsheet would execute with an apostrophe; numbers pass through."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def iso_timestamp(seconds: int) -> str:
    """Unix seconds as ISO 8601 in Indian Standard Time, e.g. 2025-07-01T10:30:00+05:30."""
    return datetime.fromtimestamp(seconds, IST).isoformat()


def day_start(day: date) -> int:
    """Midnight IST at the start of a day, as unix seconds."""
    return int(datetime(day.year, day.month, day.day, tzinfo=IST).timestamp())


def filters_from(
    date_from: date | None, date_to: date | None, scheme: str | None, state: str | None
) -> store.ExportFilters:
    """Filters from user input; the date range is inclusive and in IST days."""
    code = None
    if scheme is not None:
        code = schemes.normalise_scheme(scheme)
        if code is None:
            known = ", ".join(schemes.SCHEME_CODES)
            raise SchemewatchError(f"unknown scheme '{scheme}' (known: {known})")
    return store.ExportFilters(
        start=day_start(date_from) if date_from else None,
        end=day_start(date_to + timedelta(days=1)) if date_to else None,
        scheme=code,
        state=state,
    )


def export_rows(conn, filters: store.ExportFilters, *, with_labels: bool = False):
    """Header, then each exported row as CSV-ready cells (a generator: nothing is held)."""
    columns = list(store.EXPORT_COLUMNS)
    columns[columns.index("paid_at")] = "timestamp"
    yield columns + (list(LABEL_COLUMNS) if with_labels else [])
    paid_at = store.EXPORT_COLUMNS.index("paid_at")
    amount = store.EXPORT_COLUMNS.index("amount")
    for row in store.iter_export_rows(conn, filters, with_labels=with_labels):
        cells = [neutralise(c) for c in row]
        cells[paid_at] = iso_timestamp(row[paid_at])
        cells[amount] = f"{row[amount]:.2f}"
        yield cells


def export_csv(conn, out_path: Path, filters: store.ExportFilters, *, with_labels=False) -> int:
    """Write the filtered transactions to `out_path`; returns the number of rows written."""
    written = 0
    with open(out_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for cells in export_rows(conn, filters, with_labels=with_labels):
            writer.writerow(cells)
            written += 1
    return written - 1  # the header is not a transaction
