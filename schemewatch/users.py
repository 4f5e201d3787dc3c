"""Dashboard accounts, kept in the database: bcrypt hashes, roles, failed logins and locks.

Every change runs in one write transaction together with its audit entry, so a change and its
record cannot part. Each password reset, role change and removal raises the account's credential
version, which ends the sessions and cookies issued before it (see `schemewatch.sessions`).
No password, hash or cookie key is ever printed or logged.

A `credentials.yaml` from earlier versions is imported once (`import_credentials_file`), after
which the file is no longer read.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from schemewatch import store
from schemewatch.errors import DatabaseError, SchemewatchError

ROLES = store.ROLES
MIN_PASSWORD_LENGTH = 10
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
MAX_FAILED_LOGINS = 5
LOCKOUT_SECONDS = 15 * 60
BCRYPT_ROUNDS = 12
_IMPORTED = "credentials_file_imported"


class UserError(SchemewatchError):
    """A user account request that cannot be carried out."""


def open_accounts(db_path: Path) -> sqlite3.Connection:
    """Open an existing database for account work; a missing file is an error, not created."""
    db_path = store.locate(db_path)
    if isinstance(db_path, Path) and not db_path.is_file():
        raise DatabaseError(
            f"database {db_path} does not exist; give --db (or SCHEMEWATCH_DB) the database the "
            "dashboard uses, or create it first with generate_database.py or schemewatch import"
        )
    return store.open_database(db_path)


def check_new_password(password: str) -> None:
    """Refuse a password that is too short or that begins or ends with blank characters.

    Passwords are compared exactly as typed; a leading or trailing blank is refused at creation
    rather than silently stripped, so what an admin sets is what the user types.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"passwords must be at least {MIN_PASSWORD_LENGTH} characters long")
    if password != password.strip():
        raise UserError("passwords may not begin or end with a space or other blank character")


def hash_password(password: str) -> str:
    """A bcrypt hash of a password that passes `check_new_password`."""
    check_new_password(password)
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
    return hashed.decode("ascii")


def _matches(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode("utf-8"), password_hash.encode("ascii"))
    except ValueError:
        return False


@functools.cache
def _decoy_hash() -> str:
    """A hash to check unknown user names against, so they take as long as known ones."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()


def _check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise UserError(
            "user names are 3-32 characters: lower-case letters, digits, '.', '_' or '-'"
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")


def add_user(
    conn: sqlite3.Connection,
    username: str,
    role: str,
    password: str,
    name: str | None = None,
    *,
    actor: str,
) -> None:
    """Create an account; refuses an existing name, an unknown role or a weak password."""
    _check_username(username)
    _check_role(role)
    password_hash = hash_password(password)
    with store.write_transaction(conn):
        if not store.insert_user(
            conn, username, name or username, role, password_hash, store.now()
        ):
            raise UserError(f"user '{username}' already exists")
        store.append_audit(conn, actor, "user added", username, None, role)


def _existing(conn: sqlite3.Connection, username: str) -> sqlite3.Row:
    account = store.get_user(conn, username)
    if account is None:
        raise UserError(f"no user '{username}'")
    return account


def remove_user(conn: sqlite3.Connection, username: str, *, actor: str) -> None:
    """Remove an account; its sessions end at their next page load."""
    with store.write_transaction(conn):
        account = _existing(conn, username)
        store.mark_removed(conn, username, store.now())
        store.append_audit(conn, actor, "user removed", username, account["role"], None)


def reset_password(conn: sqlite3.Connection, username: str, password: str, *, actor: str) -> None:
    """Give an account a new password; unlocks it and ends its sessions."""
    password_hash = hash_password(password)
    with store.write_transaction(conn):
        _existing(conn, username)
        store.set_password_hash(conn, username, password_hash, store.now())
        store.append_audit(conn, actor, "password reset", username)


def change_role(conn: sqlite3.Connection, username: str, role: str, *, actor: str) -> None:
    """Give an account another role; its sessions end, so the new role applies at once."""
    _check_role(role)
    with store.write_transaction(conn):
        account = _existing(conn, username)
        if account["role"] == role:
            return
        store.set_role(conn, username, role, store.now())
        store.append_audit(conn, actor, "role changed", username, account["role"], role)


def list_users(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(username, role, name) of every current account, sorted by username."""
    return [(r["username"], r["role"], r["display_name"]) for r in store.list_accounts(conn)]


def role_of(conn: sqlite3.Connection, username: str) -> str | None:
    """The account's current role, or None when there is no such account."""
    account = store.get_user(conn, username)
    return None if account is None else account["role"]


def check_password(conn: sqlite3.Connection, username: str, password: str) -> bool:
    """True when the password matches the account's stored hash (no counting, no audit)."""
    account = store.get_user(conn, username)
    return account is not None and _matches(password, account["password_hash"])


def random_password() -> str:
    """A strong random password (for the demo account)."""
    return secrets.token_urlsafe(12)


def cookie_key(conn: sqlite3.Connection) -> str:
    """The session cookie's signing key, made at random when the accounts table was."""
    key = store.get_account_setting(conn, "cookie_key")
    if key is None:
        raise DatabaseError("the database has no session cookie key; run any schemewatch command")
    return key


@dataclass(frozen=True)
class LoginResult:
    """What a login attempt came to; role, name and version are set only when it succeeded."""

    outcome: str  # "signed in", "wrong", "locked"
    username: str
    role: str | None = None
    name: str | None = None
    credential_version: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "signed in"


def normalise_username(typed: str) -> str:
    """What a typed user name is looked up as (and audited as): trimmed, lower case, bounded."""
    return typed.strip().lower()[:64]


