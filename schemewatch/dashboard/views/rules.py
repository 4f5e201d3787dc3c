"""Dashboard page: auditors' rules. Everyone sees them; supervisors and admins add, edit,
backtest and switch them (each change audited old -> new; a version runs only once backtested).
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from schemewatch import rule_language, rules, store
from schemewatch.dashboard.formatting import escape_markdown as md
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import day_start, iso_timestamp


def _read(settings, query, *args):
    conn = store.connect(settings.db_path, readonly=True)
    try:
        return query(conn, *args)
    finally:
        conn.close()


def _change(settings, done: str, change) -> None:
    """Run one rule change on a write connection; then show the page again with one line."""
    conn = store.open_database(settings.db_path)
    try:
        change(conn)
    except SchemewatchError as exc:
        st.error(md(exc))
        return
    finally:
        conn.close()
    st.session_state["rule_done"] = done
    st.rerun()


def _table(listed: list[rules.Rule]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rule": [r.name for r in listed],
            "version": [r.current_version for r in listed],
            "state": ["on" if r.enabled else "off" for r in listed],
            "backtested": ["yes" if r.backtest else "no" for r in listed],
            "expression": [r.expression for r in listed],
            "description": [r.description or "" for r in listed],
            "changed by": [r.updated_by for r in listed],
            "changed": [iso_timestamp(int(r.updated_at))[:16].replace("T", " ") for r in listed],
        }
    )


def _names_help() -> None:
    with st.expander("What a rule may use"):
        st.markdown(
            "Numbers, texts in quotes, `and` `or` `not`, `== != < <= > >=`, "
            '`in ("A", "B")`, `not in (...)`, parentheses and `+ - * /`. Texts compare only '
            'with `==`, `!=` and `in`; a missing account or agent is `""`. Example: '
            '`km_from_home > 500 and scheme == "OLD_AGE_PENSION"`.'
        )
        st.dataframe(
            pd.DataFrame(
                {"name": list(rule_language.NAMES), "kind": list(rule_language.NAMES.values())}
            ),
            hide_index=True,
            height=220,
        )


def _backtest_lines(summary: dict) -> None:
    for line in rules.summary_lines(summary):
        st.markdown(f"- {md(line)}")
    if summary.get("samples"):
        st.caption("Sample hits")
        st.dataframe(pd.DataFrame(summary["samples"]), hide_index=True, width="stretch")


def _detail(settings, user, rule: rules.Rule) -> None:
    st.subheader(f"{md(rule.name)} (version {rule.current_version})")
    st.code(rule.expression, language=None, wrap_lines=True)
    try:
        rule_language.parse(rule.expression)
    except SchemewatchError as exc:
        st.error(f"This version no longer parses, so the monitor skips it: {md(exc)}")
    if rule.description:
        st.markdown(md(rule.description))
    state = "on: the monitor runs it on every new payment" if rule.enabled else "off"
    st.markdown(f"State: {md(state)}.")
    if rule.backtest:
        when = iso_timestamp(int(rule.backtested_at))[:16].replace("T", " ")
        st.markdown(
            f"Last backtest of this version, by {md(rule.backtested_by)} at {md(when)} IST:"
        )
        _backtest_lines(rule.backtest)
    else:
        st.info("This version has not been backtested; it cannot be switched on until it is.")
    if user.can("write_rules"):
        _backtest_form(settings, user, rule)
        _switch(settings, user, rule)
        _edit_form(settings, user, rule)


def _default_period(settings) -> tuple[date, date]:
    start, end = _read(settings, rules.backtest_period, None, None)
    first = date.fromisoformat(iso_timestamp(start)[:10])
    last = date.fromisoformat(iso_timestamp(end - 1)[:10])
    return first, last


def _backtest_form(settings, user, rule: rules.Rule) -> None:
    st.markdown("**Backtest** over stored payments (IST days, inclusive)")
    try:
        first, last = _default_period(settings)
    except SchemewatchError as exc:
        st.info(md(exc))
        return
    left, right = st.columns(2)
    chosen_first = left.date_input("From", value=first, key="rule_backtest_from")
    chosen_last = right.date_input("To", value=last, key="rule_backtest_to")
    if st.button("Backtest", key="rule_backtest"):
        start, end = day_start(chosen_first), day_start(chosen_last + timedelta(days=1))
        version = st.session_state.get("version")

        def run(conn):
            with st.spinner("Computing features and running the rule..."):
                result = rules.backtest(settings.db_path, rule.expression, start, end, version)
            rules.record_backtest(conn, rule.name, result, user.username, user.role)

        _change(settings, "Backtested; the result is kept with this version (below).", run)


def _switch(settings, user, rule: rules.Rule) -> None:
    if rule.enabled:
        if st.button("Switch off", key="rule_disable"):
            _change(
                settings,
                f"Rule '{rule.name}' is off.",
                lambda conn: rules.set_enabled(conn, rule.name, False, user.username, user.role),
            )
    elif st.button("Switch on", key="rule_enable", disabled=rule.backtest is None):
        _change(
            settings,
            f"Rule '{rule.name}' is on: the monitor runs it on every new payment.",
            lambda conn: rules.set_enabled(conn, rule.name, True, user.username, user.role),
        )


def _edit_form(settings, user, rule: rules.Rule) -> None:
    with st.expander("Edit (a new version, off until backtested)"):
        expression = st.text_area("Expression", value=rule.expression, key="rule_edit_expression")
        description = st.text_input(
            "Description", value=rule.description or "", key="rule_edit_description"
        )
        if st.button("Save as a new version", key="rule_edit_save"):
            _change(
                settings,
                "Saved as a new version; backtest it before switching it on.",
                lambda conn: rules.edit_rule(
                    conn, rule.name, expression, description, user.username, user.role
                ),
            )


def _add_form(settings, user) -> None:
    st.subheader("Add a rule")
    name = st.text_input("Name", key="rule_new_name")
    expression = st.text_area(
        "Expression",
        key="rule_new_expression",
        placeholder='km_from_home > 500 and scheme == "OLD_AGE_PENSION"',
    )
    description = st.text_input("Description (optional)", key="rule_new_description")
    if st.button("Add rule", key="rule_add"):
        _change(
            settings,
            f"Added rule '{name.strip()}' (off): backtest it, then switch it on.",
            lambda conn: rules.add_rule(
                conn, name, expression, description, user.username, user.role
            ),
        )


def rules_page() -> None:
    settings = st.session_state["settings"]
    user = st.session_state["user"]
    st.title("Rules")
    done = st.session_state.pop("rule_done", None)
    if done:
        st.success(md(done))
    if not user.can("write_rules"):
        st.info("Your role can view the rules; supervisors and admins write and switch them.")
    _names_help()
    listed = _read(settings, rules.list_rules)
    if listed:
        st.dataframe(_table(listed), hide_index=True, width="stretch")
        chosen = st.selectbox("Rule", [r.name for r in listed], key="rule_choice")
        _detail(settings, user, next(r for r in listed if r.name == chosen))
    else:
        st.info("No rules yet.")
    if user.can("write_rules"):
        _add_form(settings, user)


try:
    rules_page()
except SchemewatchError as exc:
    st.error(md(exc))
