"""When a dashboard session, or the cookie that re-opens one, is still good.

Pure checks, run on every page load against the account as it is in the database now: the account
still exists, its credential version is the one the session was issued under (a password reset,
role change or removal raises it), and the session is within its absolute and idle lifetimes.
The clock is an argument, so tests need not sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SESSION_HOURS = 12  # absolute lifetime of a session and of its cookie
IDLE_MINUTES = 30  # a session with no page load for this long is over
TOUCH_SECONDS = 60  # how often an open session records activity in the database


@dataclass(frozen=True)
class Lifetimes:
    """How long a session may last in all, and without activity (seconds)."""

    absolute: float = SESSION_HOURS * 3600
    idle: float = IDLE_MINUTES * 60


@dataclass(frozen=True)
class Session:
    """What a browser session was issued under."""

    username: str
    credential_version: int
    started_at: float
    last_seen_at: float

    def seen(self, now: float) -> Session:
        return replace(self, last_seen_at=now)


def session_problem(session: Session, account, now: float, limits: Lifetimes) -> str | None:
    """Why the session is over (a sentence for the user), or None while it is good."""
    if account is None:
        return "Your account has been removed. Ask an admin if this is a mistake."
    if account["credential_version"] != session.credential_version:
        return "Your account was changed (password or role). Please sign in again."
    if now - session.started_at >= limits.absolute:
        hours = limits.absolute / 3600
        return f"Your session reached its {hours:g}-hour limit. Please sign in again."
    if now - session.last_seen_at >= limits.idle:
        minutes = limits.idle / 60
        return f"You were inactive for more than {minutes:g} minutes. Please sign in again."
    return None


def cookie_problem(token: dict, account, now: float, limits: Lifetimes) -> str | None:
    """Why a signed re-login cookie may not open a session (a sentence), or None if it may.

    The library's cookie carries only the user name and its expiry, so it was issued at
    expiry - absolute lifetime. It is refused when issued before the account's last credential
    change, when expired, or when the account has had no activity for the idle limit.
    """
    if account is None:
        return "Your account has been removed. Ask an admin if this is a mistake."
    issued_at = float(token["exp_date"]) - limits.absolute
    if issued_at < account["credentials_changed_at"]:
        return "Your account was changed (password or role). Please sign in again."
    if now >= float(token["exp_date"]):
        return "Your session expired. Please sign in again."
    last_seen = account["last_seen_at"]
    if last_seen is None or now - last_seen >= limits.idle:
        minutes = limits.idle / 60
        return f"You were inactive for more than {minutes:g} minutes. Please sign in again."
    return None


def session_from_cookie(token: dict, account, now: float, limits: Lifetimes) -> Session:
    """The session a good cookie re-opens: it started when the cookie was issued."""
    started = float(token["exp_date"]) - limits.absolute
    return Session(account["username"], account["credential_version"], started, now)
