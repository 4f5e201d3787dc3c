"""Audit log page (supervisors, admins): the entries and the hash chains' status."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schemewatch import store, triage
from schemewatch.dashboard import data, widgets
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.exporter import iso_timestamp


def audit_log() -> None:
    settings, user, _, _ = widgets.context()
    st.title("Audit log")
    triage.require(user.role, "read_audit")
    _trail_status(settings.db_path, transactions=False)
    if st.button("Verify every transaction batch too", key="verify_transactions"):
        _trail_status(settings.db_path, transactions=True)
    conn = store.connect(settings.db_path, readonly=True)
    try:
        entries = store.audit_entries(conn, 2000)
    finally:
        conn.close()
    frame = pd.DataFrame(
        [tuple(e) for e in entries],
        columns=["entry", "at", "who", "action", "target", "old", "new", "details"],
    )
    frame["at"] = [iso_timestamp(int(t))[:19] for t in frame["at"]]
    st.dataframe(frame, hide_index=True, width="stretch")


def _trail_status(db_path, *, transactions: bool) -> None:
    """The hash chains' state: verified, or the first broken entry."""
    ok, text = data.verify_trail(db_path, transactions)
    if ok:
        st.success(md(f"Audit trail verified: {text}."))
    else:
        st.error(md(f"Audit trail broken: {text}. Compare with a backup before trusting it."))


audit_log()
