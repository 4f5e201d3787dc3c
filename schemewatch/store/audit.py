"""The append-only, hash-chained audit log (see store/integrity.py)."""

from __future__ import annotations

import sqlite3

from schemewatch.store.integrity import AUDIT, append_chained
from schemewatch.store.schema import AUDIT_COLUMNS, AUDIT_LOG, now, write_transaction


def append_audit(
    conn: sqlite3.Connection,
    actor: str,
    action: str,
    target: str | None = None,
    old_value: str | None = None,
    new_value: str | None = None,
    details: str | None = None,
) -> None:
    """Add one chained entry to the audit log (inside the caller's write transaction)."""
    row = (now(), actor, action, target, old_value, new_value, details)
    if not conn.in_transaction:  # the chain needs the previous hash read and the insert as one
        with write_transaction(conn):
            append_chained(conn, AUDIT, row)
        return
    append_chained(conn, AUDIT, row)


def audit_entries(conn: sqlite3.Connection, limit: int = 1000) -> list[sqlite3.Row]:
    """The most recent audit entries, newest first."""
    columns = ", ".join(AUDIT_COLUMNS)
    sql = f"SELECT entry_id, {columns} FROM {AUDIT_LOG} ORDER BY entry_id DESC LIMIT ?"
    return conn.execute(sql, (limit,)).fetchall()


def last_audit_time(conn, action: str, actor: str) -> float | None:
    """When an actor last did an action (e.g. a failed login), or None."""
    sql = f"SELECT MAX(at) FROM {AUDIT_LOG} WHERE action = ? AND actor = ?"
    return conn.execute(sql, (action, actor)).fetchone()[0]
