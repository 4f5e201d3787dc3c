"""`schemewatch rules ...`: auditors' rules on the command line (see schemewatch/rules.py).

Like every command: open the database, call one function, one `Error: ...` line on failure.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from schemewatch.cli import (
    _operator,
    db_option,
    friendly_errors,
    model_dir_option,
    settings_for,
)


@click.group()
def rules():
    """Auditors' rules: named conditions over features and payment fields, backtested first."""


# Someone who can run the command line on the database's machine acts as an admin (as with
# `users`); `--as USER` records a dashboard account instead and is held to that account's role.
OPERATOR_ROLE = "admin"


def as_option(command):
    return click.option(
        "--as",
        "as_user",
        default=None,
        help="Act as this dashboard account (its role applies) [default: the OS user].",
    )(command)


@contextlib.contextmanager
def _rules_session(db_path: Path | None, as_user: str | None):
    """(connection, actor, role) for a rules command on an existing database."""
    from schemewatch import rules as auditors_rules
    from schemewatch import users as accounts

    settings = settings_for(db_path)
    conn = accounts.open_accounts(settings.db_path)
    try:
        if as_user is None:
            yield conn, _operator(), OPERATOR_ROLE
        else:
            yield conn, as_user, auditors_rules.actor_role(conn, as_user)
    finally:
        conn.close()


@rules.command("add")
@click.argument("name")
@click.argument("expression")
@click.option("--description", default=None, help="What the rule looks for, in words.")
@as_option
@db_option
@friendly_errors
def rules_add(name, expression, description, as_user, db_path):
    """Add a rule, switched off until it is backtested."""
    from schemewatch import rules as auditors_rules

    with _rules_session(db_path, as_user) as (conn, actor, role):
        rule = auditors_rules.add_rule(conn, name, expression, description, actor, role)
    click.echo(
        f"Added rule '{rule.name}' (version 1, off). Backtest it with "
        f"`schemewatch rules test '{rule.name}'`, then enable it."
    )


@rules.command("edit")
@click.argument("name")
@click.argument("expression")
@click.option("--description", default=None, help="A new description ('' removes it).")
@as_option
@db_option
@friendly_errors
def rules_edit(name, expression, description, as_user, db_path):
    """Give a rule a new expression: a new version, off until backtested."""
    from schemewatch import rules as auditors_rules

    with _rules_session(db_path, as_user) as (conn, actor, role):
        rule = auditors_rules.edit_rule(conn, name, expression, description, actor, role)
    click.echo(f"Rule '{rule.name}' is now version {rule.current_version} (off until backtested).")


@rules.command("list")
@db_option
@friendly_errors
def rules_list(db_path):
    """List rules: name, version, on/off, backtested or not, expression."""
    from schemewatch import rules as auditors_rules

    with _rules_session(db_path, None) as (conn, _actor, _role):
        listed = auditors_rules.list_rules(conn)
    if not listed:
        click.echo("No rules yet; add one with `schemewatch rules add NAME EXPRESSION`.", err=True)
    for rule in listed:
        state = "on" if rule.enabled else "off"
        tested = "backtested" if rule.backtest else "not backtested"
        click.echo(
            f"{rule.name:<24} v{rule.current_version:<3} {state:<4} {tested:<15} {rule.expression}"
        )


@rules.command("test")
@click.argument("rule_or_expression")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First payment day (IST), inclusive [default: 30 days before --to].",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last payment day (IST), inclusive [default: the last stored day].",
)
@click.option("--samples/--no-samples", default=True, help="Show sample hits.")
@as_option
@db_option
@model_dir_option
@friendly_errors
def rules_test(rule_or_expression, date_from, date_to, samples, as_user, db_path, model_dir):
    """Backtest a rule (by name) or an expression over stored payments.

    A named rule's result is kept with its current version, which may then be enabled.
    """
    from schemewatch import rules as auditors_rules
    from schemewatch import triage

    settings = settings_for(db_path, model_dir)
    with _rules_session(db_path, as_user) as (conn, actor, role):
        rule = _rule_or_none(conn, rule_or_expression)
        expression = rule.expression if rule else rule_or_expression
        start, end = auditors_rules.backtest_period(
            conn, date_from.date() if date_from else None, date_to.date() if date_to else None
        )
        result = auditors_rules.backtest(
            settings.db_path,
            expression,
            start,
            end,
            auditors_rules.current_model_version(settings.model_dir),
        )
        keep = rule is not None and triage.allowed(role, "write_rules")
        if keep:
            auditors_rules.record_backtest(conn, rule.name, result, actor, role)
    for line in result.lines():
        click.echo(line)
    if samples and result.samples:
        click.echo("Sample hits:")
        for sample in result.samples:
            click.echo("  " + ", ".join(f"{k}={v}" for k, v in sample.items()))
    if keep:
        click.echo(f"Kept with rule '{rule.name}' version {rule.current_version}.")
    elif rule is not None:
        click.echo(f"Not kept with the rule: your role ({role}) may not write rules.")


def _rule_or_none(conn, name_or_expression: str):
    from schemewatch import rules as auditors_rules
    from schemewatch import store

    row = store.get_rule(conn, name_or_expression)
    if row is not None:
        return auditors_rules.Rule.from_row(row)
    try:
        auditors_rules.rule_language.parse(name_or_expression)
    except auditors_rules.RuleError as exc:
        raise auditors_rules.RuleError(
            f"no rule is named '{name_or_expression}', and as an expression: {exc}"
        ) from exc
    return None


@rules.command("enable")
@click.argument("name")
@as_option
@db_option
@friendly_errors
def rules_enable(name, as_user, db_path):
    """Switch a backtested rule on: the monitor runs it on every new payment."""
    from schemewatch import rules as auditors_rules

    with _rules_session(db_path, as_user) as (conn, actor, role):
        rule = auditors_rules.set_enabled(conn, name, True, actor, role)
    click.echo(f"Rule '{rule.name}' version {rule.current_version} is on.")


@rules.command("disable")
@click.argument("name")
@as_option
@db_option
@friendly_errors
def rules_disable(name, as_user, db_path):
    """Switch a rule off."""
    from schemewatch import rules as auditors_rules

    with _rules_session(db_path, as_user) as (conn, actor, role):
        rule = auditors_rules.set_enabled(conn, name, False, actor, role)
    click.echo(f"Rule '{rule.name}' is off.")
