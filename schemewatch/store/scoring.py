"""Bulk reads for scoring and the writes of scores and the daily summary."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from schemewatch.errors import DatabaseError
from schemewatch.store import engine
from schemewatch.store.claims import finish_claim
from schemewatch.store.rules import insert_rule_hits
from schemewatch.store.schema import (
    ALERT_OVERVIEW_FROM_SCORES,
    ALERTS_TO_LINK,
    BENEFICIARIES,
    DAILY_SUMMARY,
    ENROLMENTS,
    GROUND_TRUTH,
    SCORES,
    SCORING_COLUMNS,
    SUMMARY_COLUMNS,
    TRANSACTIONS,
    _insert_sql,
    connect,
    rows_by_ids,
    without_foreign_key_lookups,
    write_transaction,
)

if TYPE_CHECKING:
    import pandas as pd

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
    "risk",
    "combined_risk",
)
SUBPROCESS_READ_ROWS = 50_000


def read_frame(path: Path | str, sql: str, params: tuple = ()):
    """Run a read-only query on its own sqlite3 connection; returns a pandas DataFrame."""
    import pandas as pd

    if engine.is_postgres_url(path):
        return engine.read_arrow(path, sql, params).to_pandas()
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
    import threading

    if engine.is_postgres_url(path):
        return engine.start_arrow_read(path, sql, params)
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
    # The child's output is taken as it comes, on a thread of ours: a pipe holds 64 KB, so a
    # child whose output nobody reads waits, and the caller would wait for the whole transfer.
    taken: list[tuple[bytes, bytes]] = []
    taking = threading.Thread(target=lambda: taken.append(child.communicate()), daemon=True)
    taking.start()

    def finish():
        taking.join()
        if not taken:
            raise DatabaseError(f"cannot read {path}: the reading process's output was lost")
        output, errors = taken[0]
        if child.returncode != 0:
            last_line = (errors.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise DatabaseError(f"cannot read {path}: {last_line}")
        return arrow_stream_table(output, path).to_pandas()

    return finish


def arrow_stream_table(output: bytes, path):
    """The Arrow table a reading process wrote, or DatabaseError if its output is damaged."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(output).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatabaseError(
            f"cannot read {path}: the reading process's output ({len(output):,} bytes) is "
            f"not a complete Arrow stream ({exc}); run the command again"
        ) from exc


def transactions_for_scoring(path: Path | str, after_id: int, through_id: int | None = None):
    """Transactions with after_id < transaction_id <= through_id, for feature computation."""
    return start_transactions_read(path, after_id, through_id)()


# ADBC infers a column's type from its first rows: a chunk that starts with many payments without
# an agent (bank credits settle in batches) read agent_id as integers and failed on the first id.
# These columns are read as '' for NULL and turned back into missing values.
_NULLABLE_TEXT = ("account_id", "agent_id")


