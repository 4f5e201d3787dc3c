"""Whole-table reads and writes for `schemewatch copy` (SQLite -> PostgreSQL, or either way)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from schemewatch.store import engine
from schemewatch.store.schema import (
    ACCOUNT_SETTINGS,
    AUDIT_LOG,
    SCHEMA_VERSION_TABLE,
    TRANSACTIONS,
    _insert_sql,
    table_names,
)

# Parents before children (foreign keys); tables not named here follow in name order.
COPY_ORDER = (
    "metadata",
    "beneficiaries",
    "enrolments",
    "payout_agents",
    "transactions",
    "transaction_batches",
    "ground_truth",
    "scores",
    "daily_summary",
    "alert_cases",
    "alerts_to_link",
    "alert_overview",
    "score_claims",
    "case_events",
    "rules",
    "rule_versions",
    "rule_hits",
    "users",
    "account_settings",
    "audit_log",
)
READ_ROWS = 50_000


def tables_to_copy(conn) -> list[str]:
    """Every data table of the database, parents first (the engine's own bookkeeping left out)."""
    present = [t for t in table_names(conn) if t != SCHEMA_VERSION_TABLE]
    known = [t for t in COPY_ORDER if t in present]
    return known + sorted(set(present) - set(known))


def column_names(conn, table: str) -> list[str]:
    """The table's columns in definition order."""
    cursor = conn.execute(f"SELECT * FROM {table} LIMIT 0")
    return [column[0] for column in cursor.description]


def stream_rows(conn, table: str, columns: list[str]) -> Iterator[list[tuple]]:
    """All rows of a table, READ_ROWS at a time (no order promised)."""
    cursor = conn.cursor()
    cursor.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while chunk := cursor.fetchmany(READ_ROWS):
        yield [tuple(row) for row in chunk]


def insert_rows(conn, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Plain INSERTs (COPY on PostgreSQL), inside the caller's write transaction."""
    conn.executemany(_insert_sql(table, tuple(columns)), rows)


def holds_data(conn) -> bool:
    """Whether a database already holds payments or audit entries (a copy target must not)."""
    for table in (TRANSACTIONS, AUDIT_LOG):
        if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            return True
    return False


def clear_account_settings(conn) -> None:
    """A new database makes its own cookie key; a copy takes the source's instead."""
    conn.execute(f"DELETE FROM {ACCOUNT_SETTINGS}")


def advance_identities(conn) -> None:
    """PostgreSQL: move each identity column's sequence past the ids that were copied in."""
    if not engine.is_postgres(conn):
        return
    identities = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for table, column in identities:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence(?, ?), "
            f"COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)",
            (table, column),
        )


def _canonical(value) -> bytes:
    kind = type(value)  # the common exact types first: this runs for every value copied
    if kind is str:
        return b"s" + value.encode()
    if kind is int:
        return b"i" + str(value).encode()
    if kind is float:
        return b"f" + repr(value).encode()
    if value is None:
        return b"N"
    if isinstance(value, bool | int):
        return b"i" + str(int(value)).encode()
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, bytes | memoryview):
        return b"b" + bytes(value)
    return b"s" + str(value).encode()


def row_digest(row: tuple) -> int:
    """One row's SHA-256 over its typed values, each preceded by its length, as an integer."""
    parts = []
    for value in row:
        part = _canonical(value)
        parts.append(len(part).to_bytes(8, "big"))
        parts.append(part)
    return int.from_bytes(hashlib.sha256(b"".join(parts)).digest(), "big")


def table_checksum(conn, table: str, columns: list[str]) -> tuple[int, str]:
    """(rows, checksum): the sum of every row's digest mod 2^256, so row order does not matter
    (the two engines sort text differently)."""
    count, total = 0, 0
    for chunk in stream_rows(conn, table, columns):
        count += len(chunk)
        total = (total + sum(map(row_digest, chunk))) % (1 << 256)
    return count, f"{total:064x}"
