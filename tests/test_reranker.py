"""The re-ranker learns from auditors' dispositions only, and keeps the autoencoder in charge."""

from __future__ import annotations

import numpy as np
import pytest

from schemewatch import modeling, reranker, store, triage
from schemewatch.detector import AutoencoderConfig

pytestmark = pytest.mark.both_engines

SUPERVISOR = ("test-supervisor", "supervisor")


def close_alerts(conn, confirmed, rejected) -> None:
    """A supervisor closes these alerts, through the dashboard's path."""
    for transaction_id in confirmed:
        triage.update_case(conn, int(transaction_id), *SUPERVISOR, disposition="confirmed_fraud")
    for transaction_id in rejected:
        triage.update_case(conn, int(transaction_id), *SUPERVISOR, disposition="false_positive")


@pytest.fixture
def rows(generated_db, conn):
    """Transaction ids, features and a stand-in score of every row of the small database."""
    transactions, matrix = modeling.feature_matrix(generated_db, conn)
    ids = transactions["transaction_id"].to_numpy(np.int64)
    scores = np.abs(matrix).sum(axis=1).astype(float)
    return ids, matrix, scores


def fit(conn, rows, **options):
    ids, matrix, scores = rows
    threshold = float(np.quantile(scores, 0.99))
    return reranker.fit_from_dispositions(
        conn, ids, scores, lambda positions: matrix[positions], threshold, seed=3, **options
    )


def test_reranker_is_not_fitted_below_the_label_minimum(conn, rows):
    ids = rows[0]
    close_alerts(conn, ids[:30], ids[30 : reranker.MIN_LABELS - 1])
    fitted, card = fit(conn, rows)
    assert fitted is None
    assert card["fitted"] is False and card["labels"] == reranker.MIN_LABELS - 1
    assert str(reranker.MIN_LABELS) in card["reason"]


def test_reranker_is_not_fitted_with_only_confirmed_fraud(conn, rows):
    close_alerts(conn, rows[0][:60], [])
    fitted, card = fit(conn, rows)
    assert fitted is None
    assert "both" in card["reason"]


def test_reranker_is_fitted_with_both_kinds_and_counts_them(conn, rows):
    ids = rows[0]
    close_alerts(conn, ids[:40], ids[100:120])
    fitted, card = fit(conn, rows)
    assert fitted is not None
    assert card["fitted"] is True
    assert (card["labels"], card["confirmed_fraud"], card["false_positive"]) == (60, 40, 20)
    assert card["background_rows"] > 0


def test_needs_information_is_not_a_label(conn, rows):
    ids = rows[0]
    close_alerts(conn, ids[:40], ids[100:120])
    triage.update_case(conn, int(ids[500]), *SUPERVISOR, disposition="needs_information")
    assert fit(conn, rows)[1]["labels"] == 60


def test_reranker_follows_dispositions_even_where_ground_truth_contradicts_them(
    generated_db, conn, rows
):
    ids, matrix, scores = rows
    truth = set(store.ground_truth_frame(generated_db)["transaction_id"].tolist())
    frauds = [i for i in ids.tolist() if i in truth][:40]
    normals = [i for i in ids.tolist() if i not in truth][:40]
    # The auditors disagree with the generator on every row they closed.
    close_alerts(conn, confirmed=normals, rejected=frauds)
    fitted, _ = fit(conn, rows, background_rows=0)
    position = {transaction_id: index for index, transaction_id in enumerate(ids.tolist())}
    confirmed = [position[i] for i in normals]
    rejected = [position[i] for i in frauds]
    probability = fitted.probability(matrix, scores)
    assert probability[confirmed].mean() > 0.8
    assert probability[rejected].mean() < 0.2


def test_saved_reranker_loads_with_the_same_probabilities(tmp_path, conn, rows):
    ids, matrix, scores = rows
    close_alerts(conn, ids[:40], ids[100:120])
    fitted, _ = fit(conn, rows)
    reranker.save(tmp_path, fitted)
    loaded = reranker.load(tmp_path)
    assert np.array_equal(loaded.probability(matrix, scores), fitted.probability(matrix, scores))
    assert np.array_equal(
        reranker.combined_score(loaded, matrix, scores),
        reranker.combined_score(fitted, matrix, scores),
    )
    assert reranker.load(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("probability", [0.0, 0.3, 0.9, 1.0])
def test_combined_risk_never_falls_as_the_autoencoder_percentile_rises(probability):
    percentile = np.linspace(0.0, 1.0, 10_001)
    combined = reranker.combine(
        percentile, np.full(len(percentile), probability), reranker.GATE_SHARE, 1.0
    )
    assert np.all(np.diff(combined) >= 0)
    assert combined.min() >= 0 and combined.max() <= 1


def test_rows_below_the_gate_keep_their_autoencoder_order_and_stay_below_the_band():
    percentile = np.array([0.10, 0.50, 0.90, 0.96, 0.99])
    combined = reranker.combine(percentile, np.array([1.0, 1.0, 1.0, 0.0, 0.0]), 0.05, 1.0)
    assert np.array_equal(combined[:3], percentile[:3])
    assert combined[2] < combined[3] < combined[4]


def test_without_a_reranker_the_combined_risk_is_the_autoencoder_score():
    scores = np.array([3.0, 1.0, 2.0])
    assert np.array_equal(reranker.combined_score(None, np.zeros((3, 2)), scores), scores)


def test_training_after_dispositions_saves_a_reranker_and_its_model_card(
    generated_db, conn, tmp_path
):
    config = AutoencoderConfig(epochs=2, batch_size=512, seed=1)
    models = tmp_path / "modeling"
    card = modeling.train(generated_db, models, config=config)
    assert card["reranker"]["fitted"] is False
    assert modeling.load_model(models).reranker is None

    model = modeling.load_model(models)
    transactions, matrix = modeling.feature_matrix(generated_db, conn)
    ids = transactions["transaction_id"].to_numpy()
    top = ids[np.argsort(-model.detector.score(matrix))[:60]]
    close_alerts(conn, top[:45], top[45:])
    card = modeling.train(generated_db, models, config=config)
    learnt = card["reranker"]
    assert learnt["fitted"] is True
    assert (learnt["labels"], learnt["confirmed_fraud"], learnt["false_positive"]) == (60, 45, 15)
    assert learnt["changed"]["top_alerts"] == round(len(ids) * reranker.TOP_SHARE)
    assert learnt["changed"]["moved_in"] == learnt["changed"]["moved_out"]
    assert "never the generator's ground truth" in learnt["source"]
    loaded = modeling.load_model(models)
    assert loaded.reranker is not None
    assert (models / card["version"] / reranker.RERANKER_FILE).exists()


def test_training_says_in_one_line_why_there_is_no_reranker():
    card = {"fitted": False, "reason": "12 dispositions; at least 50 are needed"}
    assert reranker.describe(card) == "no re-ranker: 12 dispositions; at least 50 are needed"
