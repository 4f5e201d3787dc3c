"""Registry and transaction writes, and the reads that import, export and the generator need."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from schemewatch.store.engine import is_postgres
from schemewatch.store.integrity import seal_batch
from schemewatch.store.schema import (
    _REGISTRY_INDEXES,
    _TRANSACTION_INDEXES,
    _TRANSACTIONS_NOT_REPLACED,
    AGENT_COLUMNS,
    BENEFICIARIES,
    BENEFICIARY_COLUMNS,
    ENROLMENT_COLUMNS,
    ENROLMENTS,
    GROUND_TRUTH,
    GROUND_TRUTH_COLUMNS,
    METADATA,
    PAYOUT_AGENTS,
    SCORES,
    TRANSACTION_COLUMNS,
    TRANSACTIONS,
    TRANSACTIONS_NOT_REPLACED,
    _create_indexes,
    _create_named_indexes,
    _insert_sql,
    rows_by_ids,
)


def set_metadata(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Record a key/value fact about this database (seed, generator version...)."""
    sql = (
        _insert_sql(METADATA, ("key", "value"))
        + " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    conn.execute(sql, (key, value))


def get_metadata(conn: sqlite3.Connection, key: str) -> str | None:
    """Read one metadata value, or None."""
    row = conn.execute(f"SELECT value FROM {METADATA} WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


# Counts the writes to the registry (beneficiaries, enrolments, deaths): every one goes through
# this module and adds one in the same commit, so a reader that kept the whole registry knows
# whether it is still the registry stored.
REGISTRY_CHANGES = "registry_changes"


def registry_changes(conn) -> str:
    """How many times the registry has been written to (a value to compare, nothing more)."""
    return get_metadata(conn, REGISTRY_CHANGES) or "0"


def _count_registry_change(conn) -> None:
    conn.execute(
        _insert_sql(METADATA, ("key", "value"))
        + f" ON CONFLICT (key) DO UPDATE SET value = CAST(CAST({METADATA}.value AS INTEGER) + 1"
        " AS TEXT)",
        (REGISTRY_CHANGES, "1"),
    )


def insert_beneficiaries(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert beneficiary registry rows (tuples in BENEFICIARY_COLUMNS order)."""
    conn.executemany(_insert_sql(BENEFICIARIES, BENEFICIARY_COLUMNS), rows)
    _count_registry_change(conn)


def insert_enrolments(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert scheme enrolments (tuples in ENROLMENT_COLUMNS order)."""
    conn.executemany(_insert_sql(ENROLMENTS, ENROLMENT_COLUMNS), rows)
    _count_registry_change(conn)


def insert_agents(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert payout agents (tuples in AGENT_COLUMNS order)."""
    conn.executemany(_insert_sql(PAYOUT_AGENTS, AGENT_COLUMNS), rows)


def next_transaction_id(conn: sqlite3.Connection) -> int:
    """The id the next transaction gets; call inside the write transaction that inserts it."""
    return conn.execute(
        f"SELECT COALESCE(MAX(transaction_id), 0) + 1 FROM {TRANSACTIONS}"
    ).fetchone()[0]


def insert_transactions(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert transactions (tuples in TRANSACTION_COLUMNS order, ids already assigned).

    The rows are sealed as one hash-chained batch in the same write transaction, so every
    writer (generator, importer, live feed) leaves a tamper-evident trail.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    conn.executemany(_insert_sql(TRANSACTIONS, TRANSACTION_COLUMNS), rows)
    seal_batch(conn, rows)


def insert_ground_truth(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert evaluation labels (transaction_id, typology, group_id)."""
    conn.executemany(_insert_sql(GROUND_TRUTH, GROUND_TRUTH_COLUMNS), rows)


@contextmanager
def bulk_load(conn: sqlite3.Connection) -> Iterator[None]:
    """Drop the transactions' and the registry's secondary indexes while filling empty tables
    (with a small page cache), then rebuild them (much faster).

    Inside the caller's write transaction the per-row trigger refusing INSERT OR REPLACE is also
    dropped and restored: no other connection can see the table without it in between.
    """
    lift_trigger = conn.in_transaction
    for name in (*_TRANSACTION_INDEXES, *_REGISTRY_INDEXES):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    if lift_trigger:
        conn.execute(f"DROP TRIGGER IF EXISTS {TRANSACTIONS_NOT_REPLACED}")
    try:
        with _page_cache(conn, LOAD_CACHE_KIB):
            yield
    finally:
        with _page_cache(conn, INDEX_BUILD_CACHE_KIB):
            _create_indexes(conn)
            _create_named_indexes(conn, _REGISTRY_INDEXES)
        conn.execute(_TRANSACTIONS_NOT_REPLACED)


# While the empty tables fill: rows are appended in key order, so a page once written is not
# wanted again; the writer's large cache only held written pages (1,000,000 payments generated:
# 449 -> 296 MB peak, the same time).
LOAD_CACHE_KIB = 16_384
# While indexes are built: SQLite's sorter cuts the rows into runs of the page cache's size and
# sorts the runs on its worker threads (PRAGMA threads); with one large cache it sorted in one
# run on one core. Six transaction indexes at 1,000,000 rows: 5.7-6.1 s -> 2.8-3.2 s.
INDEX_BUILD_CACHE_KIB = 2_048


@contextmanager
def _page_cache(conn, kib: int) -> Iterator[None]:
    if is_postgres(conn):
        yield
        return
    previous = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size={-kib}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={int(previous)}")


def count_rows(conn: sqlite3.Connection, table: str) -> int:
    """Row count of one of our tables."""
    if table not in (TRANSACTIONS, BENEFICIARIES, ENROLMENTS, PAYOUT_AGENTS, GROUND_TRUTH, SCORES):
        raise ValueError(f"unknown table {table}")
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def typology_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Labelled rows per typology."""
    rows = conn.execute(
        f"SELECT typology, COUNT(*) FROM {GROUND_TRUTH} GROUP BY typology ORDER BY typology"
    )
    return {typology: count for typology, count in rows}


# The fields that identify a payment when an extract is imported again (in this order): every
# ingested field but the ids, the home place and the ingest time.
PAYMENT_IDENTITY_COLUMNS = TRANSACTION_COLUMNS[2:12]


def stored_payments_by_external_id(
    conn: sqlite3.Connection, ids: Iterable[str]
) -> dict[str, tuple]:
    """For each of these external ids already stored, its PAYMENT_IDENTITY_COLUMNS values."""
    return _identities(conn, "external_id", ids)


def stored_payments_by_transaction_id(
    conn: sqlite3.Connection, ids: Iterable[int]
) -> dict[int, tuple]:
    """For each of these transaction ids that exists: (external_id, *PAYMENT_IDENTITY_COLUMNS)."""
    return _identities(conn, "transaction_id", ids, extra=("external_id",))


def _identities(
    conn: sqlite3.Connection, key: str, values: Iterable, extra: tuple[str, ...] = ()
) -> dict:
    columns = ", ".join((key, *extra, *PAYMENT_IDENTITY_COLUMNS))
    template = f"SELECT {columns} FROM {TRANSACTIONS} WHERE {key} IN ({{marks}})"
    return {row[0]: row[1:] for row in rows_by_ids(conn, template, values)}


def beneficiary_homes(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, tuple]:
    """Home state and district of each registered beneficiary among `ids`."""
    template = (
        f"SELECT beneficiary_id, state, district FROM {BENEFICIARIES} "
        "WHERE beneficiary_id IN ({marks})"
    )
    return {row[0]: row[1:] for row in rows_by_ids(conn, template, ids)}


@dataclass(frozen=True)
class ExportFilters:
    """Filters for exporting transactions; None means no restriction."""

    start: int | None = None  # paid_at >= start (unix seconds)
    end: int | None = None  # paid_at < end
    scheme: str | None = None
    state: str | None = None


def _export_where(filters: ExportFilters) -> tuple[str, list]:
    clauses, params = [], []
    for clause, value in (
        ("t.paid_at >= ?", filters.start),
        ("t.paid_at < ?", filters.end),
        ("t.scheme = ?", filters.scheme),
        ("t.state = ?", filters.state),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


# Exported columns: everything ingested except our own id and ingestion time.
EXPORT_COLUMNS = TRANSACTION_COLUMNS[1:-1]


def iter_export_rows(
    conn: sqlite3.Connection, filters: ExportFilters, *, with_labels: bool = False
) -> Iterator[tuple]:
    """Stream transactions for export in ingestion order (EXPORT_COLUMNS, then labels)."""
    where, params = _export_where(filters)
    label_columns = ", g.typology, g.group_id" if with_labels else ""
    label_join = (
        f" LEFT JOIN {GROUND_TRUTH} g ON g.transaction_id = t.transaction_id" if with_labels else ""
    )
    sql = (
        "SELECT COALESCE(t.external_id, 'SW-' || t.transaction_id), t.beneficiary_id, t.scheme, "
        "t.instalment_period, t.amount, t.paid_at, t.latitude, t.longitude, t.account_id, "
        f"t.agent_id, t.channel, t.state, t.district{label_columns} "
        f"FROM {TRANSACTIONS} t{label_join}{where} ORDER BY t.transaction_id"
    )
    cursor = conn.execute(sql, params)
    while batch := cursor.fetchmany(5000):
        yield from batch


def paid_in_periods(conn: sqlite3.Connection, periods: dict[str, str]) -> set[tuple[str, str]]:
    """(beneficiary_id, scheme) pairs already paid in the given period of each scheme."""
    paid: set[tuple[str, str]] = set()
    since = latest_paid_at(conn) or 0
    sql = (
        f"SELECT DISTINCT beneficiary_id FROM {TRANSACTIONS} "
        "WHERE scheme = ? AND paid_at >= ? AND instalment_period = ?"
    )
    for scheme, period in periods.items():
        rows = conn.execute(sql, (scheme, since - 400 * 86_400, period))
        paid.update((row[0], scheme) for row in rows)
    return paid


def honest_payment_between(conn: sqlite3.Connection, since: int, until: int) -> sqlite3.Row | None:
    """The latest unlabelled payment made in [since, until], or None (the live feed copies it as
    a duplicate instalment)."""
    return conn.execute(
        "SELECT t.beneficiary_id, t.scheme, t.instalment_period, t.amount, t.latitude, "
        "t.longitude, t.account_id, t.agent_id, t.channel "
        f"FROM {TRANSACTIONS} t LEFT JOIN {GROUND_TRUTH} g "
        "ON g.transaction_id = t.transaction_id "
        "WHERE t.paid_at BETWEEN ? AND ? AND g.transaction_id IS NULL "
        "ORDER BY t.paid_at DESC LIMIT 1",
        (since, until),
    ).fetchone()


def load_agents(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """All payout agents."""
    return conn.execute(
        f"SELECT {', '.join(AGENT_COLUMNS)} FROM {PAYOUT_AGENTS} ORDER BY agent_id"
    ).fetchall()


def latest_paid_at(conn: sqlite3.Connection) -> int | None:
    """Timestamp of the most recent payment, or None for an empty database."""
    return conn.execute(f"SELECT MAX(paid_at) FROM {TRANSACTIONS}").fetchone()[0]


def load_registry(conn: sqlite3.Connection) -> dict[str, list]:
    """Beneficiaries, enrolments and payout agents, as lists of Rows (for the live feed)."""
    return {
        "beneficiaries": conn.execute(
            f"SELECT {', '.join(BENEFICIARY_COLUMNS)} FROM {BENEFICIARIES} ORDER BY beneficiary_id"
        ).fetchall(),
        "enrolments": conn.execute(
            f"SELECT {', '.join(ENROLMENT_COLUMNS)} FROM {ENROLMENTS} "
            "ORDER BY beneficiary_id, scheme"
        ).fetchall(),
        "agents": load_agents(conn),
    }


def mark_deceased(conn: sqlite3.Connection, beneficiary_id: str, date_of_death: str) -> None:
    """Record a beneficiary's death in the registry."""
    conn.execute(
        f"UPDATE {BENEFICIARIES} SET status = 'deceased', date_of_death = ? "
        "WHERE beneficiary_id = ?",
        (date_of_death, beneficiary_id),
    )
    _count_registry_change(conn)


def max_group_number(conn: sqlite3.Connection) -> int:
    """Highest numeric anomaly group id in the ground truth (group ids look like G000123)."""
    sql = f"SELECT MAX(CAST(SUBSTR(group_id, 2) AS INTEGER)) FROM {GROUND_TRUTH}"
    return conn.execute(sql).fetchone()[0] or 0


def registered_beneficiaries(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Which of these beneficiary ids the registry already holds."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        sql = f"SELECT beneficiary_id FROM {BENEFICIARIES} WHERE beneficiary_id IN ({marks})"
        found.update(row[0] for row in conn.execute(sql, part))
    return found


def highest_beneficiary_number(conn: sqlite3.Connection) -> int:
    """The highest N of the generated ids BNNNNNNNN in the registry (0 if there is none)."""
    rows = conn.execute(
        f"SELECT beneficiary_id FROM {BENEFICIARIES} WHERE beneficiary_id LIKE 'B________' "
        "ORDER BY beneficiary_id DESC LIMIT 100"
    )
    numbers = [int(row[0][1:]) for row in rows if row[0][1:].isdigit()]
    return max(numbers, default=0)


def existing_enrolments(conn: sqlite3.Connection, pairs) -> set[tuple[str, str]]:
    """Which (beneficiary_id, scheme) pairs are already enrolled."""
    found: set[tuple[str, str]] = set()
    sql = f"SELECT 1 FROM {ENROLMENTS} WHERE beneficiary_id = ? AND scheme = ?"
    for pair in pairs:
        if conn.execute(sql, pair).fetchone() is not None:
            found.add(tuple(pair))
    return found
