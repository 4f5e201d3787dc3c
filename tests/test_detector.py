"""Generic contract checks for the detector interface, on small synthetic matrices."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from schemewatch.detector import AutoencoderConfig, AutoencoderDetector

CONFIG = AutoencoderConfig(hidden=(8, 3), epochs=15, batch_size=128, seed=5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(3000, 3))
    mixing = rng.normal(size=(3, 10))
    normal = latent @ mixing + rng.normal(scale=0.05, size=(3000, 10))
    outliers = rng.normal(scale=3.0, size=(60, 10))
    return normal.astype(np.float32), outliers.astype(np.float32)


@pytest.fixture(scope="module")
def fitted(data):
    return AutoencoderDetector(CONFIG).fit(data[0])


def test_scores_known_outliers_above_normal_rows(fitted, data):
    normal, outliers = data
    scores = fitted.score(np.vstack([normal, outliers]))
    truth = np.r_[np.zeros(len(normal)), np.ones(len(outliers))]
    assert roc_auc_score(truth, scores) > 0.95


def test_same_seed_gives_the_same_scores(fitted, data):
    again = AutoencoderDetector(CONFIG).fit(data[0])
    np.testing.assert_allclose(again.score(data[1]), fitted.score(data[1]), rtol=1e-5)


def test_fit_and_score_do_not_mutate_input(data):
    normal = data[0].copy()
    detector = AutoencoderDetector(AutoencoderConfig(hidden=(4, 2), epochs=1, seed=1))
    detector.fit(normal)
    detector.score(normal)
    np.testing.assert_array_equal(normal, data[0])


def test_save_and_load_round_trip_gives_the_same_scores(fitted, data, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = AutoencoderDetector.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.score(data[1]), fitted.score(data[1]), rtol=1e-6)
    assert loaded.config == fitted.config


def test_contributions_explain_the_score(fitted, data):
    parts = fitted.contributions(data[1])
    np.testing.assert_allclose(parts.max(axis=1), fitted.score(data[1]), rtol=1e-6)


@pytest.fixture(scope="module")
def segmented():
    """Two kinds of rows (one-hot columns 3-4): a flag is everyday for kind A, unheard of for B."""
    rng = np.random.default_rng(3)
    n = 4000
    kind_b = rng.random(n) < 0.5
    flag = np.where(kind_b, 0.0, (rng.random(n) < 0.3).astype(float))
    noise = rng.normal(size=(n, 2))
    matrix = np.column_stack([flag, noise, ~kind_b, kind_b]).astype(np.float32)
    config = AutoencoderConfig(
        hidden=(8, 3),
        epochs=10,
        batch_size=128,
        seed=2,
        context_columns=(3, 4),
        segment_columns=(3, 4),
    )
    return AutoencoderDetector(config).fit(matrix)


def test_segments_judge_a_value_against_rows_of_the_same_kind(segmented):
    flagged_a = [1.0, 0.0, 0.0, 1.0, 0.0]
    flagged_b = [1.0, 0.0, 0.0, 0.0, 1.0]
    plain_b = [0.0, 0.0, 0.0, 0.0, 1.0]
    scores = segmented.score(np.array([flagged_a, flagged_b, plain_b], np.float32))
    assert scores[1] > 10 * scores[0] and scores[1] > 10 * scores[2]
    assert segmented.segments(np.array([flagged_a, flagged_b, [0, 0, 0, 0, 0]])).tolist() == [
        0,
        1,
        -1,
    ]


def test_context_columns_never_contribute(segmented):
    odd = np.array([[0.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    parts = segmented.contributions(odd)
    assert (parts[:, 3:] == 0).all()


def test_segment_yardsticks_survive_save_and_load(segmented, tmp_path):
    rows = np.array([[1.0, 0.5, -0.5, 0.0, 1.0], [1.0, 0.5, -0.5, 1.0, 0.0]], np.float32)
    segmented.save(tmp_path / "model")
    loaded = AutoencoderDetector.load(tmp_path / "model")
    assert loaded.config == segmented.config
    np.testing.assert_allclose(loaded.score(rows), segmented.score(rows), rtol=1e-6)
