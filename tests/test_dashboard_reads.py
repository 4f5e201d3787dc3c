"""The dashboard's reads built for 10 million rows equal the direct computation: the overview's
alert figures read from the alert overview table (open cases, the hour x weekday heatmap, the
map's first alerts) as rows are scored, linked, triaged and rescored by another model version;
the filters' choices read from indexes; the Model page's scores and labels read in chunks."""

from __future__ import annotations

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
    whole = list(store.scores_with_labels(conn, version))
    chunks = list(store.scores_with_labels(conn, version, chunk_rows=7))
    conn.close()
    assert len(whole) == 1 and {len(chunk) for chunk in chunks[:-1]} == {7}
    rows = [tuple(row) for chunk in chunks for row in chunk]
    assert sorted(rows) == sorted(tuple(row) for row in whole[0])
    assert (len(rows), sum(label for _, label in rows)) == tuple(expected)
