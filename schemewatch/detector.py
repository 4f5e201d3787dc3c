"""A dense autoencoder (Keras 3, TensorFlow backend) behind a small generic detector interface.

Works on any numeric matrix: `fit(X)`, `score(X)` (higher = more anomalous), `save(dir)`,
`load(dir)`. Thresholds are a separate decision, not made here.

How a row is scored:
1. robust scaling: (x - median) / IQR per feature (std, then 1, where the IQR is zero);
2. the autoencoder sees the scaled row clipped to the training rows' 0.5-99.5 percentiles, so a
   value beyond anything seen in training cannot be reconstructed, only approximated at the edge;
3. each feature's squared error against the *unclipped* scaled value is divided by that feature's
   typical training error (a winsorised mean), so features normally reconstructed well count more;
4. the score is the largest of these normalised errors: one feature far out of line is enough.
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
ERROR_WINSOR_QUANTILE = 0.999


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters; immutable, with defaults."""

    hidden: tuple[int, ...] = (32, 16)
    epochs: int = 5
    batch_size: int = 2048
    learning_rate: float = 2e-3
    seed: int = 0


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
        self.loss_history: list[float] = []

    def _scaled(self, matrix) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float32)
        return np.clip((matrix - self.center) / self.scale, -CLIP, CLIP).astype(np.float32)

    def _model_input(self, scaled: np.ndarray) -> np.ndarray:
        return np.clip(scaled, self.input_low, self.input_high).astype(np.float32)

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
        errors = self.contributions(matrix)
        cap = np.quantile(errors, ERROR_WINSOR_QUANTILE, axis=0)
        typical = np.minimum(errors, cap).mean(axis=0)
        self.error_scale = (np.maximum(typical, 0.01 * errors.mean(axis=0)) + 1e-6).astype(
            np.float32
        )
        return self

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
        """Per-feature normalised squared reconstruction error (rows x features)."""
        if self.model is None:
            raise RuntimeError("the detector has not been fitted or loaded")
        scaled = self._scaled(matrix)
        parts = []
        for start in range(0, len(scaled), SCORE_CHUNK):
            chunk = scaled[start : start + SCORE_CHUNK]
            # Calling the model directly is far faster than predict() on large batches.
            rebuilt = np.asarray(self.model(self._model_input(chunk), training=False))
            parts.append((chunk - rebuilt) ** 2 / self.error_scale)
        return np.concatenate(parts) if parts else np.zeros((0, len(self.center)), np.float32)

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
        config["hidden"] = tuple(config["hidden"])
        detector = cls(AutoencoderConfig(**config))
        detector.center = np.array(scaling["center"], dtype=np.float32)
        detector.scale = np.array(scaling["scale"], dtype=np.float32)
        detector.input_low = np.array(scaling["input_low"], dtype=np.float32)
        detector.input_high = np.array(scaling["input_high"], dtype=np.float32)
        detector.error_scale = np.array(scaling["error_scale"], dtype=np.float32)
        detector.loss_history = scaling["loss_history"]
        detector.model = keras.models.load_model(directory / MODEL_FILE)
        return detector
