"""The dashboard's pages: each reads widgets, calls package functions and renders."""

from __future__ import annotations

import json
from dataclasses import asdict
from urllib.parse import quote

import pandas as pd
import plotly.express as px
import pydeck as pdk
import streamlit as st

from schemewatch import modeling, store, triage, users
from schemewatch.dashboard import auth, data
from schemewatch.dashboard.formatting import escape_chart_label
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp
from schemewatch.geography import india_outline_geojson

WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
REFRESH_SECONDS = 5
# An empty map style inlined as a data: URL. With map_style=None Streamlit substitutes a Carto
# basemap from the internet; pydeck refuses a dict style unless the provider is Mapbox.
OFFLINE_MAP_STYLE = "data:application/json," + quote(
    json.dumps({"version": 8, "sources": {}, "layers": []})
)


def _context():
    return (
        st.session_state["settings"],
        st.session_state["user"],
        st.session_state["filters"],
        st.session_state["version"],
    )


def _rupees(value: float) -> str:
    return f"₹{value:,.0f}"


def overview() -> None:
    settings, user, filters, version = _context()
    st.title("Overview")
    if version is None:
        st.info("No model has been trained yet, so there are no alerts. Run `python train.py`.")
    live = st.toggle("Refresh live", value=True, key="live_refresh")
    _overview_body(live)
    if user.can("download"):
        _download(settings, user, filters, version)


@st.fragment(run_every=REFRESH_SECONDS)
def _overview_live() -> None:
    auth.check_still_signed_in(st.session_state["settings"])
    _overview_charts()


def _overview_body(live: bool) -> None:
    if live:
        _overview_live()
    else:
        _overview_charts()


def _overview_charts() -> None:
    settings, _, filters, version = _context()
    figures = data.kpis(settings.db_path, filters, version)
    cards = st.columns(5)
    rate = figures["alerts"] / figures["scored"] if figures["scored"] else 0.0
    cards[0].metric("Transactions", f"{figures['transactions']:,}")
    cards[1].metric("Alerts", f"{figures['alerts']:,}")
    cards[2].metric("Alert rate", f"{rate:.2%}")
    cards[3].metric("Amount at risk", _rupees(figures["amount_at_risk"]))
    cards[4].metric("Open cases", f"{figures['open_cases']:,}")
    if figures["transactions"] == 0:
        st.info("No transactions match the filters.")
        return
    st.plotly_chart(_trend(data.daily(settings.db_path, filters, version)), width="stretch")
    left, right = st.columns(2)
    by_scheme = _chart_labels(data.alerts_by(settings.db_path, filters, version, "scheme"))
    left.plotly_chart(
        px.bar(by_scheme, x="scheme", y="alerts", title="Alerts by scheme"),
        width="stretch",
    )
    by_state = _chart_labels(data.alerts_by(settings.db_path, filters, version, "state").head(15))
    states = px.bar(
        by_state, x="alerts", y="state", orientation="h", title="Alerts by state (top 15)"
    )
    states.update_yaxes(categoryorder="total ascending")
    right.plotly_chart(states, width="stretch")
    _heatmap(data.hour_weekday(settings.db_path, filters, version))
    _map(data.alerts(settings.db_path, filters, version, 5000))


def _chart_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Category labels from the data, made inert for Plotly (it renders <a href> in text)."""
    return frame.assign(**{frame.columns[0]: frame.iloc[:, 0].map(escape_chart_label)})


def _trend(daily: pd.DataFrame):
    """Transactions as bars, alerts as a line on their own axis (they are 100x fewer)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_bar(
        x=daily["day"], y=daily["transactions"], name="transactions", marker_color="#9ab8d8"
    )
    figure.add_scatter(
        x=daily["day"],
        y=daily["alerts"],
        name="alerts",
        yaxis="y2",
        line={"color": "#c0392b", "width": 2},
    )
    figure.update_layout(
        title="Daily transactions and alerts",
        yaxis={"title": "transactions"},
        yaxis2={"title": "alerts", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.1},
        bargap=0.1,
    )
    return figure


def _heatmap(cells: pd.DataFrame) -> None:
    grid = pd.DataFrame(0, index=list(WEEKDAYS), columns=list(range(24)))
    for weekday, hour, alerts in cells.itertuples(index=False):
        grid.iloc[int(weekday), int(hour)] = alerts
    figure = px.imshow(
        grid,
        labels={"x": "hour of day (IST)", "y": "weekday", "color": "alerts"},
        title="Alerts by hour and weekday",
        aspect="auto",
        color_continuous_scale="Reds",
    )
    st.plotly_chart(figure, width="stretch")


def _map(points: pd.DataFrame) -> None:
    """Alerts on India's outline; no tile server, no internet."""
    layers = [
        pdk.Layer(
            "GeoJsonLayer",
            india_outline_geojson(),
            stroked=True,
            filled=True,
            get_fill_color=[240, 240, 235],
            get_line_color=[90, 90, 90],
            line_width_min_pixels=1,
        )
    ]
    if len(points):
        points = points[["latitude", "longitude", "score", "transaction_id"]].copy()
        layers += [
            pdk.Layer("HeatmapLayer", points, get_position="[longitude, latitude]", opacity=0.4),
            pdk.Layer(
                "ScatterplotLayer",
                points,
                get_position="[longitude, latitude]",
                get_radius=6000,
                get_fill_color=[200, 30, 30, 180],
                pickable=True,
            ),
        ]
    st.subheader("Where alerts were paid out")
    st.pydeck_chart(
        pdk.Deck(
            layers=layers,
            initial_view_state=pdk.ViewState(latitude=22.5, longitude=80.0, zoom=3.6),
            map_provider=None,
            # An empty inline style: with map_style=None Streamlit fills in a Carto basemap URL.
            map_style=OFFLINE_MAP_STYLE,
            tooltip={"text": "transaction {transaction_id}\nscore {score}"},
        )
    )


