"""The dashboard's reads built for 10 million rows equal the direct computation: the overview's
alert figures read from the alert overview table (open cases, the hour x weekday heatmap, the
map's first alerts) as rows are scored, linked, triaged and rescored by another model version;
the filters' choices read from indexes; the Model page's scores and labels read in chunks."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from conftest import copy_database

from schemewatch import modeling, store, triage
from schemewatch.monitor import Monitor
from schemewatch.store import schema

pytestmark = pytest.mark.both_engines

ALERT_OVERVIEW_ROWS = (
    "SELECT model_version, transaction_id, paid_at, scheme, state, score, risk, combined_risk "
    "FROM alert_overview ORDER BY model_version, transaction_id"
)


@pytest.fixture
def unscored(engine, tmp_path, request):
    """A copy of the generated database, nothing scored, and the scored template's model."""
    template = "generated_template" if engine == "sqlite" else "generated_template_pg"
    scored = "scored_template" if engine == "sqlite" else "scored_template_pg"
    _, models = request.getfixturevalue(scored)
    shutil.copytree(models, tmp_path / "modeling")
    db = copy_database(engine, request.getfixturevalue(template), tmp_path, request)
    return db, tmp_path / "modeling"


def _filter_sets(conn) -> list[store.DashboardFilters]:
    """Every kind of filter the alert overview answers, with values found in the data."""
    first, last = store.paid_at_range(conn)
    middle = (first + last) // 2
    scheme, state = conn.execute(
        "SELECT scheme, state FROM transactions ORDER BY transaction_id LIMIT 1"
    ).fetchone()
    return [
        store.DashboardFilters(),
        store.DashboardFilters(status="alerts"),
        store.DashboardFilters(start=middle),
        store.DashboardFilters(start=first + 86_400, end=middle),
        store.DashboardFilters(schemes=(scheme,)),
        store.DashboardFilters(states=(state, "Nowhere"), end=middle, status="alerts"),
    ]


def _assert_the_overview_alerts_equal_the_direct_figures(conn, version: str) -> None:
    for filters in _filter_sets(conn):
        assert store.summary_answers(filters)
        assert store.summary_open_case_count(conn, filters, version) == store.open_case_count(
            conn, filters, version
        )
        assert sorted(store.summary_hour_weekday(conn, filters, version)) == sorted(
            store.dashboard_hour_weekday(conn, filters, version)
        )
        for limit in (7, 5_000):
            assert store.summary_alerts(conn, filters, version, limit) == store.dashboard_alerts(
                conn, filters, version, limit
            )


def _assert_the_summary_figures_equal_the_direct_ones(conn, version: str) -> None:
    """KPIs, the daily trend and the by-scheme/by-state bars (every row scored; the summary
    is by IST day, as the dashboard's date filter is)."""

    def ist_midnight(seconds):
        return None if seconds is None else (seconds + 19_800) // 86_400 * 86_400 - 19_800

    for filters in _filter_sets(conn):
        filters = dataclasses.replace(
            filters, start=ist_midnight(filters.start), end=ist_midnight(filters.end)
        )
        summary, direct = (
            store.summary_kpis(conn, filters, version),
            store.dashboard_kpis(conn, filters, version),
        )
        assert summary["amount_at_risk"] == pytest.approx(direct.pop("amount_at_risk"))
        assert {k: v for k, v in summary.items() if k != "amount_at_risk"} == direct, filters
        daily = store.summary_daily(conn, filters, version)
        assert daily == store.dashboard_daily(conn, filters, version), filters
        for column in ("scheme", "state"):
            assert sorted(store.summary_alerts_by(conn, filters, version, column)) == sorted(
                store.dashboard_alerts_by(conn, filters, version, column)
            ), filters


def _alert_count(conn, version: str) -> int:
    sql = "SELECT COUNT(*) FROM scores WHERE model_version = ? AND is_alert = 1"
    return conn.execute(sql, (version,)).fetchone()[0]


