"""`schemewatch copy`: move a whole database to another engine (SQLite -> PostgreSQL) intact.

Every table is copied in one write transaction on the target (all or nothing), then each table's
row count and an order-independent checksum of its rows are compared between source and target.
The copy is recorded in the target's audit log with those figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from schemewatch import store
from schemewatch.errors import SchemewatchError
from schemewatch.store import transfer


class CopyError(SchemewatchError):
    """A copy that cannot start or whose result does not match its source."""


@dataclass
class CopyReport:
    """What was copied: rows and checksum per table, and how long it took."""

    tables: dict[str, tuple[int, str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(count for count, _ in self.tables.values())


def copy_database(
    source, target, *, actor: str, progress: Callable[[str], None] | None = None
) -> CopyReport:
    """Copy every table of `source` into the empty database `target`, then verify both match."""
    say = progress or (lambda line: None)
    started = time.perf_counter()
    if str(source) == str(target):
        raise CopyError("the source and the target are the same database")
    reading = store.open_database(source)  # brought to this version's schema first
    writing = store.open_database(target)
    try:
        if transfer.holds_data(writing):
            raise CopyError(
                f"{target} already holds payments or audit entries; copy into a new one"
            )
        tables = transfer.tables_to_copy(reading)
        with store.write_transaction(writing):
            transfer.clear_account_settings(writing)
            for table in tables:
                copied = _copy_table(reading, writing, table)
                say(f"copied {table}: {copied:,} rows")
            transfer.advance_identities(writing)
        report = _verify(reading, writing, tables)
        report.seconds = round(time.perf_counter() - started, 1)
        details = {"source": str(source), "seconds": report.seconds, "tables": report.tables}
        store.append_audit(
            writing, actor, "copy database", str(target), None, None, json.dumps(details)
        )
        return report
    finally:
        reading.close()
        writing.close()


def _copy_table(reading, writing, table: str) -> int:
    columns = transfer.column_names(reading, table)
    missing = set(columns) - set(transfer.column_names(writing, table))
    if missing:
        raise CopyError(f"table {table}: the target has no column {', '.join(sorted(missing))}")
    copied = 0
    for chunk in transfer.stream_rows(reading, table, columns):
        transfer.insert_rows(writing, table, columns, chunk)
        copied += len(chunk)
    return copied


def _verify(reading, writing, tables: list[str]) -> CopyReport:
    report = CopyReport()
    for table in tables:
        columns = transfer.column_names(reading, table)
        expected = transfer.table_checksum(reading, table, columns)
        got = transfer.table_checksum(writing, table, columns)
        if got != expected:
            raise CopyError(
                f"table {table} does not match after the copy: {expected[0]:,} rows in the "
                f"source, {got[0]:,} in the target (checksums {expected[1][:12]} / {got[1][:12]})"
            )
        report.tables[table] = expected
    return report
