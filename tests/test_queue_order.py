"""The alert queue: ordered by combined risk when a re-ranker exists, rule alerts never hidden
below its limit, and the overview's open cases counted as cases, not alerts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from schemewatch import modeling, reranker, rules, store, triage
from schemewatch.monitor import Monitor

VERSION = "v-queue"
CASE = store.CASE_QUEUE_COLUMNS


def _ids(conn, count: int) -> list[int]:
    sql = "SELECT transaction_id FROM transactions ORDER BY transaction_id LIMIT ?"
    return [row[0] for row in conn.execute(sql, (count,))]


def _score(conn, rows, version: str = VERSION) -> None:
    """Alerts as (transaction_id, risk, combined_risk), each a case of its own."""
    with store.write_transaction(conn):
        store.insert_scores(
            conn,
            [(version, t, risk, 1.0, 1, None, None, 0.0, risk, both) for t, risk, both in rows],
        )
        store.assign_alert_cases(conn, version, [(t, t) for t, _, _ in rows])


def _queue(conn, limit: int = 200) -> list[dict]:
    rows = store.dashboard_cases(conn, store.DashboardFilters(), VERSION, limit)
    return [dict(zip(CASE, row, strict=True)) for row in rows]


def test_queue_orders_by_combined_risk_when_present(conn):
    a, b, c = _ids(conn, 3)
    _score(conn, [(a, 99.0, 96.0), (b, 92.0, 99.5), (c, 95.0, 97.0)])
    assert [case["case_id"] for case in _queue(conn)] == [b, c, a]


def test_queue_orders_by_risk_without_a_reranker(conn):
    a, b, c = _ids(conn, 3)
    _score(conn, [(a, 99.0, None), (b, 92.0, None), (c, 95.0, None)])
    queue = _queue(conn)
    assert [case["case_id"] for case in queue] == [a, c, b]
    assert all(case["combined_risk"] is None for case in queue)


def _rule_alert(conn, transaction_id: int, risk: float) -> None:
    """An alert raised only by an enabled rule: a low model risk and a rule hit."""
    rules.add_rule(conn, "night agents", "hour < 5", None, "ravi", "supervisor")
    rule_id = conn.execute("SELECT rule_id FROM rules WHERE name = 'night agents'").fetchone()[0]
    _score(conn, [(transaction_id, risk, None)])
    with store.write_transaction(conn):
        store.insert_rule_hits(conn, [(VERSION, transaction_id, rule_id, 1)])


def test_a_rule_only_alert_is_listed_even_below_the_queue_limit(conn):
    *model_alerts, by_rule = _ids(conn, 6)
    _score(conn, [(t, 95.0 + i, None) for i, t in enumerate(model_alerts)])
    _rule_alert(conn, by_rule, risk=12.0)
    queue = _queue(conn, limit=3)
    ids = [case["case_id"] for case in queue]
    assert ids == [model_alerts[4], model_alerts[3], model_alerts[2], by_rule]
    assert [case["by_rule"] for case in queue] == [0, 0, 0, 1]
    assert {case["rule_cases"] for case in queue} == {1}


def test_the_alerts_page_says_rule_cases_are_listed_and_which_ordering_it_uses(site):
    from conftest import VIEWS, login

    db = site / "transactions.db"
    conn = store.open_database(db)
    version = modeling.current_version(site / "modeling")
    quiet = conn.execute(
        "SELECT transaction_id FROM scores WHERE model_version = ? AND is_alert = 0 "
        "ORDER BY score LIMIT 1",
        (version,),
    ).fetchone()[0]
    rules.add_rule(conn, "everything", "amount > 0", None, "ravi", "supervisor")
    rule_id = conn.execute("SELECT rule_id FROM rules").fetchone()[0]
    with store.write_transaction(conn):
        conn.execute(
            "UPDATE scores SET is_alert = 1, reasons = ? "
            "WHERE model_version = ? AND transaction_id = ?",
            (json.dumps([rules.rule_reason("everything", 1, "amount > 0")]), version, quiet),
        )
        store.insert_rule_hits(conn, [(version, quiet, rule_id, 1)])
    conn.close()
    app = login("asha")
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    assert not app.exception
    captions = " ".join(c.value for c in app.caption).replace("\\", "")
    assert "Ordered by the model's risk" in captions
    assert "every one is listed" in captions
    queue = app.dataframe[0].value
    assert (queue["raised by"] == "rule").sum() == 1


def test_open_cases_count_cases_not_alerts(conn):
    a, b, c, d = _ids(conn, 4)
    _score(conn, [(a, 99.0, None), (b, 98.0, None), (c, 97.0, None), (d, 96.0, None)])
    with store.write_transaction(conn):
        store.assign_alert_cases(conn, VERSION, [(b, a)])  # a and b are one case
    triage.update_case(conn, c, "ravi", "supervisor", disposition="false_positive")
    everything = store.DashboardFilters()
    assert store.dashboard_kpis(conn, everything, VERSION)["open_cases"] == 2  # {a, b} and {d}
    assert store.summary_kpis(conn, everything, VERSION)["open_cases"] == 2
    triage.update_case(conn, a, "ravi", "supervisor", disposition="confirmed_fraud")
    # b is still open, so its case is too
    assert store.dashboard_kpis(conn, everything, VERSION)["open_cases"] == 2
    triage.update_case(conn, b, "ravi", "supervisor", disposition="confirmed_fraud")
    assert store.summary_kpis(conn, everything, VERSION)["open_cases"] == 1


@pytest.fixture
def with_reranker(scored_template, generated_template, tmp_path):
    """The unscored database and the trained model, plus a re-ranker fitted on stand-in labels."""
    _, models = scored_template
    db = tmp_path / "transactions.db"
    shutil.copy(generated_template, db)
    shutil.copytree(models, tmp_path / "modeling")
    model = modeling.load_model(tmp_path / "modeling")
    conn = store.open_database(db)
    _, matrix = modeling.feature_matrix(db, conn)
    conn.close()
    scores = model.detector.score(matrix).astype(float)
    order = np.argsort(-scores)
    labelled, background = order[:60], order[-500:]
    labels = (np.arange(60) % 4 != 0).astype(np.int8)  # 45 confirmed, 15 false positives
    chosen = np.concatenate([labelled, background])
    fitted = reranker.fit(matrix[chosen], scores[chosen], labels, background, scores, seed=1)
    reranker.save(model.folder, fitted)
    return db, tmp_path / "modeling", fitted, matrix, scores


def test_the_monitor_stores_the_combined_risk_and_the_queue_follows_it(with_reranker):
    db, models, fitted, matrix, scores = with_reranker
    monitor = Monitor(db, models)
    monitor.tick()
    monitor.conn.close()
    conn = store.connect(db, readonly=True)
    version = modeling.current_version(models)
    stored = np.array(
        conn.execute(
            "SELECT combined_risk FROM scores WHERE model_version = ? ORDER BY transaction_id",
            (version,),
        ).fetchall(),
        dtype=float,
    ).ravel()
    expected = 100.0 * reranker.combined_score(fitted, matrix, scores)
    assert np.allclose(stored, expected, atol=1e-3)
    rows = store.dashboard_cases(conn, store.DashboardFilters(), version, 50)
    combined = [dict(zip(CASE, r, strict=True))["combined_risk"] for r in rows]
    assert combined == sorted(combined, reverse=True) and combined[0] is not None


def test_without_a_reranker_the_monitor_stores_no_combined_risk(scored_template):
    db, _ = scored_template
    conn = store.connect(db, readonly=True)
    assert conn.execute("SELECT COUNT(combined_risk) FROM scores").fetchone()[0] == 0


def test_the_model_page_says_what_the_reranker_learnt_and_how_the_queue_is_ordered(site):
    from conftest import VIEWS, login

    app = login("ravi")
    app.switch_page(f"{VIEWS}/model.py")
    app.run()
    assert not app.exception
    shown = " ".join(m.value for m in [*app.markdown, *app.caption]).replace("\\", "")
    assert "No re-ranker: 0 dispositions; at least 50 are needed" in shown
    assert "The alert queue orders cases by the model's risk" in shown
