"""Alerts page: the queue, one alert's context, and triage."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schemewatch import store, triage
from schemewatch.dashboard import data, widgets
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp


def alert_queue() -> None:
    settings, user, filters, version = widgets.context()
    st.title("Alert queue")
    if version is None:
        st.info("No model has been trained yet. Run `python train.py`.")
        return
    queue = data.alerts(settings.db_path, filters, version, 500)
    if queue.empty:
        st.info("No alerts match the filters.")
        return
    shown = pd.DataFrame(
        {
            "transaction": queue["transaction_id"],
            "risk": queue["risk"].round(0),
            "score": queue["score"].round(1),
            "beneficiary": queue["beneficiary_id"],
            "scheme": queue["scheme"],
            "amount": queue["amount"],
            "paid": [iso_timestamp(t)[:16].replace("T", " ") for t in queue["paid_at"]],
            "state": queue["state"],
            "why": [("; ".join(widgets.reasons(r)[:1])) for r in queue["reasons"]],
            "resembles": queue["resembles"],
            "status": queue["disposition"].fillna(
                queue["claimed_by"].map(lambda c: f"claimed by {c}" if c else "open")
            ),
        }
    )
    st.dataframe(shown, hide_index=True, width="stretch")
    chosen = st.selectbox("Open alert", queue["transaction_id"].tolist(), key="alert_choice")
    row = queue[queue["transaction_id"] == chosen].iloc[0]
    _alert_detail(settings, user, row)


def _alert_detail(settings, user, row: pd.Series) -> None:
    st.subheader(f"Alert on transaction {int(row['transaction_id'])}")
    paid = iso_timestamp(int(row["paid_at"]))[:16].replace("T", " ")
    st.markdown(
        f"**{md(row['scheme'])}** payment of **{md(widgets.rupees(row['amount']))}** to "
        f"beneficiary "
        f"**{md(row['beneficiary_id'])}** ({md(row['district'])}, {md(row['state'])}) on "
        f"{md(paid)} IST. Most resembles **{md((row['resembles'] or '').replace('_', ' '))}**."
    )
    for reason in widgets.reasons(row["reasons"]):
        st.markdown(f"- {md(reason)}")
    context = data.context(settings.db_path, row)
    tabs = st.tabs(["Payment timeline", "Others on this account", "Agent's recent payouts"])
    timeline = context["timeline"].assign(
        paid_at=lambda f: [iso_timestamp(t)[:16] for t in f["paid_at"]]
    )
    tabs[0].dataframe(timeline, hide_index=True, width="stretch")
    tabs[1].dataframe(context["sharers"], hide_index=True, width="stretch")
    payouts = context["payouts"].assign(
        paid_at=lambda f: [iso_timestamp(t)[:16] for t in f["paid_at"]]
    )
    tabs[2].dataframe(payouts, hide_index=True, width="stretch")
    _triage_form(settings, user, int(row["transaction_id"]))


def _load_case(settings, transaction_id: int) -> triage.Case:
    conn = store.connect(settings.db_path, readonly=True)
    try:
        return triage.load_case(conn, transaction_id)
    finally:
        conn.close()


def _case_as_seen(settings, transaction_id: int) -> triage.Case:
    """The case as this user was shown it; a save is conditional on its version."""
    seen = st.session_state.get("triage_seen")
    if seen is None or seen.transaction_id != transaction_id:
        seen = st.session_state["triage_seen"] = _load_case(settings, transaction_id)
    return seen


def _describe(case: triage.Case) -> str:
    if case.version == 0:
        return "Nobody has triaged this alert yet."
    disposition = (case.disposition or "none").replace("_", " ")
    set_by = f" (set by a {case.disposition_role})" if case.disposition_role else ""
    claimed = f"claimed by {case.claimed_by}" if case.claimed_by else "not claimed"
    when = store.utc_iso(case.updated_at).replace("T", " ").replace("+00:00", " UTC")
    return (
        f"Disposition: {disposition}{set_by}; {claimed}; "
        f"last saved by {case.updated_by} at {when} (version {case.version})."
    )


def _claim(user, case: triage.Case, key: str) -> tuple[str | None, bool]:
    """(claimed_by, take_over): another user's claim changes only when taken over explicitly."""
    if case.claimed_by is None:
        return (user.username if st.checkbox("Claim this alert", key=key) else None), False
    if case.claimed_by == user.username:
        keep = st.checkbox("Keep my claim on this alert", value=True, key=key)
        return (user.username if keep else None), False
    take = st.checkbox(f"Take over the claim from {md(case.claimed_by)}", key=key)
    return (user.username if take else case.claimed_by), take


def _triage_form(settings, user, transaction_id: int) -> None:
    st.subheader("Triage")
    case = _case_as_seen(settings, transaction_id)
    current = _load_case(settings, transaction_id)
    if current.version != case.version:
        when = store.utc_iso(current.updated_at).replace("T", " ").replace("+00:00", " UTC")
        st.warning(md(f"{current.updated_by} changed this alert at {when} since you opened it."))
        if st.button("Reload the alert", key="triage_reload"):
            st.session_state["triage_seen"] = current
            st.rerun()
    st.caption(md(_describe(case)))
    may_set = triage.may_change_disposition(user.role, case)
    options = ["(none)", *triage.disposition_choices(user.role)]
    shown = case.disposition or "(none)"
    if shown not in options:
        options.append(shown)
    key = f"{transaction_id}_{case.version}"
    with st.form(key="triage_form"):
        claimed_by, take_over = _claim(user, case, f"triage_claim_{key}")
        disposition = st.radio(
            "Disposition",
            options,
            index=options.index(shown),
            disabled=not may_set,
            key=f"triage_disposition_{key}",
        )
        if not may_set:
            st.caption(md(f"Set by a {case.disposition_role}: your role may not change it."))
        note = st.text_area("Note", value=case.note or "", key=f"triage_note_{key}")
        submitted = st.form_submit_button("Save")
    if submitted:
        wanted = {
            "claimed_by": claimed_by,
            "disposition": None if disposition == "(none)" else disposition,
            "note": note or None,
        }
        changes = {k: v for k, v in wanted.items() if v != getattr(case, k)}
        _save_case(settings, user, case, changes, take_over)


def _save_case(settings, user, case: triage.Case, changes: dict, take_over: bool) -> None:
    conn = store.open_database(settings.db_path)
    try:
        triage.update_case(
            conn,
            case.transaction_id,
            user.username,
            user.role,
            expected_version=case.version,
            take_over=take_over,
            **changes,
        )
    except SchemewatchError as exc:
        st.error(md(exc))
        return
    finally:
        conn.close()
    st.session_state["triage_seen"] = _load_case(settings, case.transaction_id)
    data.alerts.clear()
    data.kpis.clear()
    st.success("Saved, and recorded in the audit log.")


alert_queue()
