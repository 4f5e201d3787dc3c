"""The 0-100 risk figure: the threshold sits at risk 90, risk rises with the score, stays 0-100."""

from __future__ import annotations

import numpy as np
import pytest

from schemewatch import risk


@pytest.fixture
def training_scores():
    return np.random.default_rng(3).lognormal(mean=0.0, sigma=2.0, size=20_000)


@pytest.mark.parametrize("budget", [0.005, 0.01, 0.05])
def test_the_threshold_maps_to_risk_90(training_scores, budget):
    threshold = float(np.quantile(training_scores, 1 - budget))
    knots = risk.knots(training_scores, threshold, budget)
    assert risk.risk([threshold], knots)[0] == pytest.approx(risk.THRESHOLD_RISK)
    assert risk.risk([threshold * 1.01], knots)[0] > 90 > risk.risk([threshold * 0.99], knots)[0]


def test_risk_rises_with_the_score_and_stays_within_0_and_100(training_scores):
    threshold = float(np.quantile(training_scores, 0.99))
    knots = risk.knots(training_scores, threshold, 0.01)
    scores = np.geomspace(1e-9, 1e9, 5_000)
    values = risk.risk(scores, knots)
    assert np.all(np.diff(values) >= 0)
    assert values.min() == 0.0 and values.max() == 100.0


def test_a_median_payment_is_about_half_way_to_the_threshold(training_scores):
    knots = risk.knots(training_scores, float(np.quantile(training_scores, 0.99)), 0.01)
    median = risk.risk([np.median(training_scores)], knots)[0]
    assert median == pytest.approx(90 * 0.5 / 0.99, abs=0.5)


def test_the_highest_training_score_is_risk_99(training_scores):
    knots = risk.knots(training_scores, float(np.quantile(training_scores, 0.99)), 0.01)
    assert risk.risk([training_scores.max()], knots)[0] == pytest.approx(99.0)


def test_tied_training_scores_still_give_a_monotonic_mapping_with_the_threshold_at_90():
    scores = np.concatenate([np.zeros(5_000), np.full(4_000, 2.0), np.linspace(2, 50, 1_000)])
    knots = risk.knots(scores, 2.0, 0.01)
    assert np.all(np.diff(knots["log_score"]) > 0)
    assert risk.risk([2.0], knots)[0] == pytest.approx(90.0)


def test_a_model_without_saved_knots_gives_no_risk_rather_than_a_guess():
    assert np.isnan(risk.risk([5.0], None)).all()


def test_times_normal_is_the_square_root_of_a_squared_error_ratio():
    assert risk.times_normal(144.0) == pytest.approx(12.0)


def test_the_monitor_stores_risk_above_90_for_alerts_and_below_for_the_rest(scored_template):
    from schemewatch import store

    db, _ = scored_template
    conn = store.connect(db, readonly=True)
    rows = conn.execute("SELECT is_alert, risk FROM scores").fetchall()
    assert rows and all(r is not None and 0 <= r <= 100 for _, r in rows)
    assert min(r for a, r in rows if a) >= 90 > max(r for a, r in rows if not a)
