"""The tamper-evident trail: chained audit entries and case events, sealed transaction batches.

Triggers refuse UPDATE, DELETE and INSERT OR REPLACE, but cannot stop someone who can write the
file. The hashes make such a change visible: `verify()` recomputes every chain and every batch and
names the first entry, event or batch that was changed, inserted or removed. Serialisations are
documented in `store/hashing.py`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from schemewatch.errors import DatabaseError
from schemewatch.store.hashing import (
    CHUNK_ROWS,
    GENESIS,
    add_chunk,
    batch_hasher,
    chain_hash,
    normalise,
)
from schemewatch.store.schema import (
    AUDIT_CHAIN,
    AUDIT_LOG,
    BATCH_COLUMNS,
    CASE_EVENT_CHAIN,
    CASE_EVENTS,
    CASES,
    MIGRATIONS,
    TRANSACTION_BATCHES,
    TRANSACTION_COLUMNS,
    TRANSACTION_KINDS,
    TRANSACTIONS,
    _insert_sql,
    _migration_trail,
    now,
    schema_version,
)

# The chained tables: (table, id column, chained columns with their kinds, what an entry is called).
AUDIT = (AUDIT_LOG, "entry_id", AUDIT_CHAIN, "audit entry")
CASE_HISTORY = (CASE_EVENTS, "event_id", CASE_EVENT_CHAIN, "case event")


def append_chained(conn: sqlite3.Connection, chain: tuple, values: Sequence) -> int:
    """Append one row to a chained table (inside the caller's write transaction); its id."""
    table, id_column, columns, _ = chain
    last = conn.execute(
        f"SELECT {id_column}, hash FROM {table} ORDER BY {id_column} DESC LIMIT 1"
    ).fetchone()
    row_id, previous = (1, GENESIS) if last is None else (last[0] + 1, last[1])
    row = (row_id, *normalise([kind for _, kind in columns], values))
    names = (id_column, *(name for name, _ in columns), "previous_hash", "hash")
    conn.execute(_insert_sql(table, names), (*row, previous, chain_hash(previous, row)))
    return row_id


def _select_chain(chain: tuple) -> str:
    table, id_column, columns, _ = chain
    names = ", ".join(name for name, _ in columns)
    return f"SELECT {id_column}, {names}, previous_hash, hash FROM {table} ORDER BY {id_column}"


def chain_existing_audit_entries(conn: sqlite3.Connection) -> None:
    """Migration: give audit entries written before the chain their hashes, in entry order."""
    previous, updates = GENESIS, []
    for row in conn.execute(_select_chain(AUDIT)).fetchall():
        digest = chain_hash(previous, tuple(row)[:-2])
        updates.append((previous, digest, row[0]))
        previous = digest
    conn.executemany(
        f"UPDATE {AUDIT_LOG} SET previous_hash = ?, hash = ? WHERE entry_id = ?", updates
    )


def _role_of_disposition(disposition: str | None) -> str | None:
    # Before roles were recorded only supervisors and admins could confirm fraud.
    if disposition is None:
        return None
    return "supervisor" if disposition == "confirmed_fraud" else "auditor"


def cases_to_events(conn: sqlite3.Connection) -> None:
    """Migration: each row of the old `cases` table becomes that case's first event."""
    rows = conn.execute(
        f"SELECT transaction_id, claimed_by, disposition, note, updated_by, updated_at "
        f"FROM {CASES} ORDER BY updated_at, transaction_id"
    ).fetchall()
    for tid, claimed_by, disposition, note, updated_by, updated_at in rows:
        values = (
            tid,
            1,
            claimed_by,
            disposition,
            _role_of_disposition(disposition),
            note,
            updated_by,
            updated_at,
        )
        append_chained(conn, CASE_HISTORY, values)


# -- transaction batches ---------------------------------------------------------------------


def _last_batch(conn: sqlite3.Connection) -> tuple[int, str]:
    last = conn.execute(
        f"SELECT batch_id, hash FROM {TRANSACTION_BATCHES} ORDER BY batch_id DESC LIMIT 1"
    ).fetchone()
    return (0, GENESIS) if last is None else (last[0], last[1])


def _write_batch(conn, header: tuple, previous: str, digest) -> None:
    conn.execute(
        _insert_sql(TRANSACTION_BATCHES, (*BATCH_COLUMNS, "previous_hash", "hash")),
        (*header, previous, digest.hexdigest()),
    )


def seal_batch(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Seal transactions just inserted (TRANSACTION_COLUMNS tuples) as one chained batch.

    Hashes the tuples being inserted (cheaper than reading them back), normalised to what SQLite
    stores. Call inside the write transaction that inserted them.
    """
    if not rows:
        return
    ids = [row[0] for row in rows]
    if ids != list(range(ids[0], ids[0] + len(ids))):
        rows = sorted(rows, key=lambda row: row[0])
        ids = [row[0] for row in rows]
    last_batch, previous = _last_batch(conn)
    header = (last_batch + 1, ids[0], ids[-1], len(rows), now())
    digest = batch_hasher(previous, header)
    for start in range(0, len(rows), CHUNK_ROWS):
        add_chunk(
            digest, TRANSACTION_KINDS, list(zip(*rows[start : start + CHUNK_ROWS], strict=True))
        )
    _write_batch(conn, header, previous, digest)


def _stored_chunks(conn, first_id: int, last_id: int) -> Iterator[list[tuple]]:
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute(
        f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM {TRANSACTIONS} "
        "WHERE transaction_id BETWEEN ? AND ? ORDER BY transaction_id",
        (first_id, last_id),
    )
    while chunk := cursor.fetchmany(CHUNK_ROWS):
        yield chunk


def _hash_stored(conn, previous: str, header: tuple):
    digest = batch_hasher(previous, header)
    count = 0
    for chunk in _stored_chunks(conn, header[1], header[2]):
        add_chunk(digest, TRANSACTION_KINDS, list(zip(*chunk, strict=True)))
        count += len(chunk)
    return digest, count


def seal_stored_transactions(conn: sqlite3.Connection) -> None:
    """Migration: seal every transaction stored before batches existed as one batch."""
    first, last = conn.execute(
        f"SELECT MIN(transaction_id), MAX(transaction_id) FROM {TRANSACTIONS}"
    ).fetchone()
    if first is None:
        return
    count = conn.execute(f"SELECT COUNT(*) FROM {TRANSACTIONS}").fetchone()[0]
    header = (1, first, last, count, now())
    digest, _ = _hash_stored(conn, GENESIS, header)
    _write_batch(conn, header, GENESIS, digest)


# -- verification ----------------------------------------------------------------------------


@dataclass
class ChainStatus:
    """What verifying one chain found: how many rows, the last hash, the first problem."""

    name: str
    rows: int = 0
    last_hash: str = GENESIS
    problem: str | None = None
    hashes: set = field(default_factory=set, repr=False)


@dataclass
class IntegrityReport:
    """The result of verify(): one status per chain."""

    audit: ChainStatus
    cases: ChainStatus
    transactions: ChainStatus | None = None
    batches: int = 0

    @property
    def problems(self) -> list[str]:
        return [s.problem for s in self.statuses if s.problem]

    @property
    def statuses(self) -> list[ChainStatus]:
        return [s for s in (self.audit, self.cases, self.transactions) if s is not None]

    @property
    def ok(self) -> bool:
        return not self.problems


def _id_range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _chain_problem(rows: list, label: str, at: int, previous: str, previous_id: int) -> str:
    """Name what happened at the first row that does not verify (rows: id, ..., prev, hash)."""
    row = rows[at]
    row_id, stored_previous, stored_hash = row[0], row[-2], row[-1]
    consistent = chain_hash(stored_previous, row[:-2]) == stored_hash
    if stored_previous == previous:
        return f"{label} {row_id} was changed (it no longer matches its hash)"
    after = rows[at + 1] if at + 1 < len(rows) else None
    if after is not None and after[-2] == previous:
        return f"{label} {row_id} was inserted (the next entry chains past it)"
    if row_id > previous_id + 1 and consistent:
        return f"{label} {_id_range(previous_id + 1, row_id - 1)} was removed"
    if after is None:
        return f"{label} {row_id} was inserted (it does not chain from entry {previous_id})"
    if after[-2] == stored_hash and consistent:
        return (
            f"the chain breaks between {label} {previous_id} and {row_id}: "
            f"{label} {previous_id} was rewritten or {row_id} inserted"
        )
    return f"{label} {row_id} was changed (it no longer matches its hash)"


def verify_chain(conn: sqlite3.Connection, chain: tuple) -> ChainStatus:
    """Recompute one chain from GENESIS; the first broken row is named."""
    label = chain[3]
    rows = [tuple(r) for r in conn.execute(_select_chain(chain))]
    status = ChainStatus(name=chain[0], rows=len(rows))
    previous, previous_id = GENESIS, 0
    status.hashes.add(GENESIS)
    for at, row in enumerate(rows):
        if row[-2] != previous or chain_hash(row[-2], row[:-2]) != row[-1]:
            status.problem = _chain_problem(rows, label, at, previous, previous_id)
            break
        previous, previous_id = row[-1], row[0]
        status.hashes.add(previous)
    status.last_hash = previous
    return status


def _first_missing(conn, first_id: int, last_id: int) -> int | None:
    sql = (
        f"SELECT t.transaction_id + 1 FROM {TRANSACTIONS} t WHERE t.transaction_id BETWEEN ? AND ? "
        f"AND NOT EXISTS (SELECT 1 FROM {TRANSACTIONS} n WHERE n.transaction_id = t.transaction_id "
        "+ 1) ORDER BY 1 LIMIT 1"
    )
    has_first = conn.execute(
        f"SELECT 1 FROM {TRANSACTIONS} WHERE transaction_id = ?", (first_id,)
    ).fetchone()
    if has_first is None:
        return first_id
    found = conn.execute(sql, (first_id, last_id - 1)).fetchone()
    return None if found is None else found[0]


def _batch_problem(conn, batch: tuple, previous: str, previous_batch: int) -> str | None:
    batch_id, first_id, last_id, row_count, _sealed_at, stored_previous, stored_hash = batch
    name = f"transaction batch {batch_id} (transactions {_id_range(first_id, last_id)})"
    if stored_previous != previous:
        if batch_id > previous_batch + 1:
            return f"transaction batch {_id_range(previous_batch + 1, batch_id - 1)} was removed"
        return f"{name} was inserted or changed (it does not chain from batch {previous_batch})"
    try:
        digest, count = _hash_stored(conn, previous, batch[:5])
    except ValueError:
        return f"{name} was changed: a row holds a value of the wrong type"
    if count < row_count:
        missing = _first_missing(conn, first_id, last_id)
        return f"transaction {missing} was removed from {name}"
    if count > row_count:
        return f"a transaction was inserted into {name}"
    if digest.hexdigest() != stored_hash:
        return f"{name} was changed: its rows no longer match its hash"
    return None


def _unsealed(conn, batches: list[tuple]) -> int | None:
    """The first transaction outside every batch's id range, or None."""
    bounds, start = [], None
    for batch in batches:
        bounds.append((start, batch[1]))
        start = batch[2]
    bounds.append((start, None))
    for low, high in bounds:
        sql = f"SELECT MIN(transaction_id) FROM {TRANSACTIONS} WHERE 1 = 1"
        params = []
        if low is not None:
            sql += " AND transaction_id > ?"
            params.append(low)
        if high is not None:
            sql += " AND transaction_id < ?"
            params.append(high)
        found = conn.execute(sql, params).fetchone()[0]
        if found is not None:
            return found
    return None


def verify_transactions(conn: sqlite3.Connection) -> tuple[ChainStatus, int]:
    """Re-hash every batch's rows and check the batch chain; also rows outside any batch."""
    batches = [
        tuple(r)
        for r in conn.execute(
            f"SELECT {', '.join(BATCH_COLUMNS)}, previous_hash, hash FROM {TRANSACTION_BATCHES} "
            "ORDER BY batch_id"
        )
    ]
    status = ChainStatus(name=TRANSACTIONS)
    previous, previous_batch = GENESIS, 0
    for batch in batches:
        problem = _batch_problem(conn, batch, previous, previous_batch)
        if problem:
            status.problem = problem
            break
        previous, previous_batch = batch[-1], batch[0]
        status.rows += batch[3]
        status.hashes.add(previous)
    status.last_hash = previous
    if status.problem is None:
        outside = _unsealed(conn, batches)
        if outside is not None:
            status.problem = (
                f"transaction {outside} is in no sealed batch (written outside Schemewatch)"
            )
    return status, len(batches)


def trail_version() -> int:
    """The schema version from which databases carry the trail."""
    return [apply for _, apply in MIGRATIONS].index(_migration_trail) + 1


def has_trail(conn: sqlite3.Connection) -> bool:
    """True when the database has been migrated to the tamper-evident trail."""
    return schema_version(conn) >= trail_version()


def verify(
    conn: sqlite3.Connection, *, transactions: bool = True, anchor: str | None = None
) -> IntegrityReport:
    """Verify the audit log and case history chains and (optionally) every transaction batch.

    `anchor` is a hash noted from an earlier verify: the report fails unless some chain still
    holds it (catches a truncated or wholly rewritten chain).
    """
    if not has_trail(conn):
        raise DatabaseError(
            f"this database has no tamper-evident trail yet (schema version {schema_version(conn)})"
            "; start the dashboard or the monitor on it once with this Schemewatch to migrate it"
        )
    # One read transaction: a snapshot, so rows a live feed commits meanwhile are not "unsealed".
    snapshot = not conn.in_transaction
    if snapshot:
        conn.execute("BEGIN")
    try:
        report = IntegrityReport(
            audit=verify_chain(conn, AUDIT), cases=verify_chain(conn, CASE_HISTORY)
        )
        if transactions:
            report.transactions, report.batches = verify_transactions(conn)
    finally:
        if snapshot:
            conn.execute("ROLLBACK")
    if anchor and not any(anchor.strip().lower() in s.hashes for s in report.statuses):
        report.audit.problem = report.audit.problem or (
            f"the anchored hash {anchor.strip()} is in no chain: entries were removed or rewritten"
        )
    return report


def summary_line(report: IntegrityReport) -> str:
    """One line: what was verified and the last hashes to note elsewhere (anchors)."""
    line = f"OK: {report.audit.rows:,} audit entries, {report.cases.rows:,} case events"
    if report.transactions is not None:
        line += f", {report.transactions.rows:,} transactions in {report.batches:,} sealed batches"
    line += f" verified; last audit hash {report.audit.last_hash}"
    if report.transactions is not None:
        line += f", last batch hash {report.transactions.last_hash}"
    return line
