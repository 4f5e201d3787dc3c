"""Users page (admins): add accounts, reset passwords, change roles, remove accounts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schemewatch import store, triage, users
from schemewatch.dashboard import widgets
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.errors import SchemewatchError


def accounts() -> None:
    settings, user, _, _ = widgets.context()
    st.title("Users")
    triage.require(user.role, "manage")
    conn = store.open_database(settings.db_path)
    try:
        _accounts_page(conn, user)
    finally:
        conn.close()


def _accounts_page(conn, user) -> None:
    listed = users.list_users(conn)
    st.dataframe(pd.DataFrame(listed, columns=["user", "role", "name"]), hide_index=True)
    add, change = st.columns(2)
    with add.form("add_user", clear_on_submit=True):
        st.subheader("Add an account")
        username = st.text_input("User name", key="new_username")
        role = st.selectbox("Role", users.ROLES, key="new_role")
        password = st.text_input("Password", type="password", key="new_password")
        if st.form_submit_button("Add"):
            _account_change(
                f"Added {username}.",
                lambda: users.add_user(conn, username, role, password, actor=user.username),
            )
    with change.form("change_user", clear_on_submit=True):
        st.subheader("Reset, change role or remove")
        names = [name for name, _, _ in listed if name != user.username]
        target = st.selectbox("Account", names, key="target_user")
        password = st.text_input("New password (to reset)", type="password", key="reset_password")
        new_role = st.selectbox("New role", users.ROLES, key="target_role")
        reset, promote, remove = st.columns(3)
        if reset.form_submit_button("Reset password") and target:
            _account_change(
                f"Password of {target} reset; their open sessions end at their next page load.",
                lambda: users.reset_password(conn, target, password, actor=user.username),
            )
        if promote.form_submit_button("Change role") and target:
            _account_change(
                f"{target} is now {new_role}; their open sessions end at their next page load.",
                lambda: users.change_role(conn, target, new_role, actor=user.username),
            )
        if remove.form_submit_button("Remove account") and target:
            _account_change(
                f"Removed {target}; their open sessions end at their next page load.",
                lambda: users.remove_user(conn, target, actor=user.username),
            )


def _account_change(done: str, change) -> None:
    """Apply an account change (it audits itself); a refused change is one clear line."""
    try:
        change()
    except SchemewatchError as exc:
        st.error(md(exc))
        return
    st.success(md(done))


accounts()
