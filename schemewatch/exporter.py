"""Export transactions to CSV: streamed row by row, safe to open in a spreadsheet.

Files are written under a temporary name beside the target and renamed into place, readable by
their owner only (0600: exports carry full account ids); an existing file is replaced only when
asked. A missing folder, a permission error or a full disk is one clear error and leaves nothing.
"""

from __future__ import annotations

import csv
import errno
import os
import tempfile
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from schemewatch import schemes, store
from schemewatch.errors import OutputError, SchemewatchError

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


def export_csv(
    conn, out_path: Path, filters: store.ExportFilters, *, with_labels=False, replace=False
) -> int:
    """Write the filtered transactions to `out_path`; returns the number of rows written.

    Refuses to replace an existing file unless `replace`; raises OutputError when the file
    cannot be written, leaving neither a partial file nor a temporary one behind.
    """
    output = PrivateOutput(out_path, replace=replace)
    try:
        written = output.write(export_rows(conn, filters, with_labels=with_labels))
        output.publish()
    finally:
        output.discard()
    return written - 1  # the header is not a transaction


_WHY = {
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "the folder does not exist",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file would exceed the size limit (disk full)",
}


class PrivateOutput:
    """A CSV file written under a temporary name in the target's folder, then renamed into place.

    The file is created with mode 0600. Any OSError becomes an OutputError naming the file and
    the reason, and the temporary file is removed, so a failure never leaves a truncated file.
    """

    def __init__(self, path: Path, *, replace: bool = False):
        self.path = Path(path)
        self.replace = replace
        self.published = False
        self.temporary: Path | None = None
        self.handle = None
        if not replace and self.path.exists():
            raise OutputError(f"{self.path} already exists; use --force to replace it")
        try:
            descriptor, name = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial"
            )
        except OSError as exc:
            raise self._error(exc) from None
        self.temporary = Path(name)
        self.handle = os.fdopen(descriptor, "w", newline="", encoding="utf-8")

    def write(self, rows: Iterable[list]) -> int:
        """Write CSV rows; returns how many."""
        count = 0
        try:
            writer = csv.writer(self.handle)
            for row in rows:
                writer.writerow(row)
                count += 1
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            raise self._error(exc) from None
        return count

    def publish(self) -> None:
        """Move the finished file into place (refusing to replace one unless asked)."""
        try:
            self.handle.close()
            if self.replace:
                os.replace(self.temporary, self.path)
            else:
                self._move_without_replacing()
        except FileExistsError:
            raise OutputError(f"{self.path} already exists; use --force to replace it") from None
        except OSError as exc:
            raise self._error(exc) from None
        self.published = True

    def _move_without_replacing(self) -> None:
        try:
            os.link(self.temporary, self.path)  # fails, rather than replaces, if the file exists
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (some network shares)
            if self.path.exists():
                raise FileExistsError(self.path) from None
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink()

    def discard(self) -> None:
        """Remove the temporary file if it is still there (safe to call more than once)."""
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass  # the write already failed and that failure is what gets reported
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)

    def withdraw(self) -> None:
        """Remove a published file again (its import was rolled back)."""
        self.discard()
        if self.published:
            self.path.unlink(missing_ok=True)
            self.published = False

    def _error(self, exc: OSError) -> OutputError:
        self.discard()
        reason = _WHY.get(exc.errno, exc.strerror or str(exc))
        return OutputError(f"cannot write {self.path}: {reason}; nothing was written")
