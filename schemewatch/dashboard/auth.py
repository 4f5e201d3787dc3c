"""Login with streamlit-authenticator, with a lockout after repeated failures and audit entries.

Nothing on any page renders before `require_login` returns a user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from schemewatch import store, triage, users
from schemewatch.settings import Settings

MAX_FAILED_LOGINS = 5
LOCKOUT_SECONDS = 15 * 60


@dataclass(frozen=True)
class User:
    """Who is logged in, and what they may do."""

    username: str
    name: str
    role: str

    def can(self, action: str) -> bool:
        return triage.allowed(self.role, action)


def _failures(config: dict) -> dict[str, int]:
    return {
        name: int(data.get("failed_login_attempts") or 0)
        for name, data in config["credentials"]["usernames"].items()
    }


def _unlock_expired(settings: Settings, conn, config: dict) -> None:
    """A locked account opens again LOCKOUT_SECONDS after its last failed login (in place)."""
    changed = False
    for name, count in _failures(config).items():
        if count >= MAX_FAILED_LOGINS:
            last = store.last_audit_time(conn, "login failed", name)
            if last is None or time.time() - last > LOCKOUT_SECONDS:
                config["credentials"]["usernames"][name]["failed_login_attempts"] = 0
                changed = True
    if changed:
        users.save_credentials(settings.credentials_path, config)


def require_login(settings: Settings, conn) -> User:
    """Show the login form until a user is authenticated; then return the user."""
    import streamlit_authenticator as stauth

    path = settings.credentials_path
    if not path.exists():
        st.title("Schemewatch")
        st.error("No accounts yet. Create one with `schemewatch users add NAME --role auditor`.")
        st.stop()
    config = users.load_credentials(path)
    _unlock_expired(settings, conn, config)
    before = _failures(config)
    authenticator = stauth.Authenticate(
        str(path),
        config["cookie"]["name"],
        config["cookie"]["key"],
        config["cookie"]["expiry_days"],
        auto_hash=False,
    )
    st.session_state["authenticator"] = authenticator
    if not st.session_state.get("authentication_status"):
        st.title("Schemewatch")
        st.caption("Welfare payment audit. Sign in to continue.")
    try:
        authenticator.login(location="main", max_login_attempts=MAX_FAILED_LOGINS)
    except stauth.utilities.exceptions.LoginError as exc:
        st.error(f"{exc}. Try again in {LOCKOUT_SECONDS // 60} minutes or ask an admin.")
    after = _failures(users.load_credentials(path))
    for name, count in after.items():
        if count > before.get(name, 0):
            triage.record_login(conn, name, succeeded=False)
    status = st.session_state.get("authentication_status")
    if status is False:
        st.error("Wrong user name or password.")
    if not status:
        st.stop()
    username = st.session_state["username"]
    role = (st.session_state.get("roles") or [None])[0]
    if not st.session_state.get("login_audited"):
        triage.record_login(conn, username, succeeded=True)
        st.session_state["login_audited"] = True
    return User(username, st.session_state.get("name") or username, role or "auditor")


def logout_button() -> None:
    """A logout button in the sidebar."""
    authenticator = st.session_state.get("authenticator")
    if authenticator is not None:
        authenticator.logout("Log out", location="sidebar")
