"""The auditors' Streamlit dashboard (run with `streamlit run dashboard.py`)."""
