"""The one module that owns the schema, its migrations and every SQL statement.

Values are always bound as parameters. Table and column names come from the constants below.
Writes run inside `write_transaction()` (BEGIN IMMEDIATE); readers may open read-only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemewatch.errors import DatabaseError, SchemaVersionError

TRANSACTIONS = "transactions"
BENEFICIARIES = "beneficiaries"
ENROLMENTS = "enrolments"
PAYOUT_AGENTS = "payout_agents"
GROUND_TRUTH = "ground_truth"
METADATA = "metadata"

# Columns of an ingested transaction, in insert order (transaction_id is assigned by the store).
TRANSACTION_COLUMNS = (
    "transaction_id",
    "external_id",
    "beneficiary_id",
    "scheme",
    "instalment_period",
    "amount",
    "paid_at",
    "latitude",
    "longitude",
    "account_id",
    "agent_id",
    "channel",
    "state",
    "district",
    "ingested_at",
)
# What feature computation reads from a transaction: never labels, never ingestion details.
SCORING_COLUMNS = (TRANSACTION_COLUMNS[0], *TRANSACTION_COLUMNS[2:12])
BENEFICIARY_COLUMNS = (
    "beneficiary_id",
    "state",
    "district",
    "home_latitude",
    "home_longitude",
    "account_id",
    "account_masked",
    "phone_hash",
    "enrolled_by",
    "enrolled_on",
    "status",
    "date_of_death",
    "registered_at",
)
ENROLMENT_COLUMNS = ("beneficiary_id", "scheme", "entitlement", "enrolled_on")
AGENT_COLUMNS = ("agent_id", "state", "district", "latitude", "longitude", "market_weekday")
GROUND_TRUTH_COLUMNS = ("transaction_id", "typology", "group_id")

_INITIAL_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {METADATA} (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {BENEFICIARIES} (
    beneficiary_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    district TEXT NOT NULL,
    home_latitude REAL NOT NULL,
    home_longitude REAL NOT NULL,
    account_id TEXT,
    account_masked TEXT,
    phone_hash TEXT,
    enrolled_by TEXT,
    enrolled_on TEXT,
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'deceased', 'suspended')),
    date_of_death TEXT,
    registered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {ENROLMENTS} (
    beneficiary_id TEXT NOT NULL REFERENCES {BENEFICIARIES}(beneficiary_id),
    scheme TEXT NOT NULL,
    entitlement REAL NOT NULL CHECK (entitlement > 0),
    enrolled_on TEXT,
    PRIMARY KEY (beneficiary_id, scheme)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {PAYOUT_AGENTS} (
    agent_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    district TEXT NOT NULL,
    latitude REAL NOT NULL,
    longitude REAL NOT NULL,
    market_weekday INTEGER
);
CREATE TABLE IF NOT EXISTS {TRANSACTIONS} (
    transaction_id INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    beneficiary_id TEXT NOT NULL REFERENCES {BENEFICIARIES}(beneficiary_id),
    scheme TEXT NOT NULL,
    instalment_period TEXT NOT NULL,
    amount REAL NOT NULL,
    paid_at INTEGER NOT NULL,
    latitude REAL NOT NULL,
    longitude REAL NOT NULL,
    account_id TEXT,
    agent_id TEXT,
    channel TEXT,
    state TEXT NOT NULL,
    district TEXT NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS transactions_are_append_only_update
BEFORE UPDATE ON {TRANSACTIONS}
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transactions_are_append_only_delete
BEFORE DELETE ON {TRANSACTIONS}
BEGIN SELECT RAISE(ABORT, 'transactions are append-only'); END;
CREATE TABLE IF NOT EXISTS {GROUND_TRUTH} (
    transaction_id INTEGER PRIMARY KEY REFERENCES {TRANSACTIONS}(transaction_id),
    typology TEXT NOT NULL,
    group_id TEXT NOT NULL
);
"""

_TRANSACTION_INDEXES = {
    "idx_transactions_paid_at": "(paid_at)",
    "idx_transactions_scheme_paid_at": "(scheme, paid_at)",
    "idx_transactions_state_paid_at": "(state, paid_at)",
    "idx_transactions_beneficiary_paid_at": "(beneficiary_id, paid_at)",
    "idx_transactions_account_paid_at": "(account_id, paid_at)",
    "idx_transactions_agent_paid_at": "(agent_id, paid_at)",
}
_OTHER_INDEXES = {
    "idx_beneficiaries_phone": f"{BENEFICIARIES}(phone_hash)",
    "idx_beneficiaries_operator": f"{BENEFICIARIES}(enrolled_by, enrolled_on)",
    "idx_ground_truth_typology": f"{GROUND_TRUTH}(typology)",
}


