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
