"""A dense autoencoder (Keras 3, TensorFlow backend) behind a small generic detector interface.

Works on any numeric matrix: `fit(X)`, `score(X)` (higher = more anomalous), `save(dir)`,
`load(dir)`. Thresholds are a separate decision, not made here.

How a row is scored:
1. robust scaling: (x - median) / IQR per feature (std, then 1, where the IQR is zero);
2. the autoencoder sees the scaled row clipped to the training rows' 0.5-99.5 percentiles, so a
   value beyond anything seen in training cannot be reconstructed, only approximated at the edge;
3. each feature's squared error against the *unclipped* scaled value is divided by that feature's
   typical training error, so features normally reconstructed well count more. "Typical" is the
   mean error of the training rows below the feature's 99.9th percentile (so the rare anomalies in
   the training data do not set the yardstick), never less than ERROR_FLOOR;
4. the score is the largest of these normalised errors: one feature far out of line is enough.

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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_FILE = "autoencoder.keras"
SCALING_FILE = "scaling.json"
SCORE_CHUNK = 65_536
CLIP = 1_000.0
INPUT_PERCENTILES = (0.5, 99.5)
TYPICAL_ERROR_QUANTILE = 0.999
ERROR_FLOOR = 0.01
MIN_SEGMENT_ROWS = 20_000


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters; immutable, with defaults."""

    hidden: tuple[int, ...] = (32, 16)
    epochs: int = 5
    batch_size: int = 2048
    learning_rate: float = 2e-3
    seed: int = 0
    context_columns: tuple[int, ...] = ()
    segment_columns: tuple[int, ...] = ()


class AutoencoderDetector:
    """Reconstruction-error anomaly detector."""

    def __init__(self, config: AutoencoderConfig | None = None):
        self.config = config or AutoencoderConfig()
        self.model = None
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.input_low: np.ndarray | None = None
        self.input_high: np.ndarray | None = None
        self.error_scale: np.ndarray | None = None
        self.segment_error_scale: dict[int, np.ndarray] = {}
        self.loss_history: list[float] = []

    def _scaled(self, matrix) -> np.ndarray:
        """A new row-major float32 array, robustly scaled (the input is left alone)."""
        scaled = np.array(matrix, dtype=np.float32, order="C")
        scaled -= self.center
        scaled /= self.scale
        return np.clip(scaled, -CLIP, CLIP, out=scaled)

    def _model_input(self, scaled: np.ndarray) -> np.ndarray:
        return np.clip(scaled, self.input_low, self.input_high).astype(np.float32, copy=False)

    def fit(self, matrix) -> AutoencoderDetector:
        """Learn what normal rows look like (the input is not modified)."""
        import keras

        matrix = np.asarray(matrix, dtype=np.float32)
        self.center = np.median(matrix, axis=0)
        q75, q25 = np.percentile(matrix, [75, 25], axis=0)
        spread = q75 - q25
        fallback = matrix.std(axis=0)
        self.scale = np.where(spread > 1e-6, spread, np.where(fallback > 1e-6, fallback, 1.0))
        self.scale = self.scale.astype(np.float32)
        scaled = self._scaled(matrix)
        low, high = np.percentile(scaled, INPUT_PERCENTILES, axis=0)
        self.input_low, self.input_high = low.astype(np.float32), high.astype(np.float32)
        inputs = self._model_input(scaled)
        keras.utils.set_random_seed(self.config.seed)
        self.model = self._build(matrix.shape[1])
        history = self.model.fit(
            inputs,
            inputs,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            shuffle=True,
            verbose=0,
        )
        self.loss_history = [float(v) for v in history.history["loss"]]
        self.error_scale = np.ones(matrix.shape[1], np.float32)
        self.segment_error_scale = {}
        errors = self.contributions(matrix)
        self.error_scale = _typical_error(errors)
        segments = self.segments(matrix)
        for segment in np.unique(segments):
            rows = segments == segment
            if segment >= 0 and rows.sum() >= MIN_SEGMENT_ROWS:
                self.segment_error_scale[int(segment)] = _typical_error(errors[rows])
        return self

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

    def _build(self, width: int):
        import keras

        inputs = keras.Input(shape=(width,))
        layer = inputs
        for units in self.config.hidden:
            layer = keras.layers.Dense(units, activation="relu")(layer)
        for units in reversed(self.config.hidden[:-1]):
            layer = keras.layers.Dense(units, activation="relu")(layer)
        outputs = keras.layers.Dense(width)(layer)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), loss="mse")
        return model

    def contributions(self, matrix) -> np.ndarray:
        """Per-feature normalised squared reconstruction error (rows x features).

        Context columns contribute zero.
        """
        if self.model is None:
            raise RuntimeError("the detector has not been fitted or loaded")
        matrix = np.asarray(matrix, dtype=np.float32).reshape(-1, len(self.center))
        segments = self.segments(matrix)
        out = np.empty(matrix.shape, np.float32)
        for start in range(0, len(matrix), SCORE_CHUNK):
            rows = slice(start, start + SCORE_CHUNK)
            error = self._scaled(matrix[rows])
            # Calling the model directly is far faster than predict() on large batches.
            error -= np.asarray(self.model(self._model_input(error), training=False))
            np.square(error, out=error)
            np.divide(error, self._error_scales(segments[rows]), out=out[rows])
        out[:, list(self.config.context_columns)] = 0.0
        return out

    def score(self, matrix) -> np.ndarray:
        """The largest normalised feature error per row: higher means more anomalous."""
        return self.contributions(matrix).max(axis=1)

    def save(self, directory: Path) -> None:
        """Write the model (native .keras) and its scaling to a folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)
        scaling = {
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "input_low": self.input_low.tolist(),
            "input_high": self.input_high.tolist(),
            "error_scale": self.error_scale.tolist(),
            "segment_error_scale": {
                str(k): v.tolist() for k, v in self.segment_error_scale.items()
            },
            "config": asdict(self.config),
            "loss_history": self.loss_history,
        }
        (directory / SCALING_FILE).write_text(json.dumps(scaling, indent=2))

    @classmethod
    def load(cls, directory: Path) -> AutoencoderDetector:
        """Read a detector written by `save`."""
        import keras

        directory = Path(directory)
        scaling = json.loads((directory / SCALING_FILE).read_text())
        config = scaling["config"]
        for key in ("hidden", "context_columns", "segment_columns"):
            config[key] = tuple(config.get(key, ()))
        detector = cls(AutoencoderConfig(**config))
        detector.center = np.array(scaling["center"], dtype=np.float32)
        detector.scale = np.array(scaling["scale"], dtype=np.float32)
        detector.input_low = np.array(scaling["input_low"], dtype=np.float32)
        detector.input_high = np.array(scaling["input_high"], dtype=np.float32)
        detector.error_scale = np.array(scaling["error_scale"], dtype=np.float32)
        detector.segment_error_scale = {
            int(k): np.array(v, dtype=np.float32)
            for k, v in scaling.get("segment_error_scale", {}).items()
        }
        detector.loss_history = scaling["loss_history"]
        detector.model = keras.models.load_model(directory / MODEL_FILE)
        return detector


def _typical_error(errors: np.ndarray) -> np.ndarray:
    """Per column: mean squared error of the rows below the TYPICAL_ERROR_QUANTILE, floored."""
    cap = np.quantile(errors, TYPICAL_ERROR_QUANTILE, axis=0)
    below = errors <= cap
    typical = np.where(below, errors, 0).sum(axis=0) / np.maximum(below.sum(axis=0), 1)
    return np.maximum(typical, ERROR_FLOOR).astype(np.float32)