def test_the_alert_overview_equals_the_direct_figures_as_rows_are_scored_and_triaged(unscored):
    db, models = unscored
    version = modeling.current_version(models)
    conn = store.open_database(db)
    try:
        for _ in range(2):  # half the rows, then the rest
            Monitor(db, models, batch_size=3_000).tick()
            _assert_the_overview_alerts_equal_the_direct_figures(conn, version)
        _assert_the_summary_figures_equal_the_direct_ones(conn, version)
        alerts = conn.execute(
            "SELECT transaction_id FROM alert_overview WHERE model_version = ? "
            "ORDER BY transaction_id",
            (version,),
        ).fetchall()
        assert len(alerts) == _alert_count(conn, version) > 20
        for (transaction_id,), disposition in zip(
            alerts[::5], ("confirmed_fraud", "false_positive", "needs_information"), strict=False
        ):
            triage.update_case(conn, transaction_id, "ravi", "supervisor", disposition=disposition)
        triage.update_case(conn, alerts[1][0], "asha", "auditor", claimed_by="asha")
        _assert_the_overview_alerts_equal_the_direct_figures(conn, version)
        open_cases = store.summary_open_case_count(conn, store.DashboardFilters(), version)
        assert 0 < open_cases < len(alerts)
    finally:
        conn.close()


def test_alerts_of_a_new_model_version_and_unlinked_alerts_join_the_overview(conn):
    ids = [r[0] for r in conn.execute("SELECT transaction_id FROM transactions LIMIT 40")]
    rows = [
        ("v-rescored", t, float(i), 5.0, int(i % 3 == 0), None, None, 0.0, 2.0 * i, None)
        for i, t in enumerate(ids)
    ]
    with store.write_transaction(conn):
        store.insert_scores(conn, rows[:20])
    with store.write_transaction(conn):
        store.insert_scores(conn, rows[20:])  # no case for any of them yet
    assert _alert_count(conn, "v-rescored") == 14
    _assert_the_overview_alerts_equal_the_direct_figures(conn, "v-rescored")
    assert store.summary_open_case_count(conn, store.DashboardFilters(), "v-rescored") == 14


def test_the_migration_builds_the_alert_overview_of_a_scored_database(unscored):
    db, models = unscored
    Monitor(db, models).tick()
    conn = store.open_database(db)
    try:
        written_with_the_scores = [tuple(r) for r in conn.execute(ALERT_OVERVIEW_ROWS)]
        assert len(written_with_the_scores) > 20
        with store.write_transaction(conn):
            conn.execute("DROP TABLE alert_overview")  # as before the migration
            schema._migration_alert_overview(conn)
        assert [tuple(r) for r in conn.execute(ALERT_OVERVIEW_ROWS)] == written_with_the_scores
    finally:
        conn.close()


def test_filter_choices_are_the_distinct_schemes_states_and_districts(conn, empty_conn):
    pairs = [
        tuple(r)
        for r in conn.execute("SELECT DISTINCT state, district FROM beneficiaries ORDER BY 1, 2")
    ]
    schemes = [r[0] for r in conn.execute("SELECT DISTINCT scheme FROM transactions ORDER BY 1")]
    assert len(pairs) > 5 and len(schemes) > 1
    assert store.filter_options(conn) == {
        "schemes": schemes,
        "states": sorted({state for state, _ in pairs}),
        "districts": pairs,
    }
    assert store.filter_options(empty_conn) == {"schemes": [], "states": [], "districts": []}


# Each scored row's label as the Model page means it: an auditor's disposition first, else the
# ground truth (the per-row reference the page's reads are checked against).
_SCORES_WITH_LABELS = (
    "SELECT s.score, CASE WHEN c.disposition = 'confirmed_fraud' THEN 1 "
    "WHEN c.disposition = 'false_positive' THEN 0 "
    "WHEN g.transaction_id IS NOT NULL THEN 1 ELSE 0 END "
    "FROM scores s LEFT JOIN cases c ON c.transaction_id = s.transaction_id "
    "LEFT JOIN ground_truth g ON g.transaction_id = s.transaction_id WHERE s.model_version = ?"
)


