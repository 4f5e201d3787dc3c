"""Small pieces every dashboard page shares: the page context and how money and reasons read."""

from __future__ import annotations

import json

import streamlit as st


def context():
    """(settings, user, filters, model version) as app.py stored them for this run."""
    return (
        st.session_state["settings"],
        st.session_state["user"],
        st.session_state["filters"],
        st.session_state["version"],
    )


def rupees(value: float) -> str:
    """An amount as auditors write it: ₹12,345."""
    return f"₹{value:,.0f}"


def reasons(text: str | None) -> list[str]:
    """The plain-word reasons stored with a score (JSON), as a list of sentences."""
    # pandas turns a missing value into NaN in a column with some reasons
    return [r["text"] for r in json.loads(text)] if isinstance(text, str) and text else []
