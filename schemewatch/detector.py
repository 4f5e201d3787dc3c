"""A dense autoencoder (Keras 3, TensorFlow backend) behind a small generic detector interface.

Works on any numeric matrix: `fit(X)`, `score(X)` (higher = more anomalous), `contributions(X)`,
`save(dir)`, `load(dir)`. Thresholds are a separate decision, not made here. The defaults are
meant to be good on data the detector has never seen (see bench/bench_generic.py).

How it learns:
1. robust scaling: (x - median) / IQR per feature (then std, then 1, where the IQR is zero, so
   constant columns are harmless);
2. the autoencoder sees the scaled row clipped to the training rows' 0.5-99.5 percentiles, so
   heavy tails do not swamp training and a value beyond anything seen in training cannot be
   reconstructed, only approximated at the edge; with segments, also to the row's own segment's
   0.2-99.8 percentiles where those are narrower (a value everyday for one kind of row but unheard
   of for this kind cannot be copied through);
3. unless `hidden` is given, the layers are sized from the data's width (bottleneck about 3/8
   of the columns); the batch shrinks on small data so every epoch takes several steps;
4. training length is chosen on a held-out validation share with early stopping (best weights
   kept), bounded by `epochs` and by `row_budget` rows seen, so a million rows stays fast.

How a row is scored (with NumPy, from the trained layers' weights: the same arithmetic as the
Keras model's call, so a monitor scores without importing TensorFlow, which takes seconds and
some 650 MB; training uses the same NumPy pass for its yardsticks and threshold):
1. each feature's squared error against the *unclipped* scaled value is divided by that feature's
   typical training error, so features normally reconstructed well count more. "Typical" is the
   mean error of the training rows below the feature's 99.9th percentile (so the rare anomalies in
   the training data do not set the yardstick), never less than ERROR_FLOOR. These normalised
   errors are `contributions`, the basis of plain-word reasons;
2. the autoencoder score aggregates them: "max" (one feature far out of line is enough), "top2"
   (the two largest added: one feature far out of line is still enough, and a second one out of
   line breaks the tie among rows the first would rank alike), "mean" (many features a little
   out of line add up) or "logmean" (the mean of log(1 + error): many features out of line add
   up, and one feature's heavy error tail does not swamp the rest). "auto" chooses at fit time:
   "top2" when segment columns are given (per-kind yardsticks: a feature unusual for its kind is
   the signal, as in our payments; "top2" measured better than "max" on bench_quality's tuning
   seeds 1-3: a duplicate wage's repeated amount *and* its fortnight over the entitlement), else
   "logmean" (measured better than "mean" on data the detector has never seen, bench_generic's
   tuning seeds 100-102: mean PR-AUC 0.688 against 0.666, digits with broken dependencies 0.963
   against 0.707, where the mean was led by a few pixels' heavy errors on normal rows);
3. if `isolation_forest` is on (the default unless segment columns are given), an Isolation
   Forest is fitted on the same rows and saved with the model (joblib, i.e. pickle: load only
   model folders you trust, as with any saved model), and the score is a smooth maximum of the
   two detectors' robust z-scores (each against its own training scores, the autoencoder's on a
   log scale and weighted by AUTOENCODER_WEIGHT): a row either one finds unusual scores high.
   The forest catches what a reconstruction model learns to copy (a tight cluster of anomalies,
   values far out along the data's main directions); the autoencoder catches broken dependencies
   between features, which the forest often misses. The autoencoder counts in every score;
   `contributions` explain it.

Two optional column roles make the same matrix mean more:
- context columns (e.g. one-hot categories) are model input only: they help reconstruct the others
  but never count towards the score themselves;
- segment columns (a one-hot category) split the rows into segments, and the typical error is
  measured per segment, so "unusual" means unusual *for rows of that kind*: a value that is
  everyday in one segment can be a strong signal in another. Segments with fewer than
  MIN_SEGMENT_ROWS training rows (too few to place a 99.9th percentile well) use the all-rows
  yardstick.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from schemewatch.quiet_tensorflow import keras as quiet_keras

MODEL_FILE = "autoencoder.keras"
LAYERS_FILE = "layers.npz"  # the trained weights, for scoring without loading TensorFlow
SCALING_FILE = "scaling.json"
FOREST_FILE = "isolation_forest.joblib"
SCORE_CHUNK = 65_536
CLIP = 1_000.0
INPUT_PERCENTILES = (0.5, 99.5)
# Within a segment, the input is also clipped to that segment's own (wider) percentiles wherever
# they are narrower than all rows' range: a value beyond anything seen in rows of its kind cannot
# be copied through from another kind's habits.
SEGMENT_INPUT_PERCENTILES = (0.2, 99.8)
TYPICAL_ERROR_QUANTILE = 0.999
ERROR_FLOOR = 0.01
MIN_SEGMENT_ROWS = 20_000
MIN_BATCH = 32
STEPS_PER_PASS = 16  # small data: shrink the batch so a pass over the rows is this many steps
MIN_EPOCH_STEPS = 50
MIN_VALIDATION_ROWS = 20
MIN_IMPROVEMENT = 0.01
MAX_BOTTLENECK = 32
SHARPNESS = 2.0  # of the smooth maximum: a z-score lead of 1 counts almost fully
# The autoencoder's z-score counts 0.7 in the smooth maximum: on data it has never seen, its
# normal rows spread wider than the forest's, and at full weight that noise outranks the forest's
# clear finds on some data sets (chosen on bench_generic tuning seeds 100-102 with "logmean":
# 0.5 / 0.7 / 0.8 / 1.0 gave mean PR-AUC 0.672 / 0.688 / 0.696 / 0.715 and a worst gap to the
# Isolation Forest of -0.017 / -0.031 / -0.036 / -0.066; 0.7 keeps a margin on both goals).
AUTOENCODER_WEIGHT = 0.7
AGGREGATIONS = ("auto", "max", "top2", "mean", "logmean")
TENSOR_ALIGNMENT = 64  # bytes; TensorFlow shares (never copies) memory aligned like this


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters; immutable, with defaults."""

    hidden: tuple[int, ...] = ()  # () = sized from the data's width
    epochs: int = 100  # at most; early stopping on the validation share usually stops sooner
    patience: int = 3  # epochs without a 1 % better validation loss before stopping
    validation_share: float = 0.1
    row_budget: int = 3_000_000  # at most this many training rows seen (epochs x rows)
    batch_size: int = 2048  # at most; small data use smaller batches
    learning_rate: float = 2e-3
    aggregation: str = "auto"
    isolation_forest: bool | None = None  # None = on unless segment columns are given
    seed: int = 0
    context_columns: tuple[int, ...] = ()
    segment_columns: tuple[int, ...] = ()

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {self.aggregation!r}")


