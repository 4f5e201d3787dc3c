"""Dashboard user accounts: bcrypt-hashed credentials in a YAML file kept out of git (mode 0600).

The file is in the format streamlit-authenticator reads: credentials.usernames.<name> with a bcrypt
`password` hash and `roles`, plus a cookie section whose key is random, made when the file is.
No password or key is ever printed or logged.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import bcrypt
import yaml

from schemewatch.errors import SchemewatchError

ROLES = ("auditor", "supervisor", "admin")
MIN_PASSWORD_LENGTH = 10
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
COOKIE_NAME = "schemewatch_session"
SESSION_DAYS = 0.5  # sessions expire after 12 hours


class UserError(SchemewatchError):
    """A user account request that cannot be carried out."""


def new_credentials() -> dict:
    """An empty credentials file with a fresh random cookie key."""
    return {
        "credentials": {"usernames": {}},
        "cookie": {
            "name": COOKIE_NAME,
            "key": secrets.token_urlsafe(32),
            "expiry_days": SESSION_DAYS,
        },
    }


def load_credentials(path: Path) -> dict:
    """The credentials file, or a new one (not yet written) if there is none."""
    path = Path(path)
    if not path.exists():
        return new_credentials()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    if "credentials" not in data or "cookie" not in data:
        raise UserError(f"{path} is not a Schemewatch credentials file")
    data["credentials"].setdefault("usernames", {})
    return data


def save_credentials(path: Path, data: dict) -> None:
    """Write atomically, readable and writable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=True)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def hash_password(password: str) -> str:
    """A bcrypt hash of a password that meets the minimum length."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"passwords must be at least {MIN_PASSWORD_LENGTH} characters long")
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=12)).decode("ascii")


def check_password(data: dict, username: str, password: str) -> bool:
    """True when the password matches the user's stored hash."""
    user = data["credentials"]["usernames"].get(username)
    if user is None:
        return False
    return bcrypt.checkpw(password.encode("utf-8"), user["password"].encode("ascii"))


def add_user(path: Path, username: str, role: str, password: str, name: str | None = None) -> None:
    """Create an account; refuses an existing name, an unknown role or a short password."""
    if not USERNAME.match(username):
        raise UserError(
            "user names are 3-32 characters: lower-case letters, digits, '.', '_' or '-'"
        )
    if role not in ROLES:
        raise UserError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
    data = load_credentials(path)
    users = data["credentials"]["usernames"]
    if username in users:
        raise UserError(f"user '{username}' already exists")
    users[username] = {
        "name": name or username,
        "email": f"{username}@schemewatch.invalid",
        "password": hash_password(password),
        "roles": [role],
        "failed_login_attempts": 0,
        "logged_in": False,
    }
    save_credentials(path, data)


def remove_user(path: Path, username: str) -> None:
    """Delete an account."""
    data = load_credentials(path)
    if data["credentials"]["usernames"].pop(username, None) is None:
        raise UserError(f"no user '{username}'")
    save_credentials(path, data)


def reset_password(path: Path, username: str, password: str) -> None:
    """Give an account a new password."""
    data = load_credentials(path)
    user = data["credentials"]["usernames"].get(username)
    if user is None:
        raise UserError(f"no user '{username}'")
    user["password"] = hash_password(password)
    user["failed_login_attempts"] = 0
    save_credentials(path, data)


def list_users(path: Path) -> list[tuple[str, str, str]]:
    """(username, role, name) of every account, sorted by username."""
    users = load_credentials(path)["credentials"]["usernames"]
    return [(u, ",".join(v.get("roles") or []), v.get("name", u)) for u, v in sorted(users.items())]


def role_of(data: dict, username: str) -> str | None:
    """The user's role, or None for an unknown user."""
    user = data["credentials"]["usernames"].get(username)
    roles = (user or {}).get("roles") or []
    return roles[0] if roles else None


def random_password() -> str:
    """A strong random password (for the demo account)."""
    return secrets.token_urlsafe(12)
