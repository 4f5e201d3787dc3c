"""Thin wrapper: `streamlit run dashboard.py` starts the auditors' dashboard."""

from schemewatch.dashboard.app import main

main()
