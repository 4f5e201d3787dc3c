"""The schema, its migrations and the one `connect()`: WAL, busy timeout, foreign keys, rows."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from schemewatch.errors import DatabaseBusy, DatabaseError, SchemaVersionError
from schemewatch.store import engine

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


# Created by a later migration (_migration_districts_index), dropped and rebuilt by bulk loads.
_DISTRICTS_INDEX = {"idx_beneficiaries_state_district": f"{BENEFICIARIES}(state, district)"}
# Rebuilt once after a bulk load instead of updated row by row.
_REGISTRY_INDEXES = {
    name: target
    for name, target in {**_OTHER_INDEXES, **_DISTRICTS_INDEX}.items()
    if target.startswith(BENEFICIARIES)
}


def _create_indexes(conn: sqlite3.Connection) -> None:
    for name, columns in _TRANSACTION_INDEXES.items():
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {TRANSACTIONS}{columns}")
    _create_named_indexes(conn, _OTHER_INDEXES)


def _create_named_indexes(conn: sqlite3.Connection, indexes: dict[str, str]) -> None:
    """Create indexes given as {name: "table(columns)"} unless they exist."""
    for name, target in indexes.items():
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


USERS = "users"
ACCOUNT_SETTINGS = "account_settings"
ROLES = ("auditor", "supervisor", "admin")
USER_COLUMNS = (
    "username",
    "display_name",
    "role",
    "password_hash",
    "credential_version",
    "credentials_changed_at",
    "failed_logins",
    "locked_until",
    "last_seen_at",
    "removed_at",
    "created_at",
    "updated_at",
)
# credential_version goes up on every password reset, role change and removal; a session issued
# under an older version is over. Removed accounts keep their row (removed_at), so a name added
# again continues the version count and no old session or cookie can match it.
_ACCOUNTS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {USERS} (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN {ROLES!r}),
    password_hash TEXT NOT NULL,
    credential_version INTEGER NOT NULL DEFAULT 1,
    credentials_changed_at REAL NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until REAL,
    last_seen_at REAL,
    removed_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {ACCOUNT_SETTINGS} (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""


def _migration_accounts(conn: sqlite3.Connection) -> None:
    for statement in _ACCOUNTS_SCHEMA.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    # The session cookie's signing key: random, made once, kept with the accounts it protects.
    conn.execute(
        f"INSERT OR IGNORE INTO {ACCOUNT_SETTINGS} (key, value) VALUES ('cookie_key', ?)",
        (secrets.token_urlsafe(32),),
    )


# -- the tamper-evident trail (see store/hashing.py for the serialisations) -------------------

CASE_EVENTS = "case_events"
TRANSACTION_BATCHES = "transaction_batches"
# Columns of each chained table after its id, with their SQLite affinities (what gets hashed).
AUDIT_CHAIN = (
    ("at", "real"),
    ("actor", "text"),
    ("action", "text"),
    ("target", "text"),
    ("old_value", "text"),
    ("new_value", "text"),
    ("details", "text"),
)
CASE_EVENT_CHAIN = (
    ("transaction_id", "integer"),
    ("version", "integer"),
    ("claimed_by", "text"),
    ("disposition", "text"),
    ("disposition_role", "text"),
    ("note", "text"),
    ("updated_by", "text"),
    ("updated_at", "real"),
)
CASE_COLUMNS = tuple(name for name, _ in CASE_EVENT_CHAIN)
_REAL_TRANSACTION_COLUMNS = ("amount", "latitude", "longitude", "ingested_at")
TRANSACTION_KINDS = tuple(
    "integer"
    if column in ("transaction_id", "paid_at")
    else "real"
    if column in _REAL_TRANSACTION_COLUMNS
    else "text"
    for column in TRANSACTION_COLUMNS
)
BATCH_COLUMNS = ("batch_id", "first_id", "last_id", "row_count", "sealed_at")


def _refuse(name: str, when: str, table: str, condition: str, message: str) -> str:
    """A trigger that aborts a write (REPLACE deletes without firing DELETE triggers)."""
    return (
        f"CREATE TRIGGER IF NOT EXISTS {name} {when} ON {table} "
        f"{'WHEN ' + condition if condition else ''} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _append_only(table: str, key: str, message: str, extra: str = "") -> list[str]:
    """UPDATE, DELETE and INSERT over an existing key (INSERT OR REPLACE) refused."""
    exists = f"EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key}){extra}"
    return [
        _refuse(f"{table}_is_append_only_update", "BEFORE UPDATE", table, "", message),
        _refuse(f"{table}_is_append_only_delete", "BEFORE DELETE", table, "", message),
        _refuse(f"{table}_is_append_only_replace", "BEFORE INSERT", table, exists, message),
        _refuse(
            f"{table}_entries_are_chained",
            "BEFORE INSERT",
            table,
            "NEW.hash IS NULL OR NEW.previous_hash IS NULL",
            f"{message}: write through schemewatch.store",
        ),
    ]


TRANSACTIONS_NOT_REPLACED = "transactions_are_append_only_replace"
_TRANSACTIONS_NOT_REPLACED = _refuse(
    TRANSACTIONS_NOT_REPLACED,
    "BEFORE INSERT",
    TRANSACTIONS,
    f"EXISTS (SELECT 1 FROM {TRANSACTIONS} WHERE transaction_id = NEW.transaction_id) "
    f"OR (NEW.external_id IS NOT NULL AND EXISTS "
    f"(SELECT 1 FROM {TRANSACTIONS} WHERE external_id = NEW.external_id))",
    "transactions are append-only",
)

_TRAIL_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {CASE_EVENTS} (
    event_id INTEGER PRIMARY KEY,
    transaction_id INTEGER NOT NULL REFERENCES {TRANSACTIONS}(transaction_id),
    version INTEGER NOT NULL CHECK (version >= 1),
    claimed_by TEXT,
    disposition TEXT CHECK (disposition IN {DISPOSITIONS!r}),
    disposition_role TEXT,
    note TEXT,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (transaction_id, version)
)""",
    *_append_only(
        CASE_EVENTS,
        "event_id",
        "case history is append-only",
        f" OR EXISTS (SELECT 1 FROM {CASE_EVENTS} "
        "WHERE transaction_id = NEW.transaction_id AND version = NEW.version)",
    ),
    f"""CREATE TABLE IF NOT EXISTS {TRANSACTION_BATCHES} (
    batch_id INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    sealed_at REAL NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)""",
    *_append_only(TRANSACTION_BATCHES, "batch_id", "transaction batches are append-only"),
    _TRANSACTIONS_NOT_REPLACED,
    *_append_only(AUDIT_LOG, "entry_id", "the audit log is append-only")[2:],
]
# The current state of each case: its latest event. A view, so Overview KPIs, the alert queue,
# downloads and precision-by-disposition keep joining `cases` as before.
_CASES_VIEW = (
    f"CREATE VIEW IF NOT EXISTS {CASES} AS SELECT {', '.join(CASE_COLUMNS)} FROM {CASE_EVENTS} "
    f"WHERE event_id IN (SELECT MAX(event_id) FROM {CASE_EVENTS} GROUP BY transaction_id)"
)