def _download(settings, user, filters, version) -> None:
    def build() -> bytes:
        # Built when clicked, perhaps long after the page was drawn: check the account as it is now.
        auth.require_current(settings, user, "download")
        payload, rows = data.csv_download(settings.db_path, filters, version)
        conn = store.open_database(settings.db_path)
        try:
            triage.record_download(conn, user.username, asdict(filters), rows)
        finally:
            conn.close()
        return payload

    st.download_button(
        "Download the filtered transactions (CSV)",
        data=build,
        file_name="schemewatch-transactions.csv",
        mime="text/csv",
        key="download_csv",
    )


def _reasons(text: str | None) -> list[str]:
    return [r["text"] for r in json.loads(text)] if text else []


def alert_queue() -> None:
    settings, user, filters, version = _context()
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
            "score": queue["score"].round(1),
            "beneficiary": queue["beneficiary_id"],
            "scheme": queue["scheme"],
            "amount": queue["amount"],
            "paid": [iso_timestamp(t)[:16].replace("T", " ") for t in queue["paid_at"]],
            "state": queue["state"],
            "why": [("; ".join(_reasons(r)[:1])) for r in queue["reasons"]],
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
        f"**{md(row['scheme'])}** payment of **{md(_rupees(row['amount']))}** to beneficiary "
        f"**{md(row['beneficiary_id'])}** ({md(row['district'])}, {md(row['state'])}) on "
        f"{md(paid)} IST. Most resembles **{md((row['resembles'] or '').replace('_', ' '))}**."
    )
    for reason in _reasons(row["reasons"]):
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


def _threshold_form(settings, user, version: str, threshold: float) -> None:
    with st.form("threshold_form"):
        chosen = st.number_input(
            "Alert threshold for rows scored from now on",
            min_value=0.001,
            value=float(threshold),
            key="new_threshold",
        )
        if st.form_submit_button("Apply threshold") and chosen != threshold:
            previous = modeling.set_threshold(settings.model_dir, version, chosen, user.username)
            conn = store.open_database(settings.db_path)
            try:
                with store.write_transaction(conn):
                    store.append_audit(
                        conn,
                        user.username,
                        "threshold changed",
                        version,
                        str(previous),
                        str(chosen),
                    )
            finally:
                conn.close()
            st.success(f"Threshold set to {chosen:,.1f}; the monitor uses it from its next batch.")


def model_view() -> None:
    settings, user, _, version = _context()
    st.title("Model")
    if version is None:
        st.info("No model has been trained yet. Run `python train.py`.")
        return
    card = modeling.load_model_card(settings.model_dir, version)
    override = modeling.read_threshold_override(settings.model_dir / version)
    threshold = override["threshold"] if override else card["threshold"]
    st.caption(md(f"Model {version}, trained {card['trained_at']}"))
    cols = st.columns(3)
    cols[0].metric("Trained on", f"{card['rows']:,} rows")
    cols[1].metric("Alert threshold", f"{threshold:,.1f}")
    cols[2].metric("Alert budget", f"{card['alert_budget']:.1%}")
    if override:
        st.caption(md(f"Threshold set by {override['set_by']} at {override['set_at']}."))
    if user.can("manage"):
        _threshold_form(settings, user, version, threshold)
    report_path = settings.model_dir / version / "evaluation.json"
    if report_path.exists():
        from schemewatch.evaluation import format_table

        st.subheader("Evaluation against the generator's ground truth")
        st.code(format_table(json.loads(report_path.read_text())))
    else:
        st.caption("Run `schemewatch evaluate` to add the evaluation table here.")
    curve = pd.DataFrame(
        _threshold_curve(settings.db_path, version),
        columns=["threshold", "alerts", "precision", "recall"],
    )
    if len(curve):
        st.subheader("Alert volume, precision and recall by threshold")
        st.caption(
            "Labels: auditors' dispositions where they exist, else the generator's ground truth."
        )
        st.plotly_chart(
            px.line(curve, x="threshold", y=["precision", "recall"], log_x=True),
            width="stretch",
        )
        st.plotly_chart(px.line(curve, x="threshold", y="alerts", log_x=True), width="stretch")


@st.cache_data(ttl=60, show_spinner=False)
def _threshold_curve(db_path, version):
    import numpy as np

    from schemewatch.evaluation import threshold_curve

    conn = store.connect(db_path, readonly=True)
    try:
        rows = np.array(store.scores_with_labels(conn, version), dtype=float).reshape(-1, 2)
    finally:
        conn.close()
    return threshold_curve(rows[:, 0], rows[:, 1].astype(bool))


def audit_log() -> None:
    settings, user, _, _ = _context()
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


@st.cache_data(ttl=10, show_spinner="Verifying the audit trail...")
def _verify(db_path, transactions: bool) -> tuple[bool, str]:
    conn = store.connect(db_path, readonly=True)
    try:
        report = store.verify(conn, transactions=transactions)
    finally:
        conn.close()
    if report.ok:
        return True, store.summary_line(report).removeprefix("OK: ")
    return False, "; ".join(report.problems)


def _trail_status(db_path, *, transactions: bool) -> None:
    """The hash chains' state: verified, or the first broken entry."""
    ok, text = _verify(db_path, transactions)
    if ok:
        st.success(md(f"Audit trail verified: {text}."))
    else:
        st.error(md(f"Audit trail broken: {text}. Compare with a backup before trusting it."))


def accounts() -> None:
    settings, user, _, _ = _context()
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
