"""Auditors' rules: versions and audit, backtests, the CLI, the monitor running enabled rules."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from schemewatch import modeling, rule_language, rules, store, users
from schemewatch.cli import cli
from schemewatch.errors import SchemewatchError
from schemewatch.monitor import Monitor
from schemewatch.triage import NotAllowed

pytestmark = pytest.mark.both_engines

FAR_PENSIONS = 'km_from_home > 500 and scheme == "OLD_AGE_PENSION"'


def _audit(db) -> list[tuple]:
    conn = store.connect(db)
    try:
        sql = "SELECT actor, action, target, old_value, new_value FROM audit_log ORDER BY entry_id"
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def _run(*args, db):
    return CliRunner().invoke(cli, ["rules", *args, "--db", str(db)])


def _whole_period(conn) -> tuple[int, int]:
    first, last = store.paid_at_range(conn)
    return first, last + 1


# -- versions, permissions, audit ---------------------------------------------------------------


def test_an_edit_adds_a_version_switches_the_rule_off_and_is_audited_old_to_new(conn, generated_db):
    rules.add_rule(conn, "big", "amount > 5000", "large payments", "ravi", "supervisor")
    start, end = _whole_period(conn)
    result = rules.backtest(generated_db, "amount > 5000", start, end, None)
    rules.record_backtest(conn, "big", result, "ravi", "supervisor")
    rules.set_enabled(conn, "big", True, "ravi", "supervisor")
    edited = rules.edit_rule(conn, "big", "amount > 9000", None, "meera", "admin")
    assert (edited.current_version, edited.enabled, edited.backtest) == (2, False, None)
    assert edited.description == "large payments"
    with pytest.raises(SchemewatchError, match="version 2 has not been backtested"):
        rules.set_enabled(conn, "big", True, "meera", "admin")
    actions = [(a, act, old, new) for a, act, _, old, new in _audit(generated_db)]
    assert actions[-4:] == [
        ("ravi", "rule added", None, "amount > 5000"),
        ("ravi", "rule backtested", None, result.headline()),
        ("ravi", "rule enabled", "disabled", "enabled"),
        ("meera", "rule edited", "amount > 5000", "amount > 9000"),
    ]


def test_auditors_may_not_write_rules(conn):
    with pytest.raises(NotAllowed):
        rules.add_rule(conn, "big", "amount > 5000", None, "asha", "auditor")
    rules.add_rule(conn, "big", "amount > 5000", None, "ravi", "supervisor")
    for change in (
        lambda: rules.edit_rule(conn, "big", "amount > 1", None, "asha", "auditor"),
        lambda: rules.set_enabled(conn, "big", False, "asha", "auditor"),
    ):
        with pytest.raises(NotAllowed):
            change()


def test_a_backtest_of_an_older_form_is_not_kept(conn, generated_db):
    rules.add_rule(conn, "big", "amount > 5000", None, "ravi", "supervisor")
    start, end = _whole_period(conn)
    result = rules.backtest(generated_db, "amount > 5000", start, end, None)
    rules.edit_rule(conn, "big", "amount > 6000", None, "ravi", "supervisor")
    with pytest.raises(SchemewatchError, match="changed while it was being backtested"):
        rules.record_backtest(conn, "big", result, "ravi", "supervisor")


# -- backtest -------------------------------------------------------------------------------


def test_backtest_in_chunks_matches_features_of_the_whole_table(conn, generated_db):
    """Chunked features over a period equal the batch features of every stored payment."""
    transactions, matrix = modeling.feature_matrix(generated_db, conn)
    start = int(np.quantile(transactions["paid_at"], 0.5))
    end = int(transactions["paid_at"].max()) + 1
    expression = (
        "km_from_home > 300 or log_beneficiaries_on_account > 1.2 or amount_to_entitlement > 1.5"
    )
    parsed = rule_language.parse(expression)
    in_period = (transactions["paid_at"] >= start).to_numpy()
    columns = rule_language.columns_for(parsed, transactions, matrix)
    expected = transactions["transaction_id"].to_numpy()[
        in_period & rule_language.evaluate(parsed, columns, len(transactions))
    ]
    result = rules.backtest(generated_db, expression, start, end, None, chunk_rows=700)
    labelled = set(r[0] for r in conn.execute("SELECT transaction_id FROM ground_truth").fetchall())
    period_labelled = set(transactions["transaction_id"][in_period]) & labelled
    assert result.transactions == int(in_period.sum())
    assert result.hits == len(expected) > 0
    assert result.generated and result.model_alerts is None
    assert result.ground_truth_total == len(period_labelled)
    assert result.ground_truth_hits == len(set(expected) & labelled) > 0
    assert result.ground_truth_recall == result.ground_truth_hits / len(period_labelled)
    assert {s["transaction_id"] for s in result.samples} <= set(expected.tolist())
    assert 0 < len(result.samples) <= rules.SAMPLE_HITS


def test_backtest_counts_model_alerts_and_auditors_dispositions(scored_template, tmp_path):
    db_template, models = scored_template
    db = tmp_path / "scored.db"
    shutil.copy(db_template, db)
    version = modeling.current_version(models)
    conn = store.open_database(db)
    alerts = [
        r[0]
        for r in conn.execute(
            "SELECT transaction_id FROM scores WHERE is_alert = 1 ORDER BY transaction_id LIMIT 3"
        )
    ]
    from schemewatch import triage

    triage.update_case(conn, alerts[0], "ravi", "supervisor", disposition="confirmed_fraud")
    triage.update_case(conn, alerts[1], "ravi", "supervisor", disposition="false_positive")
    expression = "amount > 0"  # every payment: the counts are the whole period's
    start, end = _whole_period(conn)
    result = rules.backtest(db, expression, start, end, version)
    model_alerts = conn.execute("SELECT COUNT(*) FROM scores WHERE score > threshold").fetchone()[0]
    assert result.hits == result.transactions == 6_000
    assert result.model_alerts == model_alerts
    assert (result.confirmed_fraud, result.false_positive) == (1, 1)
    assert result.precision_by_dispositions == 0.5
    assert result.ground_truth_precision == result.ground_truth_total / 6_000
    assert result.ground_truth_recall == 1.0
    lines = result.lines()
    assert any("Ground truth (generated data)" in line for line in lines)
    assert any("50.0% (1 confirmed fraud, 1 false positives" in line for line in lines)
    conn.close()


# -- the command line ---------------------------------------------------------------------------


def test_cli_add_list_test_enable_disable_with_audit_entries(generated_db):
    added = _run(
        "add", "far pensions", FAR_PENSIONS, "--description", "pensions far away", db=generated_db
    )
    assert added.exit_code == 0, added.output
    refused = _run("enable", "far pensions", db=generated_db)
    assert refused.exit_code == 1
    assert "Error: rule 'far pensions' version 1 has not been backtested" in refused.output
    tested = _run(
        "test", "far pensions", "--from", "2025-11-01", "--to", "2026-10-30", db=generated_db
    )
    assert tested.exit_code == 0, tested.output
    assert "hits in" in tested.output and "Ground truth (generated data)" in tested.output
    assert "Kept with rule 'far pensions' version 1." in tested.output
    assert _run("enable", "far pensions", db=generated_db).exit_code == 0
    listed = _run("list", db=generated_db)
    assert "far pensions" in listed.output and " on " in listed.output
    assert "backtested" in listed.output and FAR_PENSIONS in listed.output
    assert _run("disable", "far pensions", db=generated_db).exit_code == 0
    entries = [e for e in _audit(generated_db) if e[1].startswith("rule")]
    assert [e[1] for e in entries] == [
        "rule added",
        "rule backtested",
        "rule enabled",
        "rule disabled",
    ]
    assert all(e[0].startswith("cli:") and e[2] == "far pensions" for e in entries)
    assert entries[0][3:] == (None, FAR_PENSIONS)
    assert entries[2][3:] == ("disabled", "enabled") and entries[3][3:] == ("enabled", "disabled")


def test_cli_errors_are_one_line_with_the_column(generated_db):
    result = _run("add", "typo", "km_form_home > 500", db=generated_db)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: unknown name 'km_form_home' at column 1; did you mean 'km_from_home'?"
    )
    missing = _run("test", "no such rule", db=generated_db)
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: no rule is named 'no such rule', and as an expression")
    assert "Traceback" not in missing.output


def test_cli_as_a_dashboard_account_is_held_to_its_role(generated_db):
    conn = store.open_database(generated_db)
    users.add_user(conn, "asha", "auditor", "a long enough secret", actor="setup")
    users.add_user(conn, "ravi", "supervisor", "a long enough secret", actor="setup")
    conn.close()
    refused = _run("add", "big", "amount > 5000", "--as", "asha", db=generated_db)
    assert refused.exit_code == 1 and "may not write rules" in refused.output
    assert _run("add", "big", "amount > 5000", "--as", "ravi", db=generated_db).exit_code == 0
    assert _audit(generated_db)[-1][:3] == ("ravi", "rule added", "big")
    # Anyone may backtest an expression; it is kept only for a named rule.
    assert _run("test", "amount > 5000", "--as", "asha", db=generated_db).exit_code == 0


# -- the monitor ----------------------------------------------------------------------------


def test_the_monitor_writes_hits_for_enabled_rules_only(
    generated_template, scored_template, tmp_path
):
    _, models = scored_template
    db = tmp_path / "fresh.db"
    shutil.copy(generated_template, db)  # not scored yet
    conn = store.open_database(db)
    on = 'scheme == "OLD_AGE_PENSION" and amount >= 1000'
    rules.add_rule(conn, "rich pensions", on, None, "ravi", "supervisor")
    rules.add_rule(conn, "everything", "amount > 0", None, "ravi", "supervisor")
    start, end = _whole_period(conn)
    for name, expression in (("rich pensions", on), ("everything", "amount > 0")):
        result = rules.backtest(db, expression, start, end, None)
        rules.record_backtest(conn, name, result, "ravi", "supervisor")
    rules.set_enabled(conn, "rich pensions", True, "ravi", "supervisor")
    rules.edit_rule(conn, "rich pensions", on + " and hour >= 0", None, "ravi", "supervisor")
    rules.record_backtest(
        conn,
        "rich pensions",
        rules.backtest(db, on + " and hour >= 0", start, end, None),
        "ravi",
        "supervisor",
    )
    rules.set_enabled(conn, "rich pensions", True, "ravi", "supervisor")  # version 2

    monitor = Monitor(db, models, batch_size=4_000)
    monitor.tick()
    version = modeling.current_version(models)
    expected = [
        r[0]
        for r in conn.execute(
            "SELECT transaction_id FROM transactions WHERE transaction_id <= 4000 "
            "AND scheme = 'OLD_AGE_PENSION' AND amount >= 1000 ORDER BY transaction_id"
        )
    ]
    hits = store.rule_hits(conn, version)
    assert expected and [h[0] for h in hits] == expected
    assert {(h[1], h[2]) for h in hits} == {("rich pensions", 2)}
    scored = {
        r[0]: r
        for r in conn.execute(
            "SELECT transaction_id, score, threshold, is_alert, reasons FROM scores"
        )
    }
    assert len(scored) == 4_000
    for transaction_id, score, threshold, is_alert, reasons in scored.values():
        if transaction_id in expected:
            assert is_alert == 1
            first = json.loads(reasons)[0]
            assert first["rule"] == "rich pensions" and first["rule_version"] == 2
            assert on + " and hour >= 0" in first["text"]
        else:
            assert is_alert == int(score > threshold)
    labels = rules.alert_source_labels(conn, version, expected)
    by_model = {t for t in expected if scored[t][1] > scored[t][2]}
    assert {labels[t] for t in expected} <= {
        "rule 'rich pensions'",
        "model and rule 'rich pensions'",
    }
    assert all(labels[t].startswith("model and") == (t in by_model) for t in expected)
    # Switched off, the rule no longer runs on the next payments.
    rules.set_enabled(conn, "rich pensions", False, "ravi", "supervisor")
    monitor.tick()
    assert [h[0] for h in store.rule_hits(conn, version)] == expected
    monitor.conn.close()
    conn.close()


@pytest.mark.parametrize(
    "by_model, names, text",
    [
        (True, [], "model"),
        (False, ["far pensions"], "rule 'far pensions'"),
        (True, ["far pensions"], "model and rule 'far pensions'"),
        (False, ["a", "b", "c"], "rules 'a', 'b' and 'c'"),
    ],
)
def test_an_alert_says_where_it_came_from_in_plain_words(by_model, names, text):
    assert rules.describe_source(by_model, names) == text


def test_a_rule_naming_the_district_finds_it_although_the_scoring_read_has_none(generated_db):
    rows = store.transactions_for_scoring(generated_db, 0, 300)
    assert "district" not in rows
    conn = store.open_database(generated_db)
    district = conn.execute(
        "SELECT district FROM transactions WHERE transaction_id = 1"
    ).fetchone()[0]
    expected = [
        r[0]
        for r in conn.execute(
            "SELECT transaction_id FROM transactions WHERE transaction_id <= 300 AND district = ?",
            (district,),
        )
    ]
    rules.add_rule(conn, "one district", f'district == "{district}"', None, "ravi", "supervisor")
    start, end = _whole_period(conn)
    result = rules.backtest(generated_db, f'district == "{district}"', start, end, None)
    rules.record_backtest(conn, "one district", result, "ravi", "supervisor")
    rules.set_enabled(conn, "one district", True, "ravi", "supervisor")
    enabled = rules.EnabledRules(generated_db)
    enabled.refresh(conn)
    matrix = np.zeros((len(rows), 1), np.float32)  # no feature is read
    none = np.full(len(rows), None, dtype=object)
    hits, is_alert, reasons = enabled.apply(rows, matrix, "v1", np.zeros(len(rows), bool), none)
    assert [h[1] for h in hits] == expected and is_alert.sum() == len(expected)
    assert (
        result.hits
        == conn.execute(
            "SELECT COUNT(*) FROM transactions WHERE district = ?", (district,)
        ).fetchone()[0]
    )
    conn.close()


def test_an_auditor_may_backtest_a_named_rule_but_it_is_not_kept(generated_db):
    conn = store.open_database(generated_db)
    users.add_user(conn, "asha", "auditor", "a long enough secret", actor="setup")
    conn.close()
    assert _run("add", "big", "amount > 5000", db=generated_db).exit_code == 0
    tested = _run("test", "big", "--as", "asha", db=generated_db)
    assert tested.exit_code == 0, tested.output
    assert "Not kept with the rule: your role (auditor) may not write rules." in tested.output
    refused = _run("enable", "big", db=generated_db)
    assert "has not been backtested" in refused.output


def test_an_enabled_rule_that_no_longer_parses_is_skipped_and_named(conn):
    """A feature renamed after a rule was written must not stop the scoring of every payment."""
    with store.write_transaction(conn):
        rule_id = store.insert_rule(conn, "old", "retired_feature > 1", None, "ravi")
        store.save_backtest(conn, rule_id, 1, "{}", "ravi")
        store.set_rule_enabled(conn, rule_id, True, "ravi")
    enabled = rules.EnabledRules(":memory:")
    enabled.refresh(conn)
    assert enabled.rules == []
    assert "unknown name 'retired_feature'" in enabled.broken["old"]
