"""The dashboard's entry point: login, sidebar filters and page navigation."""

from __future__ import annotations

import os
import sys
from datetime import date, timedelta
from pathlib import Path

import streamlit as st

from schemewatch import store
from schemewatch.dashboard import auth, data
from schemewatch.dashboard.formatting import escape_markdown
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import day_start
from schemewatch.payments import TYPOLOGIES
from schemewatch.settings import load_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STATUSES = ("all", "alerts", "open", "claimed", *store.DISPOSITIONS)


def _filters(settings) -> store.DashboardFilters:
    """Sidebar filters; every page, chart and download follows them."""
    choices = data.options(settings.db_path)
    side = st.sidebar
    side.header("Filters")
    today = date.today()
    period = side.date_input(
        "Payment dates", value=(today - timedelta(days=365), today), key="filter_dates"
    )
    start, end = period if isinstance(period, tuple) and len(period) == 2 else (None, None)
    chosen_schemes = side.multiselect("Scheme", choices["schemes"], key="filter_schemes")
    chosen_states = side.multiselect("State", choices["states"], key="filter_states")
    districts = [d for s, d in choices["districts"] if not chosen_states or s in chosen_states]
    chosen_districts = side.multiselect("District", districts, key="filter_districts")
    status = side.selectbox("Alert status", STATUSES, key="filter_status")
    low, high = side.slider(
        "Risk (0-100; 90 = the model's alert line)", 0, 100, (0, 100), key="filter_risk"
    )
    typologies = side.multiselect("Resembles typology", TYPOLOGIES, key="filter_typologies")
    search = side.text_input("Beneficiary or transaction id", key="filter_search")
    return store.DashboardFilters(
        start=day_start(start) if start else None,
        end=day_start(end + timedelta(days=1)) if end else None,
        schemes=tuple(chosen_schemes),
        states=tuple(chosen_states),
        districts=tuple(chosen_districts),
        status=status,
        risk_min=low or None,
        risk_max=high if high < 100 else None,
        typologies=tuple(typologies),
        search=search.strip() or None,
    )


VIEWS = Path(__file__).parent / "views"


def _view(name: str) -> Path:
    """A page script (Streamlit's multipage pattern: one short script per page)."""
    return VIEWS / f"{name}.py"


def _script_options(argv: list[str]) -> dict:
    """`streamlit run dashboard.py -- --db URL --model-dir DIR` (both optional)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", dest="db_path")
    parser.add_argument("--model-dir")
    known, _ = parser.parse_known_args(argv)
    return vars(known)


def main() -> None:
    st.set_page_config(page_title="Schemewatch", page_icon=":mag:", layout="wide")
    settings = load_settings(**_script_options(sys.argv[1:]))
    try:
        conn = store.open_database(settings.db_path)
    except SchemewatchError as exc:
        st.error(escape_markdown(exc))
        st.stop()
    try:
        user = auth.require_login(settings, conn)
        st.session_state["user"] = user
        st.session_state["settings"] = settings
        st.session_state["version"] = data.model_version(settings.model_dir)
        st.session_state["filters"] = _filters(settings)
        available = [
            st.Page(_view("overview"), title="Overview", icon=":material/dashboard:", default=True),
            st.Page(_view("alerts"), title="Alerts", icon=":material/notifications:"),
            st.Page(_view("model"), title="Model", icon=":material/insights:"),
            st.Page(_view("rules"), title="Rules", icon=":material/rule:"),
        ]
        if user.can("read_audit"):
            available.append(
                st.Page(_view("audit_log"), title="Audit log", icon=":material/history:")
            )
        if user.can("manage"):
            available.append(st.Page(_view("users"), title="Users", icon=":material/group:"))
        st.navigation(available).run()
    except SchemewatchError as exc:
        st.error(escape_markdown(exc))
    finally:
        conn.close()