def start_transactions_read(path: Path | str, after_id: int, through_id: int | None = None):
    """Begin reading transactions for scoring; call the result to get the DataFrame."""
    upper = "" if through_id is None else " AND transaction_id <= ?"
    params = (after_id,) if through_id is None else (after_id, through_id)
    columns = _select_list(SCORING_COLUMNS, _NULLABLE_TEXT)
    sql = (
        f"SELECT {', '.join(columns)}, state FROM {TRANSACTIONS} "
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
        reading = start_read_in_subprocess(path, sql, params)
        return lambda: _with_missing_values(reading())
    frame = _with_missing_values(read_frame(path, sql, params))
    return lambda: frame


def _select_list(columns, nullable_text) -> list[str]:
    """The columns to select, nullable text as '' (turned back by _with_missing_values)."""
    return [f"COALESCE({c}, '') AS {c}" if c in nullable_text else c for c in columns]


def _with_missing_values(frame, nullable_text=_NULLABLE_TEXT):
    for column in nullable_text:
        values = frame[column]
        frame[column] = values.mask(values == "")
    return frame


def earlier_transactions(
    conn: sqlite3.Connection,
    *,
    through_id: int,
    beneficiary_ids: list,
    agent_ids: list,
    agents_since: int,
    account_ids: list = (),
):
    """Transactions up to through_id of some beneficiaries (all their payments), of some
    payout agents (paid since agents_since) and, when asked, of some bank accounts (all their
    payments), for rows whose history a bounded tail lacks."""
    import pandas as pd

    columns = f"{', '.join(SCORING_COLUMNS)}, state"
    by_beneficiary = (
        f"SELECT {columns} FROM {TRANSACTIONS} INDEXED BY idx_transactions_beneficiary_paid_at "
        "WHERE transaction_id <= ? AND beneficiary_id IN ({marks})"
    )
    by_agent = (
        f"SELECT {columns} FROM {TRANSACTIONS} INDEXED BY idx_transactions_agent_paid_at "
        "WHERE transaction_id <= ? AND paid_at >= ? AND agent_id IN ({marks})"
    )
    rows = rows_by_ids(conn, by_beneficiary, beneficiary_ids, (through_id,))
    rows += rows_by_ids(conn, by_agent, agent_ids, (through_id, agents_since))
    by_account = (
        f"SELECT {columns} FROM {TRANSACTIONS} INDEXED BY idx_transactions_account_paid_at "
        "WHERE transaction_id <= ? AND account_id IN ({marks})"
    )
    rows += rows_by_ids(conn, by_account, account_ids, (through_id,))
    frame = pd.DataFrame.from_records(rows, columns=[*SCORING_COLUMNS, "state"])
    return frame.drop_duplicates("transaction_id").sort_values("transaction_id")


def ground_truth_frame(path: Path | str):
    """Every labelled transaction (evaluation only: training and scoring never call this)."""
    return read_frame(path, f"SELECT transaction_id, typology, group_id FROM {GROUND_TRUTH}")


_REGISTRY_CONTEXT = f"""
SELECT b.beneficiary_id, b.home_latitude, b.home_longitude, b.date_of_death,
    (SELECT COUNT(*) FROM {BENEFICIARIES} p WHERE p.phone_hash = b.phone_hash)
        AS phone_sharers,
    (SELECT COUNT(*) FROM {BENEFICIARIES} h INDEXED BY idx_beneficiaries_phone
        WHERE h.phone_hash = b.phone_hash
        AND (ABS(h.home_latitude - b.home_latitude) > 0.01
            OR ABS(h.home_longitude - b.home_longitude) > 0.01))
        AS phone_sharers_at_other_homes,
    (SELECT COUNT(*) FROM {BENEFICIARIES} m INDEXED BY idx_beneficiaries_phone
        WHERE m.phone_hash = b.phone_hash
        AND m.enrolled_by = b.enrolled_by
        AND m.enrolled_on BETWEEN date(b.enrolled_on, '-30 day')
            AND date(b.enrolled_on, '+30 day'))
        AS phone_sharers_enrolled_within_30_days,
    (SELECT COUNT(*) FROM {BENEFICIARIES} o WHERE o.enrolled_by = b.enrolled_by
        AND o.enrolled_on BETWEEN date(b.enrolled_on, '-1 day') AND date(b.enrolled_on, '+1 day'))
        AS operator_enrolments_same_days
FROM {BENEFICIARIES} b"""


def registry_context(conn: sqlite3.Connection, beneficiary_ids=None) -> list[tuple]:
    """Home, death and enrolment context per beneficiary (all, or only those given)."""
    if beneficiary_ids is None:
        return [tuple(r) for r in conn.execute(_REGISTRY_CONTEXT)]
    return rows_by_ids(
        conn, _REGISTRY_CONTEXT + " WHERE b.beneficiary_id IN ({marks})", beneficiary_ids
    )


BENEFICIARY_RECORD_COLUMNS = (
    "beneficiary_id",
    "home_latitude",
    "home_longitude",
    "date_of_death",
    "phone_hash",
    "enrolled_by",
    "enrolled_on",
)


def beneficiary_records(conn) -> pd.DataFrame:
    """Every beneficiary's home, death, phone and enrolment (BENEFICIARY_RECORD_COLUMNS; None
    where unknown): what the registry's counts are computed from in one pass, instead of four
    correlated subqueries a beneficiary (registry_context, kept for a few at a time)."""
    return _start_whole_table_read(
        conn, BENEFICIARIES, BENEFICIARY_RECORD_COLUMNS, _NULLABLE_RECORD_TEXT
    )()


_NULLABLE_RECORD_TEXT = ("date_of_death", "phone_hash", "enrolled_by", "enrolled_on")


ENTITLEMENT_COLUMNS = ("beneficiary_id", "scheme", "entitlement")


def all_entitlements(conn) -> pd.DataFrame:
    """(beneficiary_id, scheme, entitlement) of every enrolment, as a DataFrame."""
    return start_all_entitlements_read(conn)()


def start_all_entitlements_read(conn):
    """Begin reading all_entitlements (in a child process); call the result for the DataFrame."""
    return _start_whole_table_read(conn, ENROLMENTS, ENTITLEMENT_COLUMNS)


def _start_whole_table_read(conn, table: str, columns: tuple, nullable_text: tuple = ()):
    """Begin reading some columns of every row of a table; call the result for a DataFrame.

    Through Arrow in a child process when the database is a file or a server (no Python object
    per value: 2 million beneficiaries read as tuples took 5 s and 1.2 GB), else row by row.
    Nullable text is read as '' and turned back into a missing value, as ADBC infers a column's
    type from its first rows."""
    import pandas as pd

    location = location_of(conn)
    if location is None:
        sql = f"SELECT {', '.join(columns)} FROM {table}"
        frame = pd.DataFrame([tuple(r) for r in conn.execute(sql)], columns=list(columns))
        return lambda: frame
    sql = f"SELECT {', '.join(_select_list(columns, nullable_text))} FROM {table}"
    reading = start_read_in_subprocess(location, sql)
    return lambda: _with_missing_values(reading(), nullable_text)


def location_of(conn):
    """The database a connection is open on (a file path or a server URL); None in memory."""
    if engine.is_postgres(conn):
        return conn.location
    row = conn.execute("PRAGMA database_list").fetchone()
    return Path(row[2]) if row is not None and row[2] else None


def entitlements(conn: sqlite3.Connection, beneficiary_ids) -> list[tuple]:
    """(beneficiary_id, scheme, entitlement) of these beneficiaries' enrolments (all of them:
    all_entitlements)."""
    sql = f"SELECT {', '.join(ENTITLEMENT_COLUMNS)} FROM {ENROLMENTS}"
    return rows_by_ids(conn, sql + " WHERE beneficiary_id IN ({marks})", beneficiary_ids)


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
    """Insert score rows (SCORE_COLUMNS order); the primary key refuses a second score.

    The alerts among them wait in ALERTS_TO_LINK until linking gives them a case, and join
    ALERT_OVERVIEW (the overview's alerts with their payments' time, scheme and state).
    """
    rows = list(rows)
    conn.executemany(_insert_sql(SCORES, SCORE_COLUMNS), rows)
    version, transaction, alert = (
        SCORE_COLUMNS.index(c) for c in ("model_version", "transaction_id", "is_alert")
    )
    alerts = [(row[version], row[transaction]) for row in rows if row[alert]]
    conn.executemany(
        f"INSERT OR IGNORE INTO {ALERTS_TO_LINK} (model_version, transaction_id) VALUES (?, ?)",
        alerts,
    )
    conn.executemany(
        f"{ALERT_OVERVIEW_FROM_SCORES} AND s.model_version = ? AND s.transaction_id = ?", alerts
    )


def record_scores(conn: sqlite3.Connection, rows, summary, rule_hits=(), claim=None) -> None:
    """Insert score rows, add them to the daily summary and record rule hits, in one commit.

    The transaction ids come from the append-only transactions table the monitor has just read,
    so the per-row foreign-key lookup is skipped for this write (it costs a fifth of a backfill);
    the primary key still refuses a second score. A worker's `claim` is marked done in the
    same commit (store/claims.py).
    """
    with without_foreign_key_lookups(conn), write_transaction(conn):
        if claim is not None:  # first: a claim taken over writes nothing
            finish_claim(conn, claim)
        insert_scores(conn, rows)
        add_to_summary(conn, summary)
        insert_rule_hits(conn, rule_hits)


def add_to_summary(conn, rows) -> None:
    """Add per (version, day, scheme, state) counts to the daily summary (SUMMARY_COLUMNS order)."""
    sql = (
        _insert_sql(DAILY_SUMMARY, SUMMARY_COLUMNS)
        + " ON CONFLICT(model_version, day, scheme, state) DO UPDATE SET "
        f"transactions = {DAILY_SUMMARY}.transactions + excluded.transactions, "
        f"amount = {DAILY_SUMMARY}.amount + excluded.amount, "
        f"alerts = {DAILY_SUMMARY}.alerts + excluded.alerts, "
        f"alert_amount = {DAILY_SUMMARY}.alert_amount + excluded.alert_amount"
    )
    conn.executemany(sql, rows)
