"""Login, and the check every page load makes that the session is still good.

Accounts live in the database. streamlit-authenticator keeps the signed re-login cookie and the
session-state keys it defines; it is given a config dict built from the database on each run (no
file path, so it never writes a file) and never checks passwords: that is
`users.attempt_login`, which counts failures and locks in one write transaction, so parallel
sessions cannot get past the limit, and audits every attempt.

On every run the session is checked against the account as it is now (`sessions`): removed,
password reset or role changed since the session began, older than its absolute lifetime or idle
for too long, and it ends with a plain message. The role used for every permission is read from
the database on each run. Nothing on any page renders before `require_login` returns a user.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import streamlit as st

from schemewatch import sessions, store, triage, users
from schemewatch.dashboard.formatting import escape_markdown
from schemewatch.settings import Settings

MAX_FAILED_LOGINS = users.MAX_FAILED_LOGINS
LOCKOUT_SECONDS = users.LOCKOUT_SECONDS
COOKIE_NAME = "schemewatch_session"
SESSION_KEY = "schemewatch_session"
TOUCHED_KEY = "schemewatch_session_touched"
# Session-state keys streamlit-authenticator reads and writes.
LIBRARY_KEYS = ("name", "username", "authentication_status", "email", "roles")


@dataclass(frozen=True)
class User:
    """Who is logged in, with the role the database holds for them now."""

    username: str
    name: str
    role: str
    credential_version: int

    def can(self, action: str) -> bool:
        return triage.allowed(self.role, action)


def lifetimes(settings: Settings) -> sessions.Lifetimes:
    """The configured absolute and idle session lifetimes."""
    return sessions.Lifetimes(settings.session_hours * 3600.0, settings.idle_minutes * 60.0)


def authenticator_config(conn, limits: sessions.Lifetimes) -> dict:
    """streamlit-authenticator's config, built from the database for this run.

    Password hashes are left out: the library never checks a password here.
    """
    return {
        "credentials": {
            "usernames": {
                name: {"name": display, "email": f"{name}@schemewatch.invalid", "roles": [role]}
                for name, role, display in users.list_users(conn)
            }
        },
        "cookie": {
            "name": COOKIE_NAME,
            "key": _signing_key(users.cookie_key(conn), limits),
            "expiry_days": limits.absolute / 86400,
        },
    }


def _signing_key(stored_key: str, limits: sessions.Lifetimes) -> str:
    """The cookie key for this session lifetime.

    The cookie carries no issue time; it is worked out as expiry minus the lifetime. A cookie made
    under another lifetime would give a wrong issue time, so it must not verify at all.
    """
    message = f"session lifetime {limits.absolute:g} s".encode()
    return hmac.new(stored_key.encode(), message, hashlib.sha256).hexdigest()


def _authenticator(conn, limits: sessions.Lifetimes):
    import streamlit_authenticator as stauth

    config = authenticator_config(conn, limits)
    return stauth.Authenticate(
        config["credentials"],  # a dict, not a path: the library then writes no file
        config["cookie"]["name"],
        config["cookie"]["key"],
        config["cookie"]["expiry_days"],
        auto_hash=False,
    )


def require_login(settings: Settings, conn) -> User:
    """Return the signed-in user with their current role, or show the login form and stop."""
    now = store.now()
    limits = lifetimes(settings)
    imported = users.import_credentials_file(conn, settings.credentials_path, actor="dashboard")
    if imported:
        st.toast(f"Moved {imported} accounts from {settings.credentials_path} into the database.")
    if store.count_accounts(conn) == 0:
        st.title("Schemewatch")
        st.error("No accounts yet. Create one with `schemewatch users add NAME --role auditor`.")
        st.stop()
    authenticator = _authenticator(conn, limits)
    st.session_state["authenticator"] = authenticator
    session = st.session_state.get(SESSION_KEY) or _session_from_cookie(
        conn, authenticator, now, limits
    )
    if session is not None:
        account = store.get_user(conn, session.username)
        problem = sessions.session_problem(session, account, now, limits)
        if problem is None:
            user = _continue(conn, session, account, now)
            if not _logged_out_now(conn, authenticator, user):
                return user
        else:
            _end_session(conn, authenticator, session.username, problem)
            st.warning(problem)
    user = _login_form(conn, authenticator)
    if user is None or _logged_out_now(conn, authenticator, user):
        st.stop()
    return user


def _continue(conn, session: sessions.Session, account, now: float) -> User:
    """Keep the session going: note the activity and show who is signed in."""
    st.session_state[SESSION_KEY] = session.seen(now)
    if now - st.session_state.get(TOUCHED_KEY, 0.0) >= sessions.TOUCH_SECONDS:
        with store.write_transaction(conn):
            store.touch_user(conn, session.username, now, sessions.TOUCH_SECONDS)
        st.session_state[TOUCHED_KEY] = now
    user = User(
        account["username"], account["display_name"], account["role"], session.credential_version
    )
    st.session_state.update(authentication_status=True, roles=[user.role])
    st.sidebar.markdown(f"**{escape_markdown(user.name)}** · {escape_markdown(user.role)}")
    return user


def _logged_out_now(conn, authenticator, user: User) -> bool:
    """The logout button; True when it was pressed in this run (then the login form follows)."""
    authenticator.logout(
        "Log out",
        location="sidebar",
        callback=lambda _: users.record_logout(conn, user.username, "signed out"),
    )
    if st.session_state.get("authentication_status"):
        return False
    st.session_state.pop(SESSION_KEY, None)
    st.info("You have signed out.")
    return True


def _end_session(conn, authenticator, username: str, reason: str) -> None:
    """End a session that is no longer good: audit why, forget it and drop its cookie."""
    users.record_logout(conn, username, reason)
    st.session_state.pop(SESSION_KEY, None)
    authenticator.authentication_controller.logout()
    authenticator.cookie_controller.delete_cookie()


def _session_from_cookie(conn, authenticator, now: float, limits) -> sessions.Session | None:
    """Re-open a session from the signed cookie, if the account still accepts it."""
    token = authenticator.cookie_controller.get_cookie()
    if not token:
        return None
    username = str(token.get("username", ""))
    account = store.get_user(conn, username)
    problem = sessions.cookie_problem(token, account, now, limits)
    users.record_cookie_login(conn, username, problem)
    if problem is not None:
        authenticator.cookie_controller.delete_cookie()
        st.warning(problem)
        return None
    session = sessions.session_from_cookie(token, account, now, limits)
    _start(session, account)
    return session


def _start(session: sessions.Session, account) -> None:
    """Record a new session where this code and streamlit-authenticator look for it."""
    st.session_state[SESSION_KEY] = session
    st.session_state[TOUCHED_KEY] = session.last_seen_at
    st.session_state.update(
        name=account["display_name"],
        username=session.username,
        authentication_status=True,
        email=None,
        roles=[account["role"]],
    )


def _login_form(conn, authenticator) -> User | None:
    """The login form; a correct password starts a session, sets the cookie and returns the user.

    No st.rerun() after signing in: the cookie is set by a component rendered in this run.
    """
    slot = st.empty()
    with slot.container():
        st.title("Schemewatch")
        st.caption("Welfare payment audit. Sign in to continue.")
        with st.form(key="Login"):
            st.subheader("Login")
            typed = st.text_input("Username", autocomplete="off", key="login_username")
            password = st.text_input(
                "Password", type="password", autocomplete="off", key="login_password"
            )
            submitted = st.form_submit_button("Login")
    if not submitted or not typed or not password:
        return None
    result = users.attempt_login(conn, typed, password)
    if result.outcome == "locked":
        minutes = LOCKOUT_SECONDS // 60
        st.error(f"This account is locked. Try again in {minutes} minutes or ask an admin.")
        return None
    if not result.succeeded:
        st.error("Wrong user name or password.")
        return None
    slot.empty()
    now = store.now()
    session = sessions.Session(result.username, result.credential_version, now, now)
    account = store.get_user(conn, result.username)
    _start(session, account)
    authenticator.cookie_controller.set_cookie()
    return _continue(conn, session, account, now)


def check_still_signed_in(settings: Settings) -> None:
    """For fragments that rerun on their own: a full rerun (which logs out) if the session ended."""
    session = st.session_state.get(SESSION_KEY)
    if session is None:
        st.rerun(scope="app")
    conn = store.connect(settings.db_path, readonly=True)
    try:
        account = store.get_user(conn, session.username)
    finally:
        conn.close()
    if sessions.session_problem(session, account, store.now(), lifetimes(settings)) is not None:
        st.rerun(scope="app")


def require_current(settings: Settings, user: User, action: str) -> None:
    """Raise NotAllowed unless the account, as it is now, may do the action (deferred callbacks)."""
    conn = store.connect(settings.db_path, readonly=True)
    try:
        account = store.get_user(conn, user.username)
    finally:
        conn.close()
    if account is None or account["credential_version"] != user.credential_version:
        raise triage.NotAllowed("your session has ended; sign in again")
    triage.require(account["role"], action)
