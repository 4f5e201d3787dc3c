"""Alerts page: cases of linked alerts, one case's payments and network, triage of the case."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from schemewatch import case_report, case_report_pdf, reranker, store, triage
from schemewatch.dashboard import auth, data, widgets
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp

NETWORK_NODES = 80  # beyond this the picture is a hairball; the table lists everyone
QUEUE_LIMIT = 500  # cases listed by risk; cases raised by rules are listed beyond it


def _when(seconds) -> str:
    return iso_timestamp(int(seconds))[:16].replace("T", " ")


def _names(text: str | None) -> list[str]:
    """A JSON list of ids from the store, without blanks."""
    return [v for v in json.loads(text or "[]") if v]


def _few(values: list[str], most: int = 3) -> str:
    shown = ", ".join(values[:most])
    return f"{shown} +{len(values) - most}" if len(values) > most else shown


def alert_queue() -> None:
    settings, user, filters, version = widgets.context()
    st.title("Alert cases")
    if version is None:
        st.info("No model has been trained yet. Run `python train.py`.")
        return
    queue = data.cases(settings.db_path, filters, version, QUEUE_LIMIT)
    if queue.empty:
        st.info("No alerts match the filters.")
        return
    st.caption(
        "Alerts that share a beneficiary, an account, a phone, a payout agent within an hour or "
        "an enrolment camp are one case. Risk is 0-100; 90 is the model's alert line."
    )
    re_ranked = bool(queue["combined_risk"].notna().any())
    st.caption(md(_ordering(settings, version, re_ranked)))
    _rule_cases_line(queue)
    shown = pd.DataFrame(
        {
            "case": queue["case_id"],
            **({"combined risk": queue["combined_risk"].round(0)} if re_ranked else {}),
            "max risk": queue["risk"].round(0),
            "raised by": [
                " and ".join(n for n, f in (("model", m), ("rule", r)) if f) or "model"
                for m, r in zip(queue["by_model"], queue["by_rule"], strict=True)
            ],
            "alerts": queue["alerts"],
            "amount at risk": queue["amount"].round(0),
            "why (strongest)": [(widgets.reasons(r)[:1] or [""])[0] for r in queue["reasons"]],
            "beneficiaries": [_few(_names(v)) for v in queue["beneficiaries"]],
            "accounts": [_few(_names(v)) for v in queue["accounts"]],
            "agents": [_few(_names(v)) for v in queue["agents"]],
            "first payment": [_when(t) for t in queue["first_paid_at"]],
            "last payment": [_when(t) for t in queue["last_paid_at"]],
            "open": queue["open"],
            "max score": queue["score"].round(1),
        }
    )
    st.dataframe(shown, hide_index=True, width="stretch")
    chosen = st.selectbox(
        "Open case",
        queue["case_id"].tolist(),
        format_func=lambda c: f"case {c}",
        key="case_choice",
    )
    members = data.case_alerts(settings.db_path, version, int(chosen))
    if members.empty:  # linked into another case since the queue was read
        st.info("This case was merged into another one; reload the page.")
        return
    _case_view(settings, user, int(chosen), members)


def _ordering(settings, version: str, re_ranked: bool) -> str:
    """Which ordering the queue uses, in one sentence (and what the re-ranker learnt from)."""
    learnt = data.reranker_card(settings.model_dir, version)
    if re_ranked:
        return (
            "Ordered by combined risk: the model's risk re-ranked by what auditors confirmed "
            f"({reranker.describe(learnt)})."
        )
    if learnt and not learnt.get("fitted"):
        why = f": this model version has no re-ranker ({learnt['reason']} when it was trained)"
        return f"Ordered by the model's risk{why}."
    return "Ordered by the model's risk."


def _rule_cases_line(queue: pd.DataFrame) -> None:
    """Cases raised by auditors' rules are listed even below the line; say if any are not."""
    listed = int(queue["by_rule"].sum())
    total = int(queue["rule_cases"].iloc[0] or 0)
    if total:
        st.caption(
            f"{total:,} cases hold an alert raised by an auditors' rule; every one is listed "
            f"(below the top {QUEUE_LIMIT:,} by risk if need be)."
            if listed == total
            else f"{total - listed:,} of {total:,} cases raised by rules are not listed: "
            "narrow the filters to see them."
        )