def _migration_trail(conn: sqlite3.Connection) -> None:
    """Chain the audit log, turn cases into chained events, seal stored transactions.

    Existing audit entries are chained in entry_id order; each existing case becomes its first
    event (version 1; a confirmed fraud is credited to a supervisor, other dispositions to an
    auditor); every transaction already stored is sealed as one batch.
    """
    from schemewatch.store import integrity

    for column in ("previous_hash", "hash"):
        conn.execute(f"ALTER TABLE {AUDIT_LOG} ADD COLUMN {column} TEXT")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_is_append_only_update")
    integrity.chain_existing_audit_entries(conn)
    conn.execute(_append_only(AUDIT_LOG, "entry_id", "the audit log is append-only")[0])
    for statement in _TRAIL_SCHEMA:
        conn.execute(statement)
    integrity.cases_to_events(conn)
    conn.execute(f"DROP TABLE {CASES}")
    conn.execute(_CASES_VIEW)
    integrity.seal_stored_transactions(conn)


# -- auditors' rules (see schemewatch/rules.py) -------------------------------------------------

RULES = "rules"
RULE_VERSIONS = "rule_versions"
RULE_HITS = "rule_hits"
RULE_COLUMNS = ("rule_id", "name", "current_version", "enabled", "updated_by", "updated_at")
RULE_VERSION_COLUMNS = (
    "rule_id",
    "version",
    "expression",
    "description",
    "created_by",
    "created_at",
    "backtest",
    "backtested_by",
    "backtested_at",
)
RULE_HIT_COLUMNS = ("model_version", "transaction_id", "rule_id", "rule_version")
# A rule's versions are kept: an edit adds one, and every hit names the version that matched.
# A version's last backtest summary (JSON) is kept with it; only a backtested version may run.
_RULES_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS {RULES} (
    rule_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    current_version INTEGER NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 0 CHECK (enabled IN (0, 1)),
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {RULE_VERSIONS} (
    rule_id INTEGER NOT NULL REFERENCES {RULES}(rule_id),
    version INTEGER NOT NULL CHECK (version >= 1),
    expression TEXT NOT NULL,
    description TEXT,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    backtest TEXT,
    backtested_by TEXT,
    backtested_at REAL,
    PRIMARY KEY (rule_id, version)
)""",
    # Like scores, hits are per model version: a new model rescores, and the rules run again.
    f"""CREATE TABLE IF NOT EXISTS {RULE_HITS} (
    model_version TEXT NOT NULL,
    transaction_id INTEGER NOT NULL REFERENCES {TRANSACTIONS}(transaction_id),
    rule_id INTEGER NOT NULL REFERENCES {RULES}(rule_id),
    rule_version INTEGER NOT NULL,
    PRIMARY KEY (model_version, transaction_id, rule_id)
) WITHOUT ROWID""",
    f"CREATE INDEX IF NOT EXISTS idx_rule_hits_rule ON {RULE_HITS}(rule_id, rule_version)",
]


def _migration_rules(conn: sqlite3.Connection) -> None:
    for statement in _RULES_SCHEMA:
        conn.execute(statement)


def _migration_risk(conn: sqlite3.Connection) -> None:
    # Rows scored before this migration keep NULL: the dashboard computes their risk on read
    # from their model card (schemewatch.risk), when the card has the knots.
    conn.execute(f"ALTER TABLE {SCORES} ADD COLUMN risk REAL")


ALERT_CASES = "alert_cases"

# Which case (a group of linked alerts, schemewatch.linking) each alert belongs to. Derived data,
# written only by the monitor: a merge moves the absorbed case's alerts to the surviving case id
# (the smallest transaction id in the case). Triage history stays per alert in case_events.
_ALERT_CASES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {ALERT_CASES} (
    model_version TEXT NOT NULL,
    transaction_id INTEGER NOT NULL REFERENCES {TRANSACTIONS}(transaction_id),
    case_id INTEGER NOT NULL,
    PRIMARY KEY (model_version, transaction_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_alert_cases_case ON {ALERT_CASES}(model_version, case_id)
"""


def _migration_alert_cases(conn: sqlite3.Connection) -> None:
    for statement in _ALERT_CASES_SCHEMA.split(";\n"):
        if statement.strip():
            conn.execute(statement)


ALERTS_TO_LINK = "alerts_to_link"

# Alerts stored but not yet placed in a case (schemewatch.linking): an alert is added here in
# the commit that stores its score, and leaves when linking gives it its case. Linking used to
# find new alerts by looking up every alert's case: seconds a live tick once a database holds
# hundreds of thousands of alerts, for a handful of new ones.
_ALERTS_TO_LINK_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {ALERTS_TO_LINK} (
    model_version TEXT NOT NULL,
    transaction_id INTEGER NOT NULL,
    PRIMARY KEY (model_version, transaction_id)
) WITHOUT ROWID
"""


def _migration_alerts_to_link(conn: sqlite3.Connection) -> None:
    conn.execute(_ALERTS_TO_LINK_SCHEMA)
    conn.execute(
        f"INSERT INTO {ALERTS_TO_LINK} (model_version, transaction_id) "
        f"SELECT s.model_version, s.transaction_id FROM {SCORES} s "
        f"LEFT JOIN {ALERT_CASES} ac ON ac.model_version = s.model_version "
        "AND ac.transaction_id = s.transaction_id "
        "WHERE s.is_alert = 1 AND ac.case_id IS NULL"
    )


def _migration_combined_risk(conn: sqlite3.Connection) -> None:
    # The autoencoder's risk combined with the re-ranker learnt from dispositions (0-100), for
    # rows scored by a model version that has a re-ranker; NULL otherwise (and for rows scored
    # before this migration). The alert queue orders by it when present, else by risk.
    conn.execute(f"ALTER TABLE {SCORES} ADD COLUMN combined_risk REAL")


SCORE_CLAIMS = "score_claims"

# Ranges of transactions claimed by monitor workers (store/claims.py); used when several
# workers share one PostgreSQL database. Done claims are kept: they say who scored what, when.
_SCORE_CLAIMS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SCORE_CLAIMS} (
    model_version TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    takeovers INTEGER NOT NULL DEFAULT 0,
    done_at REAL,
    PRIMARY KEY (model_version, first_id)
)
"""


def _migration_score_claims(conn: sqlite3.Connection) -> None:
    conn.execute(_SCORE_CLAIMS_SCHEMA)


def _migration_districts_index(conn: sqlite3.Connection) -> None:
    # The dashboard's district filter lists the (state, district) pairs of the registry: read
    # from this index a pair at a time (store/dashboard.py) instead of every beneficiary (2.4 s
    # at 2 million).
    _create_named_indexes(conn, _DISTRICTS_INDEX)


ALERT_OVERVIEW = "alert_overview"
ALERT_OVERVIEW_COLUMNS = (
    "model_version",
    "transaction_id",
    "paid_at",
    "scheme",
    "state",
    "score",
    "risk",
    "combined_risk",
)

# Each alert with what the overview filters, counts and ranks it by: its payment's time, scheme
# and state and its queue order. The overview's open cases, hour x weekday heatmap and map read
# these (about 1% of the rows) in one small table instead of looking up every alert's payment
# among all transactions (4 s a render at 10 million rows). Derived data, written with the
# scores in the same commit (store.insert_scores); scores are never changed, so these rows
# neither.
_ALERT_OVERVIEW_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {ALERT_OVERVIEW} (
    model_version TEXT NOT NULL,
    transaction_id INTEGER NOT NULL REFERENCES {TRANSACTIONS}(transaction_id),
    paid_at INTEGER NOT NULL,
    scheme TEXT NOT NULL,
    state TEXT NOT NULL,
    score REAL NOT NULL,
    risk REAL,
    combined_risk REAL,
    PRIMARY KEY (model_version, transaction_id)
) WITHOUT ROWID
"""
# The stored alerts' rows of ALERT_OVERVIEW, from their scores and payments.
ALERT_OVERVIEW_FROM_SCORES = (
    f"INSERT INTO {ALERT_OVERVIEW} ({', '.join(ALERT_OVERVIEW_COLUMNS)}) "
    "SELECT s.model_version, s.transaction_id, t.paid_at, t.scheme, t.state, s.score, s.risk, "
    f"s.combined_risk FROM {SCORES} s JOIN {TRANSACTIONS} t "
    "ON t.transaction_id = s.transaction_id WHERE s.is_alert = 1"
)


def _migration_alert_overview(conn: sqlite3.Connection) -> None:
    conn.execute(_ALERT_OVERVIEW_SCHEMA)
    conn.execute(ALERT_OVERVIEW_FROM_SCORES)


# Named, ordered migrations; a database records the last one applied in PRAGMA user_version.
MIGRATIONS = (
    ("initial schema", _migration_initial),
    ("model scores", _migration_scores),
    ("audit log", _migration_audit_log),
    ("alert cases", _migration_cases),
    ("daily summary kept by the monitor", _migration_summary),
    ("dashboard accounts and the session cookie key", _migration_accounts),
    ("tamper-evident trail: chained audit log and case events, sealed batches", _migration_trail),
    ("auditors' rules, their versions and hits", _migration_rules),
    ("risk 0-100 next to each score", _migration_risk),
    ("linked alerts grouped into cases", _migration_alert_cases),
    ("combined risk (autoencoder and re-ranker) next to each score", _migration_combined_risk),
    ("ranges claimed by monitor workers", _migration_score_claims),
    ("alerts waiting to be linked into cases", _migration_alerts_to_link),
    ("registry's districts read from an index", _migration_districts_index),
    ("alerts with what the overview filters and ranks them by", _migration_alert_overview),
)
SCHEMA_VERSION = len(MIGRATIONS)
# On PostgreSQL (no PRAGMA user_version) the applied migration numbers are kept in this table.
SCHEMA_VERSION_TABLE = "schema_version"


# New database files (and so their -wal and -shm files, which SQLite creates with the database
# file's permissions) are readable by their owner only: they hold payments and password hashes.
NEW_DATABASE_MODE = 0o600


def _create_private(path: Path, mode: int) -> None:
    """Create an empty file with `mode` unless it exists (SQLite then fills it in)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(f"cannot create database {path}: {exc}") from exc
    os.chmod(path, mode)  # the process umask must not widen or narrow what was asked for


# SQLite's page cache per connection. Readers keep a small one: the dashboard opens a connection
# per query in a long-lived server, and a large cache that one scan filled stayed in the server's
# memory after the connection closed (the allocator keeps freed memory; 280 MB after one visit
# of the alert queue at 10 million rows); the operating system caches the file for them anyway.
WRITER_CACHE_KIB = 262_144
READER_CACHE_KIB = 16_384


def connect(
    path: Path | str,
    *,
    readonly: bool = False,
    busy_timeout_ms: int = 10_000,
    new_file_mode: int = NEW_DATABASE_MODE,
    cache_kib: int | None = None,
):
    """Open the database with WAL, busy timeout, foreign keys and Row results.

    A database file that does not exist yet is created with `new_file_mode` (owner-only 0600).
    `cache_kib`: SQLite's page cache (default READER_CACHE_KIB or WRITER_CACHE_KIB).
    A postgresql:// URL opens a PostgreSQL database instead (store/engine.py).
    """
    if engine.is_postgres_url(path):
        url = path.url if isinstance(path, engine.DatabaseURL) else str(path)
        return engine.PostgresConnection(url, readonly=readonly, busy_timeout_ms=busy_timeout_ms)
    path = Path(path)
    try:
        if readonly:
            if not path.exists():
                raise DatabaseError(f"database {path} does not exist; run generate_database.py")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            if str(path) != ":memory:":
                _create_private(path, new_file_mode)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        cache_kib = cache_kib or (READER_CACHE_KIB if readonly else WRITER_CACHE_KIB)
        conn.execute(f"PRAGMA cache_size={-int(cache_kib)}")
        # Fewer, larger checkpoints: bulk writes (backfill, generator) spend less time in fsync.
        conn.execute("PRAGMA wal_autocheckpoint=16384")
        # Index builds may sort on a second core (store/ingest.py's bulk_load, with a small cache).
        conn.execute("PRAGMA threads=2")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def open_database(
    path: Path | str, *, busy_timeout_ms: int = 10_000, cache_kib: int | None = None
) -> sqlite3.Connection:
    """Connect for writing and bring the schema up to date."""
    conn = connect(path, busy_timeout_ms=busy_timeout_ms, cache_kib=cache_kib)
    migrate(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations this database has applied."""
    if engine.is_postgres(conn):
        if conn.execute("SELECT to_regclass(?)", (SCHEMA_VERSION_TABLE,)).fetchone()[0] is None:
            return 0
        row = conn.execute(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}").fetchone()
        return row[0] or 0
    return conn.execute("PRAGMA user_version").fetchone()[0]


def table_names(conn) -> list[str]:
    """Every table of this database, sorted (views and the engine's own tables left out)."""
    if engine.is_postgres(conn):
        sql = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    return sorted(row[0] for row in conn.execute(sql))


def _record_schema_version(conn, version: int) -> None:
    if engine.is_postgres(conn):
        table = f"{SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL)"
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table}")
        conn.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (?)", (version,))
    else:
        conn.execute(f"PRAGMA user_version={int(version)}")


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
            if schema_version(conn) >= version:  # another process applied it while we waited
                continue
            apply(conn)
            _record_schema_version(conn, version)
    return schema_version(conn)


@contextmanager
def written_in_place(conn) -> Iterator[None]:
    """For filling a new database: SQLite writes pages straight into the file (a rollback
    journal, which keeps only the few pages that existed before) instead of into the WAL and
    then again into the file at the checkpoint; back to WAL afterwards. Only when no other
    connection has the file open (else it stays in WAL). PostgreSQL: nothing changes."""
    if engine.is_postgres(conn):
        yield
        return
    try:
        switched = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    except sqlite3.OperationalError:  # another connection holds the file
        switched = False
    try:
        yield
    finally:
        if switched:
            conn.execute("PRAGMA journal_mode=WAL")


@contextmanager
def without_foreign_key_lookups(conn) -> Iterator[None]:
    """For writes whose references hold by construction (ids just read from, or just written
    to, the tables they refer to): SQLite skips the per-row lookup that checks them (a fifth of
    a backfill's writing; 1.4 s of a 1,000,000-row generation). PostgreSQL keeps its checks.
    Use outside a transaction: SQLite ignores the setting inside one."""
    sqlite = not engine.is_postgres(conn)
    if sqlite:
        conn.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if sqlite:
            conn.execute("PRAGMA foreign_keys=ON")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; lock errors made readable."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except engine.busy_errors() as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise DatabaseBusy(f"database is busy or locked ({exc}); try again shortly") from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except engine.busy_errors() as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise DatabaseBusy(
            f"could not commit, the database is busy ({exc}); nothing was written"
        ) from exc


BUSY_FIRST_WAIT, BUSY_LONGEST_WAIT = 0.5, 10.0  # seconds between tries, doubling


def retry_while_busy(action, on_busy=None, sleep=None):
    """action(), tried again for as long as it fails with DatabaseBusy (which wrote nothing).

    For loops that must not stop because another process held the lock past the busy timeout
    (the live feed, the live monitor). `on_busy(message)` hears each wait; Ctrl-C and SIGTERM
    still stop the loop during a wait.
    """
    import time

    sleep = sleep or time.sleep
    wait = BUSY_FIRST_WAIT
    while True:
        try:
            return action()
        except DatabaseBusy as busy:
            if on_busy is not None:
                on_busy(f"{busy}; trying again in {wait:g} s")
            sleep(wait)
            wait = min(wait * 2, BUSY_LONGEST_WAIT)


def _insert_sql(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    placeholders = ", ".join("?" for _ in columns)
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


ARRAY_IDS = 100_000  # ids bound as one PostgreSQL array by rows_by_ids


def rows_by_ids(conn: sqlite3.Connection, template: str, ids, leading: tuple = ()) -> list[tuple]:
    """Rows of `template` (with `{marks}` where the IN list goes) for many ids, 900 at a time.

    `leading` are the parameters bound before the ids. Duplicate ids are asked for once.
    On PostgreSQL the ids go as one array parameter (`= ANY(?)`), ARRAY_IDS at a time: one
    statement planned once, instead of thousands of `?` the driver must parse in every query,
    and the rows are loaded in one call (parsing, round trips and loading row by row took most
    of a monitor worker's time).
    """
    ids = list(dict.fromkeys(ids))
    rows: list[tuple] = []
    if engine.is_postgres(conn):
        sql = template.replace("IN ({marks})", "= ANY(?)")
        for start in range(0, len(ids), ARRAY_IDS):
            chunk = ids[start : start + ARRAY_IDS]
            rows.extend(conn.fetch_tuples(sql, (*leading, chunk)))
        return rows
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        sql = template.format(marks=", ".join("?" for _ in chunk))
        rows.extend(tuple(r) for r in conn.execute(sql, (*leading, *chunk)))
    return rows


def now() -> float:
    """Wall-clock unix seconds, the one clock ingestion uses."""
    return time.time()


def utc_iso(seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")
