"""Triage state of alerts (cases) and the labels auditors give."""

from __future__ import annotations

import sqlite3

from schemewatch.store.schema import CASES, GROUND_TRUTH, SCORES, now


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
