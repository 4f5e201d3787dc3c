"""Generic contract checks for the detector interface, on small synthetic matrices."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from schemewatch import detector as detector_module
from schemewatch.detector import (
    AutoencoderConfig,
    AutoencoderDetector,
    _aligned_empty,
    _as_tensor,
    layer_sizes,
)

CONFIG = AutoencoderConfig(hidden=(8, 3), epochs=15, batch_size=128, seed=5)
AUTOENCODER_ONLY = AutoencoderConfig(hidden=(8, 3), epochs=15, seed=5, isolation_forest=False)


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


def _auc(detector, normal, outliers) -> float:
    scores = detector.score(np.vstack([normal, outliers]))
    return roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(outliers))], scores)


def test_scores_known_outliers_above_normal_rows(fitted, data):
    assert _auc(fitted, *data) > 0.95


def test_defaults_beat_chance_on_small_data_with_outliers_mixed_in(data):
    normal, outliers = data[0][:300], data[1][:15]
    detector = AutoencoderDetector().fit(np.vstack([normal, outliers]))
    assert _auc(detector, normal, outliers) > 0.9


def test_same_seed_gives_the_same_scores(fitted, data):
    again = AutoencoderDetector(CONFIG).fit(data[0])
    np.testing.assert_allclose(again.score(data[1]), fitted.score(data[1]), rtol=1e-5)


def test_fit_and_score_do_not_mutate_input(data):
    normal = data[0].copy()
    detector = AutoencoderDetector(AutoencoderConfig(hidden=(4, 2), epochs=1, seed=1))
    detector.fit(normal)
    detector.score(normal)
    detector.contributions(normal)
    np.testing.assert_array_equal(normal, data[0])


def test_save_and_load_round_trip_gives_the_same_scores(fitted, data, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = AutoencoderDetector.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.score(data[1]), fitted.score(data[1]), rtol=1e-6)
    np.testing.assert_allclose(
        loaded.contributions(data[1]), fitted.contributions(data[1]), rtol=1e-6
    )
    assert loaded.config == fitted.config and loaded.forest is not None


def test_numpy_scoring_is_the_keras_models_own_arithmetic(fitted, data):
    rows = np.vstack([data[0][:500], data[1]])
    inputs = fitted._model_input(fitted._scaled(rows), fitted.segments(rows))
    by_keras = np.asarray(fitted.model(inputs, training=False))
    by_numpy = detector_module.reconstruct(fitted.layers, inputs)
    np.testing.assert_allclose(by_numpy, by_keras, rtol=1e-4, atol=1e-5)
    assert len(fitted.layers) == 2 * len(CONFIG.hidden)
    assert [layer.activation for layer in fitted.layers][-1] == "linear"


def test_a_saved_detector_scores_without_importing_tensorflow(fitted, data, tmp_path):
    fitted.save(tmp_path / "model")
    np.save(tmp_path / "rows.npy", data[1])
    script = (
        "import sys, numpy as np\n"
        "from schemewatch.detector import AutoencoderDetector\n"
        "folder = sys.argv[1]\n"
        "d = AutoencoderDetector.load(folder + '/model')\n"
        "np.save(folder + '/scores.npy', d.score(np.load(folder + '/rows.npy')))\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False"]
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), fitted.score(data[1]), rtol=1e-6)


def test_a_loaded_detector_saves_again_and_scores_the_same(fitted, data, tmp_path):
    fitted.save(tmp_path / "first")
    AutoencoderDetector.load(tmp_path / "first").save(tmp_path / "again")
    (tmp_path / "again" / detector_module.LAYERS_FILE).unlink()  # read back from its Keras file
    again = AutoencoderDetector.load(tmp_path / "again")
    np.testing.assert_allclose(again.score(data[1]), fitted.score(data[1]), rtol=1e-6)


def test_a_model_saved_before_its_layers_file_is_read_from_its_keras_file(fitted, data, tmp_path):
    fitted.save(tmp_path / "model")
    (tmp_path / "model" / detector_module.LAYERS_FILE).unlink()
    loaded = AutoencoderDetector.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.score(data[1]), fitted.score(data[1]), rtol=1e-6)


def test_contributions_explain_the_autoencoder_part(fitted, data):
    parts = fitted.contributions(data[1])
    own = np.log1p(parts).mean(axis=1)  # unsegmented data: the mean of log(1 + error)
    np.testing.assert_allclose(fitted.aggregate(parts), own, rtol=1e-5)
    # The forest only adds to the autoencoder: rows it explains as worse still score higher.
    worst, best = np.argmax(own), np.argmin(own)
    assert fitted.score(data[1][[worst]]) > fitted.score(data[1][[best]])


@pytest.mark.parametrize("aggregation", ["max", "top2", "mean", "logmean"])
def test_without_the_forest_the_score_is_the_aggregated_contributions(data, aggregation):
    config = AutoencoderConfig(
        hidden=(8, 3), epochs=3, seed=1, aggregation=aggregation, isolation_forest=False
    )
    detector = AutoencoderDetector(config).fit(data[0])
    parts = detector.contributions(data[1])
    expected = {
        "max": parts.max(axis=1),
        "top2": np.sort(parts, axis=1)[:, -2:].sum(axis=1),
        "mean": parts.mean(axis=1),
        "logmean": np.log1p(parts).mean(axis=1),
    }[aggregation]
    np.testing.assert_allclose(detector.score(data[1]), expected, rtol=1e-6)
    assert detector.forest is None


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        AutoencoderConfig(aggregation="median")


def test_early_stopping_stops_before_the_epoch_cap(data):
    config = AutoencoderConfig(hidden=(8, 3), epochs=500, seed=3, isolation_forest=False)
    detector = AutoencoderDetector(config).fit(data[0][:1000])
    assert 1 < len(detector.loss_history) < 500
    assert len(detector.validation_history) == len(detector.loss_history)


def test_row_budget_bounds_training_on_large_data(data):
    config = AutoencoderConfig(hidden=(4, 2), row_budget=6_000, seed=1, isolation_forest=False)
    detector = AutoencoderDetector(config).fit(data[0])
    assert len(detector.loss_history) <= 2


def test_layers_are_sized_from_the_width():
    assert layer_sizes(4) == (4, 2)
    assert layer_sizes(42) == (32, 16)
    wide = layer_sizes(500)
    assert wide[0] >= wide[1] and max(wide) <= 64


def test_constant_and_heavy_tailed_columns_are_handled(data):
    rng = np.random.default_rng(7)
    normal, outliers = data
    heavy = rng.pareto(1.0, size=(len(normal) + len(outliers), 1)) * 1e6
    matrix = np.hstack(
        [np.vstack([normal, outliers]), np.full((len(heavy), 1), 42.0, np.float32), heavy]
    )
    config = AutoencoderConfig(hidden=(8, 3), epochs=5, seed=2)
    detector = AutoencoderDetector(config).fit(matrix[: len(normal)])
    scores = detector.score(matrix)
    assert np.isfinite(scores).all() and np.isfinite(detector.contributions(matrix)).all()
    truth = np.r_[np.zeros(len(normal)), np.ones(len(outliers))]
    assert roc_auc_score(truth, scores) > 0.9
    shifted = matrix[:5].copy()
    shifted[:, 10] = 43.0  # a constant column's value changing is noticed, not a division by 0
    assert (
        detector.contributions(shifted)[:, 10] > detector.contributions(matrix[:5])[:, 10]
    ).all()


def test_models_saved_before_the_newer_settings_still_load(fitted, data, tmp_path):
    fitted.save(tmp_path / "old")
    scaling = json.loads((tmp_path / "old" / "scaling.json").read_text())
    for key in ("aggregation", "isolation_forest", "patience", "row_budget", "validation_share"):
        scaling["config"].pop(key)
    scaling.pop("aggregation")
    (tmp_path / "old" / "scaling.json").write_text(json.dumps(scaling))
    (tmp_path / "old" / "isolation_forest.joblib").unlink()
    loaded = AutoencoderDetector.load(tmp_path / "old")
    parts = loaded.contributions(data[1])
    np.testing.assert_allclose(loaded.score(data[1]), parts.max(axis=1), rtol=1e-6)


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


def test_with_segments_one_feature_far_out_of_line_is_enough(segmented):
    """Segmented data (our payments) score the two largest contributions added, with no forest:
    one feature far out of line is enough, a second one adds to it."""
    rows = np.array([[1.0, 0.5, -0.5, 0.0, 1.0], [0.0, 9.0, 0.0, 1.0, 0.0]], np.float32)
    assert segmented.aggregation == "top2" and segmented.forest is None
    parts = segmented.contributions(rows)
    np.testing.assert_allclose(
        segmented.score(rows), np.sort(parts, axis=1)[:, -2:].sum(axis=1), rtol=1e-6
    )
    assert (segmented.score(rows) >= parts.max(axis=1)).all()


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


def test_a_value_unheard_of_in_its_segment_is_not_copied_through(monkeypatch, tmp_path):
    """Inputs are clipped to the row's own segment's range too: a flag everyday for kind A but
    never seen in kind B reaches the network as B's normal value, so it cannot be reconstructed."""
    monkeypatch.setattr(detector_module, "MIN_SEGMENT_ROWS", 500)
    rng = np.random.default_rng(4)
    kind_b = rng.random(3000) < 0.5
    flag = np.where(kind_b, 0.0, (rng.random(3000) < 0.3).astype(float))
    matrix = np.column_stack([flag, rng.normal(size=(3000, 2)), ~kind_b, kind_b]).astype(np.float32)
    config = AutoencoderConfig(
        hidden=(8, 3), epochs=3, seed=2, context_columns=(3, 4), segment_columns=(3, 4)
    )
    detector = AutoencoderDetector(config).fit(matrix)
    rows = np.array([[1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
    inputs = detector._model_input(detector._scaled(rows), detector.segments(rows))
    assert inputs[0, 0] > 0 and inputs[1, 0] == pytest.approx(0.0)
    detector.save(tmp_path / "model")
    loaded = AutoencoderDetector.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.score(rows), detector.score(rows), rtol=1e-6)


def test_training_inputs_reach_tensorflow_without_a_copy():
    inputs = _aligned_empty((1_000, 7))
    inputs[:] = 0.0
    tensor = _as_tensor(inputs)
    inputs[3, 2] = 5.0  # the tensor shares the array's memory, so it sees the change
    assert float(tensor[3, 2]) == 5.0
    unaligned = np.zeros((10, 7), np.float32)[1:]  # not aligned: copied, still equal
    assert np.array_equal(np.asarray(_as_tensor(unaligned)), unaligned)