def _create_indexes(conn: sqlite3.Connection) -> None:
    for name, columns in _TRANSACTION_INDEXES.items():
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {TRANSACTIONS}{columns}")
    for name, target in _OTHER_INDEXES.items():
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def _migration_initial(conn: sqlite3.Connection) -> None:
    # executescript() would commit the surrounding transaction, so run statement by statement.
    for statement in _INITIAL_SCHEMA.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    _create_indexes(conn)


SCORES = "scores"

_SCORES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SCORES} (
    model_version TEXT NOT NULL,
    transaction_id INTEGER NOT NULL REFERENCES {TRANSACTIONS}(transaction_id),
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    is_alert INTEGER NOT NULL CHECK (is_alert IN (0, 1)),
    reasons TEXT,
    resembles TEXT,
    scored_at REAL NOT NULL,
    PRIMARY KEY (model_version, transaction_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_scores_alerts ON {SCORES}(model_version, score) WHERE is_alert = 1
"""


def _migration_scores(conn: sqlite3.Connection) -> None:
    for statement in _SCORES_SCHEMA.split(";\n"):
        if statement.strip():
            conn.execute(statement)


AUDIT_LOG = "audit_log"
AUDIT_COLUMNS = ("at", "actor", "action", "target", "old_value", "new_value", "details")

_AUDIT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {AUDIT_LOG} (
    entry_id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    old_value TEXT,
    new_value TEXT,
    details TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_log_is_append_only_update
BEFORE UPDATE ON {AUDIT_LOG}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_is_append_only_delete
BEFORE DELETE ON {AUDIT_LOG}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS idx_audit_log_at ON {AUDIT_LOG}(at)
"""


def _migration_audit_log(conn: sqlite3.Connection) -> None:
    for statement in _AUDIT_SCHEMA.split(";\n"):
        if statement.strip():
            conn.execute(statement)


CASES = "cases"
DISPOSITIONS = ("confirmed_fraud", "false_positive", "needs_information")

_CASES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {CASES} (
    transaction_id INTEGER PRIMARY KEY REFERENCES {TRANSACTIONS}(transaction_id),
    claimed_by TEXT,
    disposition TEXT CHECK (disposition IN {DISPOSITIONS!r}),
    note TEXT,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


def _migration_cases(conn: sqlite3.Connection) -> None:
    conn.execute(_CASES_SCHEMA)


DAILY_SUMMARY = "daily_summary"
SUMMARY_COLUMNS = (
    "model_version",
    "day",
    "scheme",
    "state",
    "transactions",
    "amount",
    "alerts",
    "alert_amount",
)
_SUMMARY_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {DAILY_SUMMARY} (
    model_version TEXT NOT NULL,
    day TEXT NOT NULL,
    scheme TEXT NOT NULL,
    state TEXT NOT NULL,
    transactions INTEGER NOT NULL,
    amount REAL NOT NULL,
    alerts INTEGER NOT NULL,
    alert_amount REAL NOT NULL,
    PRIMARY KEY (model_version, day, scheme, state)
) WITHOUT ROWID
"""


def _migration_summary(conn: sqlite3.Connection) -> None:
    conn.execute(_SUMMARY_SCHEMA)


# Named, ordered migrations; a database records the last one applied in PRAGMA user_version.
MIGRATIONS = (
    ("initial schema", _migration_initial),
    ("model scores", _migration_scores),
    ("audit log", _migration_audit_log),
    ("alert cases", _migration_cases),
    ("daily summary kept by the monitor", _migration_summary),
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path | str, *, readonly: bool = False, busy_timeout_ms: int = 10_000):
    """Open the database with WAL, busy timeout, foreign keys and Row results."""
    path = Path(path)
    try:
        if readonly:
            if not path.exists():
                raise DatabaseError(f"database {path} does not exist; run generate_database.py")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-262144")
        # Fewer, larger checkpoints: bulk writes (backfill, generator) spend less time in fsync.
        conn.execute("PRAGMA wal_autocheckpoint=16384")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def open_database(path: Path | str, *, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
    """Connect for writing and bring the schema up to date."""
    conn = connect(path, busy_timeout_ms=busy_timeout_ms)
    migrate(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations this database has applied."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in order, each in its own write transaction."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database schema version {current} is newer than this Schemewatch "
            f"({SCHEMA_VERSION}); upgrade Schemewatch"
        )
    for version, (_name, apply) in enumerate(MIGRATIONS[current:], start=current + 1):
        with write_transaction(conn):
            apply(conn)
            conn.execute(f"PRAGMA user_version={version}")
    return schema_version(conn)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; lock errors made readable."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"database is busy or locked ({exc}); try again shortly") from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK")
        raise DatabaseError(f"could not commit: {exc}") from exc


def _insert_sql(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    placeholders = ", ".join("?" for _ in columns)
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


def set_metadata(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Record a key/value fact about this database (seed, generator version...)."""
    conn.execute(_insert_sql(METADATA, ("key", "value"), "INSERT OR REPLACE"), (key, value))


def get_metadata(conn: sqlite3.Connection, key: str) -> str | None:
    """Read one metadata value, or None."""
    row = conn.execute(f"SELECT value FROM {METADATA} WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def insert_beneficiaries(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert beneficiary registry rows (tuples in BENEFICIARY_COLUMNS order)."""
    conn.executemany(_insert_sql(BENEFICIARIES, BENEFICIARY_COLUMNS), rows)


def insert_enrolments(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert scheme enrolments (tuples in ENROLMENT_COLUMNS order)."""
    conn.executemany(_insert_sql(ENROLMENTS, ENROLMENT_COLUMNS), rows)


def insert_agents(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert payout agents (tuples in AGENT_COLUMNS order)."""
    conn.executemany(_insert_sql(PAYOUT_AGENTS, AGENT_COLUMNS), rows)


def next_transaction_id(conn: sqlite3.Connection) -> int:
    """The id the next transaction gets; call inside the write transaction that inserts it."""
    return conn.execute(
        f"SELECT COALESCE(MAX(transaction_id), 0) + 1 FROM {TRANSACTIONS}"
    ).fetchone()[0]


def insert_transactions(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert transactions (tuples in TRANSACTION_COLUMNS order, ids already assigned)."""
    conn.executemany(_insert_sql(TRANSACTIONS, TRANSACTION_COLUMNS), rows)


def insert_ground_truth(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Insert evaluation labels (transaction_id, typology, group_id)."""
    conn.executemany(_insert_sql(GROUND_TRUTH, GROUND_TRUTH_COLUMNS), rows)


@contextmanager
def bulk_load(conn: sqlite3.Connection) -> Iterator[None]:
    """Drop transaction indexes while filling an empty table, then rebuild them (much faster)."""
    for name in _TRANSACTION_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    try:
        yield
    finally:
        _create_indexes(conn)


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


def existing_beneficiary_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    """Which of these beneficiary ids are already registered."""
    return _existing(conn, BENEFICIARIES, "beneficiary_id", ids)


def existing_external_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    """Which of these external transaction ids are already stored."""
    return _existing(conn, TRANSACTIONS, "external_id", ids)


def _existing(conn: sqlite3.Connection, table: str, column: str, values: Iterable[str]) -> set:
    values = list(dict.fromkeys(values))
    found: set = set()
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        sql = f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"
        found.update(row[0] for row in conn.execute(sql, chunk))
    return found


def beneficiary_homes(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, tuple]:
    """Home state and district of each registered beneficiary among `ids`."""
    ids = list(dict.fromkeys(ids))
    homes: dict[str, tuple] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        sql = (
            f"SELECT beneficiary_id, state, district FROM {BENEFICIARIES} "
            f"WHERE beneficiary_id IN ({marks})"
        )
        homes.update({row[0]: (row[1], row[2]) for row in conn.execute(sql, chunk)})
    return homes


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


def load_agents(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """All payout agents."""
    return conn.execute(
        f"SELECT {', '.join(AGENT_COLUMNS)} FROM {PAYOUT_AGENTS} ORDER BY agent_id"
    ).fetchall()


def latest_paid_at(conn: sqlite3.Connection) -> int | None:
    """Timestamp of the most recent payment, or None for an empty database."""
    return conn.execute(f"SELECT MAX(paid_at) FROM {TRANSACTIONS}").fetchone()[0]


def now() -> float:
    """Wall-clock unix seconds, the one clock ingestion uses."""
    return time.time()


def utc_iso(seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


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


def max_group_number(conn: sqlite3.Connection) -> int:
    """Highest numeric anomaly group id in the ground truth (group ids look like G000123)."""
    sql = f"SELECT MAX(CAST(SUBSTR(group_id, 2) AS INTEGER)) FROM {GROUND_TRUTH}"
    return conn.execute(sql).fetchone()[0] or 0


def existing_enrolments(conn: sqlite3.Connection, pairs) -> set[tuple[str, str]]:
    """Which (beneficiary_id, scheme) pairs are already enrolled."""
    found: set[tuple[str, str]] = set()
    sql = f"SELECT 1 FROM {ENROLMENTS} WHERE beneficiary_id = ? AND scheme = ?"
    for pair in pairs:
        if conn.execute(sql, pair).fetchone() is not None:
            found.add(tuple(pair))
    return found


# -- bulk reads for scoring --------------------------------------------------------------------
# Large reads go through ADBC/Arrow (several times faster than building Python tuples), but only
# in a separate process: its driver links a private copy of SQLite, and two SQLite copies in one
# process break each other's POSIX locks (we lost WAL writes when we tried it in-process).

SCORE_COLUMNS = (
    "model_version",
    "transaction_id",
    "score",
    "threshold",
    "is_alert",
    "reasons",
    "resembles",
    "scored_at",
)
SUBPROCESS_READ_ROWS = 50_000


def read_frame(path: Path | str, sql: str, params: tuple = ()):
    """Run a read-only query on its own sqlite3 connection; returns a pandas DataFrame."""
    import pandas as pd

    conn = connect(path, readonly=True)
    conn.row_factory = None
    try:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=names)
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def start_read_in_subprocess(path: Path | str, sql: str, params: tuple = ()):
    """Start reading through ADBC in a child process; call the result to get the DataFrame.

    The query runs on the other core while the caller does other work.
    """
    import json
    import subprocess
    import sys

    path = Path(path)
    if not path.exists():
        raise DatabaseError(f"database {path} does not exist; run generate_database.py")
    child = subprocess.Popen(
        [sys.executable, "-m", "schemewatch.arrow_reader", str(path.resolve())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdin.write(json.dumps({"sql": sql, "params": list(params)}).encode())
    child.stdin.close()
    child.stdin = None  # so communicate() does not touch it again

    def finish():
        import pyarrow as pa

        output, errors = child.communicate()
        if child.returncode != 0:
            last_line = (errors.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise DatabaseError(f"cannot read {path}: {last_line}")
        return pa.ipc.open_stream(output).read_all().to_pandas()

    return finish


def transactions_for_scoring(path: Path | str, after_id: int, through_id: int | None = None):
    """Transactions with after_id < transaction_id <= through_id, for feature computation."""
    return start_transactions_read(path, after_id, through_id)()


def start_transactions_read(path: Path | str, after_id: int, through_id: int | None = None):
    """Begin reading transactions for scoring; call the result to get the DataFrame."""
    upper = "" if through_id is None else " AND transaction_id <= ?"
    params = (after_id,) if through_id is None else (after_id, through_id)
    sql = (
        f"SELECT {', '.join(SCORING_COLUMNS)}, state FROM {TRANSACTIONS} "
        f"WHERE transaction_id > ?{upper} ORDER BY transaction_id"
    )
    expected = (through_id if through_id is not None else 10**12) - after_id
    if expected >= SUBPROCESS_READ_ROWS:
        conn = connect(path, readonly=True)
        try:
            last = last_transaction_id(conn)
        finally:
            conn.close()
        expected = min(expected, last - after_id)
    if expected >= SUBPROCESS_READ_ROWS:
        return start_read_in_subprocess(path, sql, params)
    frame = read_frame(path, sql, params)
    return lambda: frame


def ground_truth_frame(path: Path | str):
    """Every labelled transaction (evaluation only: training and scoring never call this)."""
    return read_frame(path, f"SELECT transaction_id, typology, group_id FROM {GROUND_TRUTH}")


_REGISTRY_CONTEXT = f"""
SELECT b.beneficiary_id, b.home_latitude, b.home_longitude, b.date_of_death,
    (SELECT COUNT(*) FROM {BENEFICIARIES} p WHERE p.phone_hash = b.phone_hash)
        AS phone_sharers,
    (SELECT COUNT(*) FROM {BENEFICIARIES} t INDEXED BY idx_beneficiaries_phone
        WHERE t.phone_hash = b.phone_hash
        AND t.enrolled_by = b.enrolled_by
        AND t.enrolled_on BETWEEN date(b.enrolled_on, '-1 day') AND date(b.enrolled_on, '+1 day'))
        AS phone_sharers_enrolled_together,
    (SELECT COUNT(*) FROM {BENEFICIARIES} o WHERE o.enrolled_by = b.enrolled_by
        AND o.enrolled_on BETWEEN date(b.enrolled_on, '-1 day') AND date(b.enrolled_on, '+1 day'))
        AS operator_enrolments_same_days
FROM {BENEFICIARIES} b"""


def registry_context(conn: sqlite3.Connection, beneficiary_ids=None) -> list[tuple]:
    """Home, death and enrolment context per beneficiary (all, or only those given)."""
    if beneficiary_ids is None:
        return [tuple(r) for r in conn.execute(_REGISTRY_CONTEXT)]
    return _by_ids(
        conn, _REGISTRY_CONTEXT + " WHERE b.beneficiary_id IN ({marks})", beneficiary_ids
    )


def entitlements(conn: sqlite3.Connection, beneficiary_ids=None) -> list[tuple]:
    """(beneficiary_id, scheme, entitlement) for all enrolments, or those of some beneficiaries."""
    sql = f"SELECT beneficiary_id, scheme, entitlement FROM {ENROLMENTS}"
    if beneficiary_ids is None:
        return [tuple(r) for r in conn.execute(sql)]
    return _by_ids(conn, sql + " WHERE beneficiary_id IN ({marks})", beneficiary_ids)


def _by_ids(conn: sqlite3.Connection, template: str, ids) -> list[tuple]:
    ids = list(dict.fromkeys(ids))
    rows: list[tuple] = []
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        sql = template.format(marks=", ".join("?" for _ in chunk))
        rows.extend(tuple(r) for r in conn.execute(sql, chunk))
    return rows


def scored_through(conn: sqlite3.Connection, model_version: str) -> int:
    """Highest transaction id scored by this model version (0 if none)."""
    sql = f"SELECT MAX(transaction_id) FROM {SCORES} WHERE model_version = ?"
    return conn.execute(sql, (model_version,)).fetchone()[0] or 0


def last_transaction_id(conn: sqlite3.Connection) -> int:
    """Highest transaction id stored (0 for an empty table)."""
    return conn.execute(f"SELECT COALESCE(MAX(transaction_id), 0) FROM {TRANSACTIONS}").fetchone()[
        0
    ]


def insert_scores(conn: sqlite3.Connection, rows) -> None:
    """Insert score rows (SCORE_COLUMNS order); the primary key refuses a second score."""
    conn.executemany(_insert_sql(SCORES, SCORE_COLUMNS), rows)


def record_scores(conn: sqlite3.Connection, rows, summary) -> None:
    """Insert score rows and add them to the daily summary, in one commit.

    The transaction ids come from the append-only transactions table the monitor has just read,
    so the per-row foreign-key lookup is skipped for this write (it costs a fifth of a backfill);
    the primary key still refuses a second score.
    """
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        with write_transaction(conn):
            insert_scores(conn, rows)
            add_to_summary(conn, summary)
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def append_audit(
    conn: sqlite3.Connection,
    actor: str,
    action: str,
    target: str | None = None,
    old_value: str | None = None,
    new_value: str | None = None,
    details: str | None = None,
) -> None:
    """Add one entry to the append-only audit log (inside the caller's write transaction)."""
    row = (now(), actor, action, target, old_value, new_value, details)
    conn.execute(_insert_sql(AUDIT_LOG, AUDIT_COLUMNS), row)


def audit_entries(conn: sqlite3.Connection, limit: int = 1000) -> list[sqlite3.Row]:
    """The most recent audit entries, newest first."""
    columns = ", ".join(AUDIT_COLUMNS)
    sql = f"SELECT entry_id, {columns} FROM {AUDIT_LOG} ORDER BY entry_id DESC LIMIT ?"
    return conn.execute(sql, (limit,)).fetchall()


# -- dashboard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardFilters:
    """What an auditor narrowed the view to; None or empty means no restriction."""

    start: int | None = None  # paid_at >= start
    end: int | None = None  # paid_at < end
    schemes: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    status: str = "all"  # all | alerts | open | claimed | DISPOSITIONS...
    score_min: float | None = None
    score_max: float | None = None
    typologies: tuple[str, ...] = ()  # the typology an alert most resembles
    search: str | None = None  # beneficiary id or transaction id


def _in(column: str, values: tuple) -> tuple[str, list]:
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


def _dashboard_where(filters: DashboardFilters, version: str | None) -> tuple[str, str, list]:
    """FROM ... WHERE for transactions joined with their score and case; all values bound."""
    clauses, params = [], []
    source = (
        f"{TRANSACTIONS} t LEFT JOIN {SCORES} s "
        "ON s.transaction_id = t.transaction_id AND s.model_version = ? "
        f"LEFT JOIN {CASES} c ON c.transaction_id = t.transaction_id"
    )
    params.append(version or "")
    plain, plain_params = _plain_clauses(filters)
    clauses += plain
    params += plain_params
    for column, values in (("t.district", filters.districts), ("s.resembles", filters.typologies)):
        if values:
            clause, extra = _in(column, values)
            clauses.append(clause)
            params += extra
    if filters.score_min is not None:
        clauses.append("s.score >= ?")
        params.append(filters.score_min)
    if filters.score_max is not None:
        clauses.append("s.score <= ?")
        params.append(filters.score_max)
    status = filters.status
    if status != "all":
        clauses.append("s.is_alert = 1")
    if status == "open":
        clauses.append("c.disposition IS NULL")
    elif status == "claimed":
        clauses.append("c.claimed_by IS NOT NULL AND c.disposition IS NULL")
    elif status in DISPOSITIONS:
        clauses.append("c.disposition = ?")
        params.append(status)
    if filters.search:
        clauses.append("(t.beneficiary_id = ? OR CAST(t.transaction_id AS TEXT) = ?)")
        params += [filters.search.strip(), filters.search.strip()]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return source, where, params


def dashboard_kpis(conn, filters: DashboardFilters, version: str | None) -> dict:
    """Transactions, alerts, amount at risk and open cases under the filters."""
    source, where, params = _dashboard_where(filters, version)
    sql = (
        "SELECT COUNT(*), COALESCE(SUM(s.is_alert), 0), "
        "COALESCE(SUM(CASE WHEN s.is_alert = 1 THEN t.amount END), 0), "
        "COALESCE(SUM(CASE WHEN s.is_alert = 1 AND c.disposition IS NULL THEN 1 END), 0), "
        f"COUNT(s.transaction_id) FROM {source}{where}"
    )
    total, alerts, at_risk, open_cases, scored = conn.execute(sql, params).fetchone()
    return {
        "transactions": total,
        "alerts": alerts,
        "amount_at_risk": at_risk,
        "open_cases": open_cases,
        "scored": scored,
    }


_IST_DAY = "date(t.paid_at + 19800, 'unixepoch')"


def dashboard_daily(conn, filters: DashboardFilters, version: str | None) -> list[tuple]:
    """(IST day, transactions, alerts) per day."""
    source, where, params = _dashboard_where(filters, version)
    sql = (
        f"SELECT {_IST_DAY} AS day, COUNT(*), COALESCE(SUM(s.is_alert), 0) "
        f"FROM {source}{where} GROUP BY day ORDER BY day"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def dashboard_alerts_by(conn, filters: DashboardFilters, version: str | None, column: str):
    """(value, transactions, alerts) grouped by scheme or state."""
    if column not in ("scheme", "state"):
        raise ValueError(column)
    source, where, params = _dashboard_where(filters, version)
    sql = (
        f"SELECT t.{column}, COUNT(*), COALESCE(SUM(s.is_alert), 0) FROM {source}{where} "
        f"GROUP BY t.{column} ORDER BY 3 DESC"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def dashboard_hour_weekday(conn, filters: DashboardFilters, version: str | None) -> list[tuple]:
    """(weekday 0=Sunday, IST hour, alerts) for alerts under the filters."""
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = (
        "SELECT CAST(strftime('%w', t.paid_at + 19800, 'unixepoch') AS INTEGER) AS weekday, "
        "CAST(strftime('%H', t.paid_at + 19800, 'unixepoch') AS INTEGER) AS hour, COUNT(*) "
        f"FROM {source}{where} GROUP BY weekday, hour"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def replace_status(filters: DashboardFilters, status: str) -> DashboardFilters:
    """The same filters with another alert status."""
    from dataclasses import replace

    return replace(filters, status=status)


def _alerts_only(filters: DashboardFilters) -> DashboardFilters:
    """Alerts only, unless the filters already ask for a narrower alert status."""
    return filters if filters.status != "all" else replace_status(filters, "alerts")


ALERT_QUEUE_FIELDS = (
    "t.transaction_id",
    "t.beneficiary_id",
    "t.scheme",
    "t.amount",
    "t.paid_at",
    "t.state",
    "t.district",
    "t.latitude",
    "t.longitude",
    "t.account_id",
    "t.agent_id",
    "t.channel",
    "s.score",
    "s.reasons",
    "s.resembles",
    "c.claimed_by",
    "c.disposition",
    "c.note",
)
ALERT_QUEUE_COLUMNS = tuple(field.split(".")[1] for field in ALERT_QUEUE_FIELDS)


def dashboard_alerts(conn, filters: DashboardFilters, version: str | None, limit: int = 200):
    """Alerts under the filters, highest score first (ALERT_QUEUE_COLUMNS)."""
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = (
        f"SELECT {', '.join(ALERT_QUEUE_FIELDS)} FROM {source}{where} ORDER BY s.score DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, [*params, limit])]


def iter_dashboard_rows(conn, filters: DashboardFilters, version: str | None):
    """Every transaction under the filters with its score and case, streamed (for downloads)."""
    source, where, params = _dashboard_where(filters, version)
    sql = f"SELECT {', '.join(DOWNLOAD_FIELDS)} FROM {source}{where} ORDER BY t.transaction_id"
    cursor = conn.execute(sql, params)
    while batch := cursor.fetchmany(5000):
        yield from (tuple(r) for r in batch)


DOWNLOAD_FIELDS = (
    "t.transaction_id",
    "t.beneficiary_id",
    "t.scheme",
    "t.instalment_period",
    "t.amount",
    "t.paid_at",
    "t.state",
    "t.district",
    "t.latitude",
    "t.longitude",
    "t.account_id",
    "t.agent_id",
    "t.channel",
    "s.score",
    "s.is_alert",
    "s.resembles",
    "c.disposition",
)
DOWNLOAD_COLUMNS = tuple(field.split(".")[1] for field in DOWNLOAD_FIELDS)


def beneficiary_timeline(conn, beneficiary_id: str, limit: int = 100) -> list[tuple]:
    """(transaction_id, scheme, period, amount, paid_at, account, agent) newest first."""
    sql = (
        "SELECT transaction_id, scheme, instalment_period, amount, paid_at, account_id, agent_id "
        f"FROM {TRANSACTIONS} WHERE beneficiary_id = ? ORDER BY paid_at DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (beneficiary_id, limit))]


def account_sharers(conn, account_id: str, limit: int = 50) -> list[tuple]:
    """(beneficiary_id, payments) of everyone paid into an account."""
    sql = (
        f"SELECT beneficiary_id, COUNT(*) FROM {TRANSACTIONS} WHERE account_id = ? "
        "GROUP BY beneficiary_id ORDER BY 2 DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (account_id, limit))]


def agent_recent_payouts(conn, agent_id: str, before: int, limit: int = 50) -> list[tuple]:
    """(transaction_id, beneficiary_id, amount, paid_at) of an agent's payouts up to a time."""
    sql = (
        "SELECT transaction_id, beneficiary_id, amount, paid_at FROM "
        f"{TRANSACTIONS} WHERE agent_id = ? AND paid_at <= ? ORDER BY paid_at DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (agent_id, before, limit))]


def get_case(conn, transaction_id: int) -> sqlite3.Row | None:
    """The triage state of one alert, or None if nobody has touched it."""
    sql = (
        f"SELECT transaction_id, claimed_by, disposition, note FROM {CASES} "
        "WHERE transaction_id = ?"
    )
    return conn.execute(sql, (transaction_id,)).fetchone()


def save_case(conn, transaction_id: int, user: str, *, claimed_by, disposition, note) -> None:
    """Write an alert's triage state (inside the caller's write transaction)."""
    sql = (
        f"INSERT INTO {CASES} "
        "(transaction_id, claimed_by, disposition, note, updated_by, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(transaction_id) DO UPDATE SET "
        "claimed_by = excluded.claimed_by, disposition = excluded.disposition, "
        "note = excluded.note, updated_by = excluded.updated_by, updated_at = excluded.updated_at"
    )
    conn.execute(sql, (transaction_id, claimed_by, disposition, note, user, now()))


def last_audit_time(conn, action: str, actor: str) -> float | None:
    """When an actor last did an action (e.g. a failed login), or None."""
    sql = f"SELECT MAX(at) FROM {AUDIT_LOG} WHERE action = ? AND actor = ?"
    return conn.execute(sql, (action, actor)).fetchone()[0]


def filter_options(conn) -> dict:
    """Schemes, states and (state, district) pairs present in the transactions."""
    schemes = [r[0] for r in conn.execute(f"SELECT DISTINCT scheme FROM {TRANSACTIONS} ORDER BY 1")]
    pairs = conn.execute(
        f"SELECT DISTINCT state, district FROM {BENEFICIARIES} ORDER BY 1, 2"
    ).fetchall()
    return {
        "schemes": schemes,
        "states": sorted({p[0] for p in pairs}),
        "districts": [tuple(p) for p in pairs],
    }


def scores_with_labels(conn, version: str) -> list[tuple]:
    """(score, label) per scored row: auditors' dispositions first, else the ground truth."""
    sql = (
        "SELECT s.score, CASE WHEN c.disposition = 'confirmed_fraud' THEN 1 "
        "WHEN c.disposition = 'false_positive' THEN 0 "
        "WHEN g.transaction_id IS NOT NULL THEN 1 ELSE 0 END "
        f"FROM {SCORES} s LEFT JOIN {CASES} c ON c.transaction_id = s.transaction_id "
        f"LEFT JOIN {GROUND_TRUTH} g ON g.transaction_id = s.transaction_id "
        "WHERE s.model_version = ?"
    )
    return conn.execute(sql, (version,)).fetchall()


def add_to_summary(conn, rows) -> None:
    """Add per (version, day, scheme, state) counts to the daily summary (SUMMARY_COLUMNS order)."""
    sql = (
        _insert_sql(DAILY_SUMMARY, SUMMARY_COLUMNS)
        + " ON CONFLICT(model_version, day, scheme, state) DO UPDATE SET "
        "transactions = transactions + excluded.transactions, "
        "amount = amount + excluded.amount, alerts = alerts + excluded.alerts, "
        "alert_amount = alert_amount + excluded.alert_amount"
    )
    conn.executemany(sql, rows)


def summary_answers(filters: DashboardFilters) -> bool:
    """True when the daily summary alone can answer these filters."""
    return not (
        filters.districts
        or filters.typologies
        or filters.search
        or filters.score_min is not None
        or filters.score_max is not None
        or filters.status not in ("all", "alerts")
    )


def _summary_where(filters: DashboardFilters, version: str) -> tuple[str, list]:
    from datetime import UTC, datetime

    def day(seconds: int) -> str:
        return datetime.fromtimestamp(seconds + 19_800, UTC).strftime("%Y-%m-%d")

    clauses, params = ["model_version = ?"], [version]
    if filters.start is not None:
        clauses.append("day >= ?")
        params.append(day(filters.start))
    if filters.end is not None:
        clauses.append("day < ?")
        params.append(day(filters.end))
    for column, values in (("scheme", filters.schemes), ("state", filters.states)):
        if values:
            clause, extra = _in(column, values)
            clauses.append(clause)
            params += extra
    return " WHERE " + " AND ".join(clauses), params


def summary_kpis(conn, filters: DashboardFilters, version: str) -> dict:
    """KPIs from the daily summary; open cases from the (small) cases table."""
    where, params = _summary_where(filters, version)
    sql = (
        "SELECT COALESCE(SUM(transactions), 0), COALESCE(SUM(alerts), 0), "
        f"COALESCE(SUM(alert_amount), 0) FROM {DAILY_SUMMARY}{where}"
    )
    total, alerts, at_risk = conn.execute(sql, params).fetchone()
    clauses, extra = _plain_clauses(filters)
    closed_sql = (
        f"SELECT COUNT(*) FROM {CASES} c JOIN {SCORES} s ON s.transaction_id = c.transaction_id "
        f"AND s.model_version = ? JOIN {TRANSACTIONS} t ON t.transaction_id = c.transaction_id "
        "WHERE c.disposition IS NOT NULL AND s.is_alert = 1"
        + "".join(f" AND {clause}" for clause in clauses)
    )
    closed = conn.execute(closed_sql, [version, *extra]).fetchone()[0]
    return {
        "transactions": total,
        "alerts": alerts,
        "amount_at_risk": at_risk,
        "open_cases": alerts - closed,
        "scored": total,
    }


def _plain_clauses(filters: DashboardFilters) -> tuple[list[str], list]:
    """Date, scheme and state conditions on t (for queries that join few rows)."""
    clauses, params = [], []
    for clause, value in (("t.paid_at >= ?", filters.start), ("t.paid_at < ?", filters.end)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    for column, values in (("t.scheme", filters.schemes), ("t.state", filters.states)):
        if values:
            clause, extra = _in(column, values)
            clauses.append(clause)
            params += extra
    return clauses, params


def summary_daily(conn, filters: DashboardFilters, version: str) -> list[tuple]:
    """(day, transactions, alerts) from the daily summary."""
    where, params = _summary_where(filters, version)
    sql = (
        f"SELECT day, SUM(transactions), SUM(alerts) FROM {DAILY_SUMMARY}{where} "
        "GROUP BY day ORDER BY day"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def summary_alerts_by(conn, filters: DashboardFilters, version: str, column: str) -> list[tuple]:
    """(scheme or state, transactions, alerts) from the daily summary."""
    if column not in ("scheme", "state"):
        raise ValueError(column)
    where, params = _summary_where(filters, version)
    sql = (
        f"SELECT {column}, SUM(transactions), SUM(alerts) FROM {DAILY_SUMMARY}{where} "
        f"GROUP BY {column} ORDER BY 3 DESC"
    )
    return [tuple(r) for r in conn.execute(sql, params)]