def layer_sizes(width: int) -> tuple[int, ...]:
    """Encoder layers sized from the number of columns: a bottleneck of about 3/8 of them (16 for
    our 42 payment features, the size tuned on them), after a layer twice as wide."""
    bottleneck = min(MAX_BOTTLENECK, max(2, math.ceil(3 * width / 8)))
    return (2 * bottleneck, bottleneck)


class AutoencoderDetector:
    """Reconstruction-error anomaly detector, optionally combined with an Isolation Forest."""

    def __init__(self, config: AutoencoderConfig | None = None):
        self.config = config or AutoencoderConfig()
        self.model = None  # the Keras model while fitting (None when loaded from LAYERS_FILE)
        self.layers: list[DenseLayer] = []
        self.forest = None
        self.aggregation = self.config.aggregation
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.input_low: np.ndarray | None = None
        self.input_high: np.ndarray | None = None
        self.segment_input_range: dict[int, np.ndarray] = {}  # segment -> [low, high] rows
        self.error_scale: np.ndarray | None = None
        self.segment_error_scale: dict[int, np.ndarray] = {}
        self.score_scaling: dict[str, list[float]] = {}
        self.loss_history: list[float] = []
        self.validation_history: list[float] = []

    def _scaled(self, matrix) -> np.ndarray:
        """A new row-major float32 array, robustly scaled (the input is left alone)."""
        scaled = np.array(matrix, dtype=np.float32, order="C")
        scaled -= self.center
        scaled /= self.scale
        return np.clip(scaled, -CLIP, CLIP, out=scaled)

    def _model_input(self, scaled: np.ndarray, segments: np.ndarray) -> np.ndarray:
        """The scaled rows clipped to the training range (of their segment where it has one)."""
        if not self.segment_input_range:
            return np.clip(scaled, self.input_low, self.input_high).astype(np.float32, copy=False)
        ranges = self.segment_input_range.values()
        low = np.vstack([self.input_low, *(r[0] for r in ranges)])
        high = np.vstack([self.input_high, *(r[1] for r in ranges)])
        index = np.zeros(len(segments), np.int64)
        for position, segment in enumerate(self.segment_input_range, start=1):
            index[segments == segment] = position
        return np.clip(scaled, low[index], high[index]).astype(np.float32, copy=False)

    @property
    def uses_forest(self) -> bool:
        """Whether the score also draws on an Isolation Forest."""
        wanted = self.config.isolation_forest
        return not self.config.segment_columns if wanted is None else wanted

    def fit(self, matrix) -> AutoencoderDetector:
        """Learn what normal rows look like (the input is not modified)."""
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) < 2:
            raise ValueError("fit needs a matrix of at least two rows")
        segments = self.segments(matrix)
        self._fit_scaling(matrix, segments)
        self._fit_autoencoder(matrix, segments)
        self.layers = dense_layers(self.model)
        self.aggregation = self.config.aggregation
        if self.aggregation == "auto":
            self.aggregation = "top2" if self.config.segment_columns else "logmean"
        self.error_scale = np.ones(matrix.shape[1], np.float32)
        self.segment_error_scale = {}
        errors = self.contributions(matrix)
        self.error_scale = _typical_error(errors)
        for segment in np.unique(segments):
            rows = segments == segment
            if segment >= 0 and rows.sum() >= MIN_SEGMENT_ROWS:
                self.segment_error_scale[int(segment)] = _typical_error(errors, rows)
        self.forest, self.score_scaling = None, {}
        if self.uses_forest:
            from sklearn.ensemble import IsolationForest

            self.forest = IsolationForest(random_state=self.config.seed).fit(matrix)
            self.score_scaling = {
                "autoencoder": _robust_location(np.log(self._autoencoder_score(matrix))),
                "forest": _robust_location(-self.forest.score_samples(matrix)),
            }
        return self

    def _fit_scaling(self, matrix: np.ndarray, segments: np.ndarray) -> None:
        self.center = np.median(matrix, axis=0)
        q75, q25 = np.percentile(matrix, [75, 25], axis=0)
        spread = q75 - q25
        fallback = matrix.std(axis=0)
        self.scale = np.where(spread > 1e-6, spread, np.where(fallback > 1e-6, fallback, 1.0))
        self.scale = self.scale.astype(np.float32)
        # A column at a time: the same percentiles without a scaled copy of the whole matrix.
        low, high = np.transpose(
            [
                np.percentile(self._scaled_column(matrix, column), INPUT_PERCENTILES)
                for column in range(matrix.shape[1])
            ]
        )
        self.input_low, self.input_high = low.astype(np.float32), high.astype(np.float32)
        self.segment_input_range = {}
        kept = {
            int(segment): segments == segment
            for segment in np.unique(segments)
            if segment >= 0 and (segments == segment).sum() >= MIN_SEGMENT_ROWS
        }
        own = {segment: np.empty((2, matrix.shape[1])) for segment in kept}
        for column in range(matrix.shape[1]):  # again a column at a time
            values = self._scaled_column(matrix, column)
            for segment, rows in kept.items():
                own[segment][:, column] = np.percentile(values[rows], SEGMENT_INPUT_PERCENTILES)
        for segment, (own_low, own_high) in own.items():
            self.segment_input_range[segment] = np.array(
                [np.maximum(own_low, low), np.minimum(own_high, high)], np.float32
            )

    def _scaled_column(self, matrix: np.ndarray, column: int) -> np.ndarray:
        """One column of `_scaled(matrix)` (the same float32 operations, element by element)."""
        scaled = np.array(matrix[:, column], dtype=np.float32)
        scaled -= self.center[column]
        scaled /= self.scale[column]
        return np.clip(scaled, -CLIP, CLIP, out=scaled)

    def _model_inputs(self, matrix: np.ndarray, rows: np.ndarray, segments) -> np.ndarray:
        """The model's inputs for `matrix[rows]`, built a chunk at a time (no full scaled copy)."""
        inputs = _aligned_empty((len(rows), matrix.shape[1]))
        for start in range(0, len(rows), SCORE_CHUNK):
            part = rows[start : start + SCORE_CHUNK]
            inputs[start : start + len(part)] = self._model_input(
                self._scaled(matrix[part]), segments[part]
            )
        return inputs

    def _fit_autoencoder(self, matrix: np.ndarray, segments: np.ndarray) -> None:
        """Train with early stopping on a held-out share, within the epoch and row budgets.

        The model's inputs are built straight into the training and validation arrays, and each
        is handed to Keras as one tensor used as both input and target: one copy of the rows
        in memory while Keras trains, not four.
        """
        keras = quiet_keras()

        config = self.config
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(matrix))
        held_out = max(
            int(len(matrix) * config.validation_share), min(MIN_VALIDATION_ROWS, len(matrix) // 5)
        )
        train = self._model_inputs(matrix, order[held_out:], segments)
        validation = self._model_inputs(matrix, order[:held_out], segments)
        del order
        batch = int(np.clip(len(train) // STEPS_PER_PASS, MIN_BATCH, config.batch_size))
        # Keras spends a fixed time on every epoch; on small data one epoch is several passes.
        passes = math.ceil(MIN_EPOCH_STEPS * batch / len(train))
        train = np.tile(train, (passes, 1)) if passes > 1 else train
        epochs = max(1, min(config.epochs, config.row_budget // len(train)))
        keras.utils.set_random_seed(config.seed)
        self.model = self._build(matrix.shape[1])
        callbacks = [_early_stopping(config.patience)] if held_out else []
        # Keras would copy a NumPy input and its target separately; a tensor it uses as it is.
        train, validation = _as_tensor(train), _as_tensor(validation)
        history = self.model.fit(
            train,
            train,
            validation_data=(validation, validation) if held_out else None,
            epochs=epochs,
            batch_size=batch,
            shuffle=True,
            callbacks=callbacks,
            verbose=0,
        )
        self.loss_history = [float(v) for v in history.history["loss"]]
        self.validation_history = [float(v) for v in history.history.get("val_loss", [])]

    def segments(self, matrix) -> np.ndarray:
        """Each row's segment: which segment column is set (-1 where none is)."""
        matrix = np.asarray(matrix)
        columns = list(self.config.segment_columns)
        if not columns:
            return np.full(len(matrix), -1)
        block = matrix[:, columns]
        return np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), -1)

    def _error_scales(self, segments: np.ndarray) -> np.ndarray:
        """The yardstick of each row: its segment's typical errors, or the all-rows ones."""
        table = np.vstack([self.error_scale, *self.segment_error_scale.values()])
        index = np.zeros(len(segments), np.int64)
        for position, segment in enumerate(self.segment_error_scale, start=1):
            index[segments == segment] = position
        return table[index]

    def _build(self, width: int, *, for_training: bool = True):
        keras = quiet_keras()

        hidden = self.config.hidden or layer_sizes(width)
        inputs = keras.Input(shape=(width,))
        layer = inputs
        for units in hidden:
            layer = keras.layers.Dense(units, activation="relu")(layer)
        for units in reversed(hidden[:-1]):
            layer = keras.layers.Dense(units, activation="relu")(layer)
        outputs = keras.layers.Dense(width)(layer)
        model = keras.Model(inputs, outputs)
        if not for_training:
            return model
        model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mse")
        return model

    def contributions(self, matrix) -> np.ndarray:
        """Per-feature normalised squared reconstruction error (rows x features).

        Context columns contribute zero.
        """
        if not self.layers:
            raise RuntimeError("the detector has not been fitted or loaded")
        matrix = np.asarray(matrix, dtype=np.float32).reshape(-1, len(self.center))
        segments = self.segments(matrix)
        out = np.empty(matrix.shape, np.float32)
        for start in range(0, len(matrix), SCORE_CHUNK):
            rows = slice(start, start + SCORE_CHUNK)
            error = self._scaled(matrix[rows])
            error -= reconstruct(self.layers, self._model_input(error, segments[rows]))
            np.square(error, out=error)
            np.divide(error, self._error_scales(segments[rows]), out=out[rows])
        out[:, list(self.config.context_columns)] = 0.0
        return out

    def aggregate(self, contributions: np.ndarray) -> np.ndarray:
        """The autoencoder's score from its contributions (the largest, the two largest added,
        or the mean over scored features, of the errors or of their logarithms)."""
        if self.aggregation == "max":
            return contributions.max(axis=1)
        if self.aggregation == "top2":
            if contributions.shape[1] < 2:
                return contributions.sum(axis=1)
            return -np.partition(-contributions, 1, axis=1)[:, :2].sum(axis=1)
        scored = max(contributions.shape[1] - len(set(self.config.context_columns)), 1)
        if self.aggregation == "logmean":
            return np.log1p(contributions).sum(axis=1) / scored
        return contributions.sum(axis=1) / scored

    def _autoencoder_score(self, matrix) -> np.ndarray:
        return np.maximum(self.aggregate(self.contributions(matrix)), 1e-6)

    def score(self, matrix) -> np.ndarray:
        """Higher means more anomalous: the autoencoder's score, or, with a forest, a smooth
        maximum of both detectors' robust z-scores (the autoencoder's weighted)."""
        return self.score_and_contributions(matrix)[0]

    def score_and_contributions(self, matrix) -> tuple[np.ndarray, np.ndarray]:
        """`score(matrix)` and `contributions(matrix)` at the cost of one pass (the monitor
        stores the score and explains alerts by the contributions)."""
        matrix = np.asarray(matrix, dtype=np.float32).reshape(-1, len(self.center))
        contributions = self.contributions(matrix)
        own = self.aggregate(contributions)
        if self.forest is None:
            return own, contributions
        own = _standardised(np.log(np.maximum(own, 1e-6)), self.score_scaling["autoencoder"])
        forest = _standardised(-self.forest.score_samples(matrix), self.score_scaling["forest"])
        return smooth_maximum(AUTOENCODER_WEIGHT * own, forest).astype(np.float32), contributions

    def save(self, directory: Path) -> None:
        """Write the model (native .keras), its scaling and any Isolation Forest to a folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._keras_model().save(directory / MODEL_FILE)
        save_layers(directory / LAYERS_FILE, self.layers)
        scaling = {
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "input_low": self.input_low.tolist(),
            "input_high": self.input_high.tolist(),
            "segment_input_range": {
                str(k): v.tolist() for k, v in self.segment_input_range.items()
            },
            "error_scale": self.error_scale.tolist(),
            "segment_error_scale": {
                str(k): v.tolist() for k, v in self.segment_error_scale.items()
            },
            "aggregation": self.aggregation,
            "score_scaling": self.score_scaling,
            "config": asdict(self.config),
            "loss_history": self.loss_history,
            "validation_history": self.validation_history,
        }
        (directory / SCALING_FILE).write_text(json.dumps(scaling, indent=2))
        if self.forest is not None:
            import joblib

            joblib.dump(self.forest, directory / FOREST_FILE)

    def _keras_model(self):
        """The Keras model: the one fitted, or (after `load`) one built with the saved weights."""
        if self.model is None:
            self.model = self._build(len(self.center), for_training=False)
            self.model.set_weights([w for layer in self.layers for w in (layer.kernel, layer.bias)])
        return self.model

    @classmethod
    def load(cls, directory: Path) -> AutoencoderDetector:
        """Read a detector written by `save` (also one saved before the newer settings existed).

        The layers' weights are read from LAYERS_FILE without TensorFlow; a model saved before
        that file existed is read from its Keras file (importing TensorFlow)."""
        directory = Path(directory)
        scaling = json.loads((directory / SCALING_FILE).read_text())
        config = scaling["config"]
        for key in ("hidden", "context_columns", "segment_columns"):
            config[key] = tuple(config.get(key, ()))
        # Models saved before aggregation and the forest existed scored the largest error alone.
        config.setdefault("aggregation", "max")
        config.setdefault("isolation_forest", False)
        detector = cls(AutoencoderConfig(**config))
        detector.aggregation = scaling.get("aggregation", config["aggregation"])
        detector.center = np.array(scaling["center"], dtype=np.float32)
        detector.scale = np.array(scaling["scale"], dtype=np.float32)
        detector.input_low = np.array(scaling["input_low"], dtype=np.float32)
        detector.input_high = np.array(scaling["input_high"], dtype=np.float32)
        detector.segment_input_range = {
            int(k): np.array(v, dtype=np.float32)
            for k, v in scaling.get("segment_input_range", {}).items()
        }
        detector.error_scale = np.array(scaling["error_scale"], dtype=np.float32)
        detector.segment_error_scale = {
            int(k): np.array(v, dtype=np.float32)
            for k, v in scaling.get("segment_error_scale", {}).items()
        }
        detector.score_scaling = scaling.get("score_scaling", {})
        detector.loss_history = scaling["loss_history"]
        detector.validation_history = scaling.get("validation_history", [])
        if (directory / LAYERS_FILE).exists():
            detector.layers = load_layers(directory / LAYERS_FILE)
        else:
            detector.layers = dense_layers(quiet_keras().models.load_model(directory / MODEL_FILE))
        if (directory / FOREST_FILE).exists():
            import joblib

            detector.forest = joblib.load(directory / FOREST_FILE)
        return detector


@dataclass(frozen=True)
class DenseLayer:
    """One trained dense layer: outputs = activation(inputs @ kernel + bias)."""

    kernel: np.ndarray  # float32, inputs x units
    bias: np.ndarray  # float32, units
    activation: str  # one of ACTIVATIONS

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        outputs = inputs @ self.kernel
        outputs += self.bias
        return np.maximum(outputs, 0, out=outputs) if self.activation == "relu" else outputs


ACTIVATIONS = ("relu", "linear")


def dense_layers(model) -> list[DenseLayer]:
    """The Keras model's dense layers in order, as NumPy weights (the only layers _build makes)."""
    layers = []
    for layer in model.layers:
        if not layer.weights:  # the input layer
            continue
        activation = getattr(layer.activation, "__name__", "")
        if activation not in ACTIVATIONS or len(layer.weights) != 2:
            raise ValueError(f"layer {layer.name} is not a dense layer this detector can run")
        kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
        layers.append(DenseLayer(kernel, bias, activation))
    return layers


def reconstruct(layers: list[DenseLayer], inputs: np.ndarray) -> np.ndarray:
    """The autoencoder's output for the inputs (rows x features, float32)."""
    for layer in layers:
        inputs = layer(inputs)
    return inputs


def save_layers(path: Path, layers: list[DenseLayer]) -> None:
    arrays = {}
    for index, layer in enumerate(layers):
        arrays[f"kernel_{index}"], arrays[f"bias_{index}"] = layer.kernel, layer.bias
    np.savez(path, activations=np.array([layer.activation for layer in layers]), **arrays)


def load_layers(path: Path) -> list[DenseLayer]:
    with np.load(path, allow_pickle=False) as saved:
        activations = [str(a) for a in saved["activations"]]
        if any(a not in ACTIVATIONS for a in activations):
            raise ValueError(f"{path.name} names an activation this detector cannot run")
        return [
            DenseLayer(saved[f"kernel_{i}"], saved[f"bias_{i}"], activation)
            for i, activation in enumerate(activations)
        ]


def _aligned_empty(shape: tuple[int, int]) -> np.ndarray:
    """An uninitialised float32 array starting on a TENSOR_ALIGNMENT boundary."""
    size = shape[0] * shape[1] * 4
    raw = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[offset : offset + size].view(np.float32).reshape(shape)


def _as_tensor(array: np.ndarray):
    """A TensorFlow tensor of the array: sharing its memory when TensorFlow allows (C order,
    aligned), which `convert_to_tensor` never does (it copies, briefly twice)."""
    keras = quiet_keras()
    import tensorflow as tf

    aligned = array.ctypes.data % TENSOR_ALIGNMENT == 0 and array.flags.c_contiguous
    if not aligned or array.size == 0:
        return keras.ops.convert_to_tensor(array)
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _early_stopping(patience: int):
    """A callback that stops when the validation loss has not improved by MIN_IMPROVEMENT (relative)
    for `patience` epochs and keeps the best weights. Keras's own takes an absolute min_delta,
    which means nothing across data sets of different scales."""
    keras = quiet_keras()

    class RelativeEarlyStopping(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.best_weights, self.waited = np.inf, None, 0

        def on_epoch_end(self, epoch, logs=None):
            loss = logs["val_loss"]
            if loss < self.best * (1 - MIN_IMPROVEMENT):
                self.best, self.waited = loss, 0
                self.best_weights = self.model.get_weights()
                return
            self.waited += 1
            if self.waited >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return RelativeEarlyStopping()


def smooth_maximum(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """About the larger of the two (a row either detector finds unusual scores high), yet rising
    with both, so the autoencoder counts in every score."""
    return np.logaddexp(SHARPNESS * first, SHARPNESS * second) / SHARPNESS


def _typical_error(errors: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Per column: mean squared error of the rows (all, or those selected) below the
    TYPICAL_ERROR_QUANTILE, floored.

    A column at a time, so no temporary is as large as `errors`; the float32 total is a running
    sum in row order, the same additions as a sum over the whole matrix's first axis.
    """
    typical = np.empty(errors.shape[1])
    for column in range(errors.shape[1]):
        values = errors[:, column] if rows is None else errors[rows, column]
        below = values <= np.quantile(values, TYPICAL_ERROR_QUANTILE)
        total = np.cumsum(np.where(below, values, 0))[-1]
        typical[column] = np.float64(total) / max(int(below.sum()), 1)
    return np.maximum(typical, ERROR_FLOOR).astype(np.float32)


def _robust_location(scores: np.ndarray) -> list[float]:
    """Median and interquartile range of training scores (the range never zero)."""
    q25, median, q75 = np.percentile(scores, [25, 50, 75])
    return [float(median), float(max(q75 - q25, 1e-6))]


def _standardised(scores: np.ndarray, location: list[float]) -> np.ndarray:
    median, spread = location
    return (scores - median) / spread
