"""Model page: threshold, budget, evaluation, and alerts, precision and recall by threshold."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from schemewatch import evaluation, modeling, reranker, store
from schemewatch.dashboard import widgets
from schemewatch.dashboard.formatting import escape_markdown as md


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


def _reranker_line(learnt: dict | None) -> None:
    """What the re-ranker learnt from (auditors' dispositions), and what it does to the queue."""
    if not learnt:
        return
    st.markdown(md(reranker.describe(learnt).capitalize() + "."))
    if learnt.get("fitted"):
        moved = learnt.get("changed", {})
        st.caption(
            md(
                "The alert queue orders cases by the combined risk. Of the top "
                f"{moved.get('top_alerts', 0):,} training alerts it moved "
                f"{moved.get('moved_in', 0):,} in and {moved.get('moved_out', 0):,} out."
            )
        )
    else:
        st.caption("The alert queue orders cases by the model's risk.")


def model_view() -> None:
    settings, user, _, version = widgets.context()
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
    _reranker_line(card.get("reranker"))
    if user.can("manage"):
        _threshold_form(settings, user, version, threshold)
    report = evaluation.report_path(settings.model_dir, version)
    if report.exists():
        st.subheader("Evaluation against the generator's ground truth")
        st.code(evaluation.format_table(json.loads(report.read_text())), language=None)
    else:
        st.caption(
            "Run `schemewatch evaluate` to add the evaluation table here (`make demo` runs it "
            "in the background after training; it appears here when done)."
        )
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

    from schemewatch.evaluation import threshold_curve_of

    conn = store.connect(db_path, readonly=True)
    try:  # the scores alone, into one array, and the frauds' scores from the labels' side
        chunks = [
            np.fromiter((row[0] for row in chunk), float, len(chunk))
            for chunk in store.version_scores(conn, version)
        ]
        frauds = store.fraud_scores(conn, version)
    finally:
        conn.close()
    scores = np.concatenate(chunks) if chunks else np.empty(0)
    return threshold_curve_of(scores, np.asarray(frauds, float))


model_view()