def _case_view(settings, user, case_id: int, members: pd.DataFrame) -> None:
    st.header(f"Case {case_id}: {len(members)} alerts")
    st.markdown(
        md(
            f"{widgets.rupees(members['amount'].sum())} paid between "
            f"{_when(members['paid_at'].min())} and {_when(members['paid_at'].max())} IST; "
            f"max risk {members['risk'].max():.0f}."
        )
    )
    network, payments = st.columns([2, 3])
    with network:
        st.caption("Who is linked to whom: people (ovals), accounts (boxes), agents (diamonds).")
        st.graphviz_chart(_network(members), width="stretch")
    sources = data.alert_sources(
        settings.db_path,
        st.session_state["version"],
        tuple(int(t) for t in members["transaction_id"]),
    )
    payments.dataframe(_payments_table(members, sources), hide_index=True, width="stretch")
    _report_download(settings, user, case_id)
    chosen = st.selectbox(
        "Payment in this case",
        members["transaction_id"].tolist(),
        format_func=lambda t: f"transaction {t}",
        key="payment_choice",
    )
    row = members[members["transaction_id"] == chosen].iloc[0]
    with st.expander(f"Alert on transaction {int(row['transaction_id'])}", expanded=True):
        _alert_detail(settings, row)
    _triage_form(settings, user, case_id, [int(t) for t in members["transaction_id"]])


def _report_download(settings, user, case_id: int) -> None:
    """The printable case report (HTML and PDF), for roles that may download; built and audited
    on click."""
    if not user.can("download"):
        st.caption("Supervisors and admins can download a printable report of this case.")
        return
    version = st.session_state["version"]

    def build(form: str):
        def report() -> bytes:
            # Built when clicked, perhaps long after the page was drawn: check the account now.
            auth.require_current(settings, user, "download")
            conn = store.open_database(settings.db_path)
            try:
                payload, _ = case_report.export(
                    conn, version, case_id, user.username, user.role, form
                )
            finally:
                conn.close()
            return payload

        return report

    html_column, pdf_column = st.columns(2)
    for form, label, column in (
        ("html", "Download the case report (printable HTML)", html_column),
        ("pdf", "Download the case report (PDF)", pdf_column),
    ):
        mime, suffix = case_report.REPORT_FORMATS[form]
        with column:
            if form == "pdf" and (missing := _pdf_font_missing()):
                st.caption(f"No PDF report on this machine: {missing}.")
                continue
            st.download_button(
                label,
                data=build(form),
                file_name=f"schemewatch-case-{case_id}.{suffix}",
                mime=mime,
                key=f"download_case_report_{form}",
            )


def _pdf_font_missing() -> str | None:
    """Why a PDF report cannot be made here (no Unicode font), or None when it can."""
    try:
        case_report_pdf.report_font()
    except case_report_pdf.ReportFontMissing as missing:
        return str(missing)
    return None


def _payments_table(members: pd.DataFrame, sources: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction": members["transaction_id"],
            "alerted by": members["transaction_id"].map(lambda t: sources.get(int(t), "model")),
            **(
                {"combined risk": members["combined_risk"].round(0)}
                if members["combined_risk"].notna().any()
                else {}
            ),
            "risk": members["risk"].round(0),
            "score": members["score"].round(1),
            "beneficiary": members["beneficiary_id"],
            "scheme": members["scheme"],
            "amount": members["amount"],
            "paid": [_when(t) for t in members["paid_at"]],
            "account": members["account_id"],
            "agent": members["agent_id"],
            "why": [(widgets.reasons(r)[:1] or [""])[0] for r in members["reasons"]],
            "status": members["disposition"].fillna(
                members["claimed_by"].map(lambda c: f"claimed by {c}" if c else "open")
            ),
        }
    )


def _dot(value: object) -> str:
    """Data as a quoted Graphviz string: quotes and backslashes escaped, one line."""
    text = " ".join(str(value).split())
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _network(members: pd.DataFrame) -> str:
    """A Graphviz picture (drawn in the browser by Streamlit, offline) of the case's links."""
    nodes, edges = {}, set()
    for row in members.itertuples(index=False):
        person = ("person", row.beneficiary_id)
        nodes.setdefault(person, "ellipse")
        for kind, value, shape in (
            ("account", row.account_id, "box"),
            ("agent", row.agent_id, "diamond"),
        ):
            if value and len(nodes) < NETWORK_NODES:
                nodes.setdefault((kind, value), shape)
                edges.add((person, (kind, value)))
    lines = ["graph case {", "rankdir=LR;", 'node [fontsize=10, fontname="Helvetica"];']
    names = {node: f"n{i}" for i, node in enumerate(nodes)}
    for node, shape in nodes.items():
        label = node[1] if node[0] == "person" else f"{node[0]} {node[1]}"
        lines.append(f"{names[node]} [label={_dot(label)}, shape={shape}];")
    lines += [f"{names[a]} -- {names[b]};" for a, b in sorted(edges, key=str)]
    return "\n".join([*lines, "}"])


