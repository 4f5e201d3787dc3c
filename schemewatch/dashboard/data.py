"""Cached reads for the dashboard: each opens a read-only connection and lets SQL aggregate."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import streamlit as st

from schemewatch import modeling, store
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp, neutralise

TTL = 10


def _read(db_path: Path, query, *args):
    conn = store.connect(db_path, readonly=True)
    try:
        return query(conn, *args)
    finally:
        conn.close()


def model_version(model_dir: Path) -> str | None:
    """The current model version, or None when no model is trained."""
    try:
        return modeling.current_version(model_dir)
    except SchemewatchError:
        return None


@st.cache_data(ttl=60, show_spinner=False)
def reranker_card(model_dir: Path, version: str) -> dict | None:
    """The model card's account of the re-ranker (what it learnt from), or None (older models)."""
    try:
        return modeling.load_model_card(model_dir, version).get("reranker")
    except SchemewatchError:
        return None


def _summary(filters, version) -> bool:
    """Use the monitor's daily summary and alert overview when they can answer (they are small:
    no full-table scans, no look-ups of every alert's payment)."""
    return version is not None and store.summary_answers(filters)


@st.cache_data(ttl=TTL, show_spinner=False)
def kpis(db_path: Path, filters: store.DashboardFilters, version: str | None) -> dict:
    query = store.summary_kpis if _summary(filters, version) else store.dashboard_kpis
    return _read(db_path, query, filters, version)


@st.cache_data(ttl=TTL, show_spinner=False)
def daily(db_path: Path, filters: store.DashboardFilters, version: str | None) -> pd.DataFrame:
    query = store.summary_daily if _summary(filters, version) else store.dashboard_daily
    rows = _read(db_path, query, filters, version)
    return pd.DataFrame(rows, columns=["day", "transactions", "alerts"])


@st.cache_data(ttl=TTL, show_spinner=False)
def alerts_by(db_path: Path, filters, version, column: str) -> pd.DataFrame:
    query = store.summary_alerts_by if _summary(filters, version) else store.dashboard_alerts_by
    rows = _read(db_path, query, filters, version, column)
    return pd.DataFrame(rows, columns=[column, "transactions", "alerts"])


@st.cache_data(ttl=TTL, show_spinner=False)
def hour_weekday(db_path: Path, filters, version) -> pd.DataFrame:
    summary = _summary(filters, version)
    query = store.summary_hour_weekday if summary else store.dashboard_hour_weekday
    rows = _read(db_path, query, filters, version)
    return pd.DataFrame(rows, columns=["weekday", "hour", "alerts"])


@st.cache_data(ttl=TTL, show_spinner=False)
def alerts(db_path: Path, filters, version, limit: int = 500) -> pd.DataFrame:
    query = store.summary_alerts if _summary(filters, version) else store.dashboard_alerts
    rows = _read(db_path, query, filters, version, limit)
    return pd.DataFrame(rows, columns=list(store.ALERT_QUEUE_COLUMNS))


@st.cache_data(ttl=TTL, show_spinner=False)
def cases(db_path: Path, filters, version, limit: int = 200) -> pd.DataFrame:
    """Cases of linked alerts under the filters, highest risk first."""
    rows = _read(db_path, store.dashboard_cases, filters, version, limit)
    return pd.DataFrame(rows, columns=list(store.CASE_QUEUE_COLUMNS))


def case_alerts(db_path: Path, version, case_id: int) -> pd.DataFrame:
    """Every alert of one case (not cached: triage must see the latest state)."""
    rows = _read(db_path, store.dashboard_case_alerts, version, case_id)
    return pd.DataFrame(rows, columns=list(store.ALERT_QUEUE_COLUMNS))


@st.cache_data(ttl=TTL, show_spinner=False)
def options(db_path: Path) -> dict:
    """Choices for the filters: schemes, states and districts present in the data."""
    return _read(db_path, store.filter_options)


def context(db_path: Path, row: pd.Series) -> dict:
    """The beneficiary's timeline, others on the same account, the agent's recent payouts."""
    conn = store.connect(db_path, readonly=True)
    try:
        timeline = store.beneficiary_timeline(conn, row["beneficiary_id"])
        sharers = store.account_sharers(conn, row["account_id"]) if row["account_id"] else []
        payouts = (
            store.agent_recent_payouts(conn, row["agent_id"], int(row["paid_at"]))
            if row["agent_id"]
            else []
        )
    finally:
        conn.close()
    return {
        "timeline": pd.DataFrame(
            timeline,
            columns=["transaction", "scheme", "period", "amount", "paid_at", "account", "agent"],
        ),
        "sharers": pd.DataFrame(sharers, columns=["beneficiary", "payments"]),
        "payouts": pd.DataFrame(
            payouts, columns=["transaction", "beneficiary", "amount", "paid_at"]
        ),
    }


def csv_download(db_path: Path, filters, version) -> tuple[bytes, int]:
    """The whole filtered set as CSV (built when asked for), and its row count."""
    conn = store.connect(db_path, readonly=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(store.DOWNLOAD_COLUMNS)
    count = 0
    paid_at = store.DOWNLOAD_COLUMNS.index("paid_at")
    try:
        for row in store.iter_dashboard_rows(conn, filters, version):
            cells = [neutralise(c) for c in row]
            cells[paid_at] = iso_timestamp(row[paid_at])
            writer.writerow(cells)
            count += 1
    finally:
        conn.close()
    return buffer.getvalue().encode("utf-8"), count


@st.cache_data(ttl=TTL, show_spinner=False)
def alert_sources(db_path: Path, version: str, transaction_ids: tuple[int, ...]) -> dict[int, str]:
    """Where each alert came from, in plain words: "model", "rule 'x'", "model and rule 'x'"."""
    from schemewatch import rules

    return _read(db_path, rules.alert_source_labels, version, list(transaction_ids))


@st.cache_data(ttl=10, show_spinner="Verifying the audit trail...")
def verify_trail(db_path, transactions: bool) -> tuple[bool, str]:
    """The hash chains' state: (verified, summary) or (broken, the problems)."""
    report = _read(db_path, lambda conn: store.verify(conn, transactions=transactions))
    if report.ok:
        return True, store.summary_line(report).removeprefix("OK: ")
    return False, "; ".join(report.problems)