def attempt_login(
    conn: sqlite3.Connection, typed_username: str, password: str, now: float | None = None
) -> LoginResult:
    """Check a password, counting failures and locking atomically; audit the attempt.

    Every attempt leaves one audit entry: `login`, `login failed` (wrong password or unknown
    user name) or `login refused` (account locked). The password is never recorded.
    """
    now = store.now() if now is None else now
    username = normalise_username(typed_username)
    account = store.get_user(conn, username)
    if account is None:
        _matches(password, _decoy_hash())
        return _audited(conn, username, "wrong", "login failed", "unknown user name")
    if account["locked_until"] is not None and account["locked_until"] > now:
        return _locked(conn, username, account["locked_until"])
    if _matches(password, account["password_hash"]):
        return _signed_in(conn, username, account["credential_version"], now)
    return _wrong_password(conn, username, now)


def _audited(conn, username: str, outcome: str, action: str, details: str, **fields):
    with store.write_transaction(conn):
        store.append_audit(conn, username, action, None, None, None, details)
    return LoginResult(outcome, username, **fields)


def _locked(conn, username: str, until: float) -> LoginResult:
    details = f"account locked until {store.utc_iso(until)}"
    return _audited(conn, username, "locked", "login refused", details)


def _wrong_password(conn, username: str, now: float) -> LoginResult:
    with store.write_transaction(conn):
        counted = store.record_failed_login(conn, username, MAX_FAILED_LOGINS, LOCKOUT_SECONDS, now)
        if counted is None:  # locked (or removed) by another session since we looked
            account = store.get_user(conn, username)
            if account is None:
                details = "unknown user name (removed during the attempt)"
                store.append_audit(conn, username, "login failed", None, None, None, details)
                return LoginResult("wrong", username)
            details = f"account locked until {store.utc_iso(account['locked_until'])}"
            store.append_audit(conn, username, "login refused", None, None, None, details)
            return LoginResult("locked", username)
        details = f"wrong password ({counted['failed_logins']} of {MAX_FAILED_LOGINS})"
        if counted["locked_until"] is not None:
            details += f"; locked for {LOCKOUT_SECONDS // 60} minutes"
        store.append_audit(conn, username, "login failed", None, None, None, details)
    return LoginResult("wrong", username)


def _signed_in(conn, username: str, version: int, now: float) -> LoginResult:
    with store.write_transaction(conn):
        fresh = store.record_successful_login(conn, username, version, now)
        if fresh is None:  # locked, changed or removed while the password was being checked
            account = store.get_user(conn, username)
            until = account["locked_until"] if account else None
            if until is not None and until > now:
                details = f"account locked until {store.utc_iso(until)}"
                store.append_audit(conn, username, "login refused", None, None, None, details)
                return LoginResult("locked", username)
            details = "credentials changed while signing in"
            store.append_audit(conn, username, "login failed", None, None, None, details)
            return LoginResult("wrong", username)
        store.append_audit(conn, username, "login")
    return LoginResult(
        "signed in", username, fresh["role"], fresh["display_name"], fresh["credential_version"]
    )


def record_cookie_login(conn: sqlite3.Connection, username: str, problem: str | None) -> None:
    """Audit a session re-opened from the re-login cookie, or refused and why."""
    if problem is None:
        action, details = "login", "from the session cookie"
    else:
        action, details = "login refused", f"session cookie: {problem}"
    with store.write_transaction(conn):
        store.append_audit(conn, username, action, None, None, None, details)


def record_logout(conn: sqlite3.Connection, username: str, reason: str) -> None:
    """Audit the end of a session: signed out, or why it was ended."""
    with store.write_transaction(conn):
        store.append_audit(conn, username, "logout", None, None, None, reason)


def import_credentials_file(conn: sqlite3.Connection, path: Path, *, actor: str) -> int | None:
    """Move the accounts of an old credentials.yaml into the database, once.

    Returns how many accounts were imported, or None when there was nothing to do (no file, or
    imported before). Names that already exist in the database are left as they are. After this
    the file is never read again; each imported account is audited.
    """
    path = Path(path)
    if store.get_account_setting(conn, _IMPORTED) is not None or not path.is_file():
        return None
    entries = _read_credentials_file(path)
    imported = 0
    with store.write_transaction(conn):
        if store.get_account_setting(conn, _IMPORTED) is not None:
            return None
        for username, name, role, password_hash in entries:
            if store.insert_user(conn, username, name, role, password_hash, store.now()):
                store.append_audit(conn, actor, "user imported", username, None, role, str(path))
                imported += 1
        marker = {"path": str(path.resolve()), "at": store.utc_iso(store.now()), "count": imported}
        store.set_account_setting(conn, _IMPORTED, json.dumps(marker))
    return imported


def _read_credentials_file(path: Path) -> list[tuple[str, str, str, str]]:
    """(username, name, role, bcrypt hash) of each account in a streamlit-authenticator file."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable credentials file: {exc}") from None
    usernames = (data.get("credentials") or {}).get("usernames") if isinstance(data, dict) else None
    if not isinstance(usernames, dict):
        raise UserError(f"{path} is not a Schemewatch credentials file")
    entries = []
    for username, entry in sorted(usernames.items()):
        entry = entry if isinstance(entry, dict) else {}
        role = (entry.get("roles") or ["auditor"])[0]
        password_hash = str(entry.get("password") or "")
        if not USERNAME.match(str(username)) or role not in ROLES:
            raise UserError(f"{path}: account '{username}' has an unusable name or role")
        if not password_hash.startswith("$2"):
            raise UserError(f"{path}: account '{username}' has no bcrypt hash; nothing imported")
        entries.append((username, str(entry.get("name") or username), role, password_hash))
    return entries