def _alert_detail(settings, row: pd.Series) -> None:
    st.markdown(
        f"**{md(row['scheme'])}** payment of **{md(widgets.rupees(row['amount']))}** to "
        f"beneficiary **{md(row['beneficiary_id'])}** ({md(row['district'])}, "
        f"{md(row['state'])}) on {md(_when(row['paid_at']))} IST; risk "
        f"**{md(_risk_text(row['risk']))}** (score {md(format(row['score'], ',.1f'))})."
        + (
            f" Most resembles **{md(row['resembles'].replace('_', ' '))}**."
            if row["resembles"]
            else ""
        )
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


def _risk_text(value) -> str:
    """Risk as shown; rows scored before risk existed have none."""
    return "not computed (scored before risk existed)" if pd.isna(value) else f"{value:.0f}/100"


def _load_cases(settings, transaction_ids: list[int]) -> dict[int, triage.Case]:
    conn = store.connect(settings.db_path, readonly=True)
    try:
        return {t: triage.load_case(conn, t) for t in transaction_ids}
    finally:
        conn.close()


def _cases_as_seen(settings, case_id: int, members: list[int]) -> dict[int, triage.Case]:
    """Each alert's triage state as this user was shown it; a save is conditional on them."""
    seen = st.session_state.get("triage_seen")
    if seen is None or seen[0] != (case_id, tuple(members)):
        seen = st.session_state["triage_seen"] = (
            (case_id, tuple(members)),
            _load_cases(settings, members),
        )
    return seen[1]


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
        return (user.username if st.checkbox("Claim this case", key=key) else None), False
    if case.claimed_by == user.username:
        keep = st.checkbox("Keep my claim on this case", value=True, key=key)
        return (user.username if keep else None), False
    take = st.checkbox(f"Take over the claim from {md(case.claimed_by)}", key=key)
    return (user.username if take else case.claimed_by), take


def _triage_form(settings, user, case_id: int, members: list[int]) -> None:
    """Triage the whole case: the form starts from its highest-risk alert (the lead)."""
    st.subheader("Triage the case")
    seen = _cases_as_seen(settings, case_id, members)
    current = _load_cases(settings, members)
    changed = [t for t in members if current[t].version != seen[t].version]
    if changed:
        latest = current[changed[0]]
        when = store.utc_iso(latest.updated_at).replace("T", " ").replace("+00:00", " UTC")
        st.warning(md(f"{latest.updated_by} changed this case at {when} since you opened it."))
        if st.button("Reload the case", key="triage_reload"):
            st.session_state["triage_seen"] = ((case_id, tuple(members)), current)
            st.rerun()
    lead = seen[members[0]]
    st.caption(md(f"Lead alert {lead.transaction_id}: {_describe(lead)}"))
    states = pd.Series([seen[t].disposition or "open" for t in members]).value_counts()
    if len(members) > 1:
        counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in states.items())
        st.caption(md(f"{len(members)} alerts: {counts}. A save applies to every one of them."))
    may_set = triage.may_change_disposition(user.role, lead)
    options = ["(none)", *triage.disposition_choices(user.role)]
    shown = lead.disposition or "(none)"
    if shown not in options:
        options.append(shown)
    key = f"{case_id}_{lead.version}_{len(members)}"
    with st.form(key="triage_form"):
        claimed_by, take_over = _claim(user, lead, f"triage_claim_{key}")
        disposition = st.radio(
            "Disposition",
            options,
            index=options.index(shown),
            disabled=not may_set,
            key=f"triage_disposition_{key}",
        )
        if not may_set:
            st.caption(md(f"Set by a {lead.disposition_role}: your role may not change it."))
        note = st.text_area("Note", value=lead.note or "", key=f"triage_note_{key}")
        submitted = st.form_submit_button("Save")
    if submitted:
        wanted = {
            "claimed_by": claimed_by,
            "disposition": None if disposition == "(none)" else disposition,
            "note": note or None,
        }
        changes = {k: v for k, v in wanted.items() if v != getattr(lead, k)}
        _save_case(settings, user, case_id, seen, changes, take_over)


def _save_case(settings, user, case_id: int, seen: dict, changes: dict, take_over: bool) -> None:
    conn = store.open_database(settings.db_path)
    try:
        triage.update_linked_case(
            conn,
            {t: case.version for t, case in seen.items()},
            user.username,
            user.role,
            take_over=take_over,
            **changes,
        )
    except SchemewatchError as exc:
        st.error(md(exc))
        return
    finally:
        conn.close()
    members = list(seen)
    st.session_state["triage_seen"] = ((case_id, tuple(members)), _load_cases(settings, members))
    data.cases.clear()
    data.kpis.clear()
    st.success(f"Saved for {len(members)} alerts, and recorded in the audit log.")


alert_queue()
