"""Dashboard accounts: users, their failed-login counters and locks, and the session cookie key.

Writers call these inside the caller's `write_transaction()`. Counting a failed login and locking
the account is one UPDATE, so parallel sessions cannot read the same count and each add one.
"""

from __future__ import annotations

import sqlite3

from schemewatch.store.schema import ACCOUNT_SETTINGS, USER_COLUMNS, USERS

_ACTIVE = "removed_at IS NULL"


def get_user(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    """The account's row, or None when there is no such account or it was removed."""
    sql = f"SELECT {', '.join(USER_COLUMNS)} FROM {USERS} WHERE username = ? AND {_ACTIVE}"
    return conn.execute(sql, (username,)).fetchone()


def list_accounts(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every current account (username, display_name, role), sorted by username."""
    sql = f"SELECT username, display_name, role FROM {USERS} WHERE {_ACTIVE} ORDER BY username"
    return conn.execute(sql).fetchall()


def count_accounts(conn: sqlite3.Connection) -> int:
    """How many current accounts there are."""
    return conn.execute(f"SELECT COUNT(*) FROM {USERS} WHERE {_ACTIVE}").fetchone()[0]


def insert_user(
    conn: sqlite3.Connection,
    username: str,
    display_name: str,
    role: str,
    password_hash: str,
    at: float,
) -> bool:
    """Create an account (or bring back a removed name, continuing its credential version).

    Returns False, changing nothing, when a current account has the name.
    """
    sql = f"""
        INSERT INTO {USERS} (username, display_name, role, password_hash, credential_version,
                             credentials_changed_at, failed_logins, created_at, updated_at)
        VALUES (?, ?, ?, ?, 1, ?, 0, ?, ?)
        ON CONFLICT (username) DO UPDATE SET
            display_name = excluded.display_name,
            role = excluded.role,
            password_hash = excluded.password_hash,
            credential_version = {USERS}.credential_version + 1,
            credentials_changed_at = excluded.credentials_changed_at,
            failed_logins = 0,
            locked_until = NULL,
            last_seen_at = NULL,
            removed_at = NULL,
            updated_at = excluded.updated_at
        WHERE {USERS}.removed_at IS NOT NULL
    """
    cursor = conn.execute(sql, (username, display_name, role, password_hash, at, at, at))
    return cursor.rowcount == 1


def _change(conn: sqlite3.Connection, username: str, assignments: str, values: tuple, at: float):
    """Apply a credential change: the version goes up, so open sessions end."""
    sql = f"""
        UPDATE {USERS} SET {assignments},
            credential_version = credential_version + 1,
            credentials_changed_at = ?,
            updated_at = ?
        WHERE username = ? AND {_ACTIVE}
    """
    return conn.execute(sql, (*values, at, at, username)).rowcount == 1


def set_password_hash(conn: sqlite3.Connection, username: str, password_hash: str, at: float):
    """New password hash; clears the failure counter and any lock. False for no such account."""
    assignments = "password_hash = ?, failed_logins = 0, locked_until = NULL"
    return _change(conn, username, assignments, (password_hash,), at)


def set_role(conn: sqlite3.Connection, username: str, role: str, at: float) -> bool:
    """New role. False for no such account."""
    return _change(conn, username, "role = ?", (role,), at)


def mark_removed(conn: sqlite3.Connection, username: str, at: float) -> bool:
    """Remove an account (the row stays for its version count). False for no such account."""
    return _change(conn, username, "removed_at = ?", (at,), at)


def record_failed_login(
    conn: sqlite3.Connection, username: str, limit: int, lock_seconds: float, at: float
) -> sqlite3.Row | None:
    """Count one wrong password and lock the account at `limit`, in one statement.

    Returns the new (failed_logins, locked_until), or None when the account is locked (or gone):
    then nothing was counted. A lock that has run out starts a fresh count.
    """
    count = "(CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failed_logins + 1 END)"
    sql = f"""
        UPDATE {USERS} SET
            failed_logins = {count},
            locked_until = CASE WHEN {count} >= ? THEN ? ELSE NULL END,
            updated_at = ?
        WHERE username = ? AND {_ACTIVE} AND (locked_until IS NULL OR locked_until <= ?)
        RETURNING failed_logins, locked_until
    """
    return conn.execute(sql, (limit, at + lock_seconds, at, username, at)).fetchone()


def record_successful_login(
    conn: sqlite3.Connection, username: str, credential_version: int, at: float
) -> sqlite3.Row | None:
    """Clear the failure counter if the account is unlocked and its credentials unchanged.

    Returns (role, display_name, credential_version), or None when the account was locked,
    changed or removed since its password was checked: then the login does not count.
    """
    sql = f"""
        UPDATE {USERS} SET failed_logins = 0, locked_until = NULL, last_seen_at = ?
        WHERE username = ? AND {_ACTIVE} AND credential_version = ?
            AND (locked_until IS NULL OR locked_until <= ?)
        RETURNING role, display_name, credential_version
    """
    return conn.execute(sql, (at, username, credential_version, at)).fetchone()


def touch_user(conn: sqlite3.Connection, username: str, at: float, every: float) -> None:
    """Record activity (for the idle limit of cookie logins), at most once per `every` seconds."""
    sql = f"""
        UPDATE {USERS} SET last_seen_at = ?
        WHERE username = ? AND {_ACTIVE} AND (last_seen_at IS NULL OR last_seen_at <= ?)
    """
    conn.execute(sql, (at, username, at - every))


def get_account_setting(conn: sqlite3.Connection, key: str) -> str | None:
    """One account setting (the cookie key, whether credentials.yaml was imported), or None."""
    row = conn.execute(f"SELECT value FROM {ACCOUNT_SETTINGS} WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_account_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Record one account setting."""
    sql = (
        f"INSERT INTO {ACCOUNT_SETTINGS} (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    conn.execute(sql, (key, value))