def test_scores_and_labels_stream_in_chunks_every_scored_row_once(site, engine):
    from conftest import site_db

    conn = store.connect(site_db(), readonly=True)
    version = conn.execute("SELECT MAX(model_version) FROM scores").fetchone()[0]
    expected = conn.execute(
        "SELECT COUNT(*), SUM(CASE WHEN g.transaction_id IS NULL THEN 0 ELSE 1 END) "
        "FROM scores s LEFT JOIN ground_truth g ON g.transaction_id = s.transaction_id "
        "WHERE s.model_version = ?",
        (version,),
    ).fetchone()
    whole = list(store.version_scores(conn, version))
    chunks = list(store.version_scores(conn, version, chunk_rows=7))
    frauds = store.fraud_scores(conn, version)
    conn.close()
    assert len(whole) == 1 and {len(chunk) for chunk in chunks[:-1]} == {7}
    rows = [tuple(row) for chunk in chunks for row in chunk]
    assert sorted(rows) == sorted(tuple(row) for row in whole[0])
    assert (len(rows), len(frauds)) == tuple(expected)


def test_the_model_pages_curve_from_scores_and_frauds_equals_the_curve_of_every_labelled_row(
    unscored,
):
    import numpy as np

    from schemewatch.evaluation import threshold_curve_of

    db, models = unscored
    version = modeling.current_version(models)
    Monitor(db, models).tick()
    conn = store.open_database(db)
    try:
        scored = conn.execute(
            "SELECT s.transaction_id, g.transaction_id IS NOT NULL FROM scores s "
            "LEFT JOIN ground_truth g ON g.transaction_id = s.transaction_id "
            "ORDER BY s.is_alert DESC, s.score DESC"
        ).fetchall()
        labelled = next(t for t, fraud in scored if fraud)
        unlabelled = next(t for t, fraud in scored if not fraud)
        # Auditors overrule the ground truth both ways: the labels must follow them.
        triage.update_case(conn, labelled, "ravi", "supervisor", disposition="false_positive")
        triage.update_case(conn, unlabelled, "ravi", "supervisor", disposition="confirmed_fraud")
        every = np.array(conn.execute(_SCORES_WITH_LABELS, (version,)).fetchall(), float)
        scores = np.array(
            [row[0] for chunk in store.version_scores(conn, version, chunk_rows=7) for row in chunk]
        )
        frauds = np.array(store.fraud_scores(conn, version), float)
    finally:
        conn.close()
    assert sorted(scores) == sorted(every[:, 0])
    assert sorted(frauds) == sorted(every[every[:, 1] == 1, 0])
    from_parts = threshold_curve_of(scores, frauds)
    assert from_parts == threshold_curve_of(every[:, 0], every[every[:, 1] == 1, 0])
    assert len(from_parts) == 30 and 0 < from_parts[0][1] < from_parts[-1][1]


@pytest.mark.parametrize("rows", [1, 9, 1_000, 20_000])
def test_the_curve_equals_the_straightforward_count_at_each_threshold(rows):
    import numpy as np

    from schemewatch.evaluation import threshold_curve_of

    rng = np.random.default_rng(rows)
    scores = np.round(rng.lognormal(size=rows), 2)  # many ties
    labels = rng.random(rows) < 0.05
    ranked = np.sort(scores)[::-1]
    expected = []
    for share in np.geomspace(0.0005, 0.1, 30):
        threshold = float(ranked[min(int(share * rows), rows - 1)])
        flagged = scores > threshold
        hits = int((flagged & labels).sum())
        expected.append(
            (
                threshold,
                int(flagged.sum()),
                hits / max(int(flagged.sum()), 1),
                hits / max(int(labels.sum()), 1),
            )
        )
    assert threshold_curve_of(scores, scores[labels]) == expected
