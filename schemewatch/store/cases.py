"""Triage state of alerts (cases) and the labels auditors give.

A case's history is the append-only, hash-chained `case_events` table; its latest event is the
state, which the `cases` view shows (so dashboard queries join `cases` as before).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from schemewatch.store.integrity import CASE_HISTORY, append_chained
from schemewatch.store.schema import (
    CASE_COLUMNS,
    CASE_EVENTS,
    CASES,
    GROUND_TRUTH,
    SCORES,
    now,
    rows_by_ids,
)


def get_case(conn, transaction_id: int) -> sqlite3.Row | None:
    """The current state of one alert's case (CASE_COLUMNS), or None if nobody has touched it."""
    sql = f"SELECT {', '.join(CASE_COLUMNS)} FROM {CASES} WHERE transaction_id = ?"
    return conn.execute(sql, (transaction_id,)).fetchone()


def append_case_event(
    conn, transaction_id: int, version: int, user: str, *, claimed_by, disposition, role, note
) -> None:
    """Record a case's new state as its next event (inside the caller's write transaction).

    `role` is the role that set the disposition now in force; `version` must be one more than
    the case's current version (UNIQUE(transaction_id, version) refuses a lost update).
    """
    values = (transaction_id, version, claimed_by, disposition, role, note, user, now())
    append_chained(conn, CASE_HISTORY, values)


def case_history(conn, transaction_id: int) -> list[sqlite3.Row]:
    """Every event of one case, oldest first (CASE_COLUMNS)."""
    sql = (
        f"SELECT {', '.join(CASE_COLUMNS)} FROM {CASE_EVENTS} WHERE transaction_id = ? "
        "ORDER BY event_id"
    )
    return conn.execute(sql, (transaction_id,)).fetchall()


def case_histories(conn, transaction_ids) -> list[tuple]:
    """Every event of several alerts' cases as CASE_COLUMNS tuples, in the order they happened."""
    template = (
        f"SELECT event_id, {', '.join(CASE_COLUMNS)} FROM {CASE_EVENTS} "
        "WHERE transaction_id IN ({marks})"
    )
    rows = rows_by_ids(conn, template, [int(t) for t in transaction_ids])
    return [row[1:] for row in sorted(rows)]


def version_scores(conn, version: str, chunk_rows: int = 500_000) -> Iterator[list[tuple]]:
    """(score,) of every row this version scored, streamed: no join, the scores table alone."""
    sql = f"SELECT score FROM {SCORES} WHERE model_version = ?"
    yield from _streamed(conn, sql, (version,), chunk_rows)


def fraud_scores(conn, version: str) -> list[float]:
    """The scores of the rows labelled fraud (about 1%), found from the labels' side: an
    auditor's disposition first (confirmed fraud or false positive), else the ground truth."""
    sql = (
        f"SELECT s.score FROM {GROUND_TRUTH} g JOIN {SCORES} s "
        "ON s.model_version = ? AND s.transaction_id = g.transaction_id "
        f"LEFT JOIN {CASES} c ON c.transaction_id = g.transaction_id "
        "WHERE c.disposition IS NULL OR c.disposition <> 'false_positive' "
        f"UNION ALL SELECT s.score FROM {CASES} c JOIN {SCORES} s "
        "ON s.model_version = ? AND s.transaction_id = c.transaction_id "
        f"LEFT JOIN {GROUND_TRUTH} g ON g.transaction_id = c.transaction_id "
        "WHERE c.disposition = 'confirmed_fraud' AND g.transaction_id IS NULL"
    )
    return [row[0] for row in conn.execute(sql, (version, version)).fetchall()]


def _streamed(conn, sql: str, params: tuple, chunk_rows: int) -> Iterator[list[tuple]]:
    cursor = conn.cursor()  # on PostgreSQL a server-side cursor: rows arrive as fetched
    cursor.row_factory = None  # plain tuples
    cursor.execute(sql, params)
    while chunk := cursor.fetchmany(chunk_rows):
        yield chunk


def auditor_labels(conn) -> list[tuple[int, str]]:
    """(transaction_id, disposition) of every alert closed as confirmed fraud or false positive.

    The auditors' labels only: the generator's ground truth is never read here.
    """
    sql = (
        f"SELECT transaction_id, disposition FROM {CASES} WHERE disposition IN (?, ?) "
        "ORDER BY transaction_id"
    )
    return conn.execute(sql, ("confirmed_fraud", "false_positive")).fetchall()
