"""A dense autoencoder (Keras 3, TensorFlow backend) behind a small generic detector interface.

Works on any numeric matrix: `fit(X)`, `score(X)` (higher = more anomalous), `save(dir)`,
`load(dir)`. Robust scaling (median and inter-quartile range) lives inside the detector.
Thresholds are a separate decision, not made here.
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
CLIP = 20.0


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters; immutable, with defaults."""

    hidden: tuple[int, ...] = (32, 8)
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
        self.loss_history: list[float] = []

    def _scaled(self, matrix) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float32)
        return np.clip((matrix - self.center) / self.scale, -CLIP, CLIP).astype(np.float32)

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
        keras.utils.set_random_seed(self.config.seed)
        self.model = self._build(matrix.shape[1])
        scaled = self._scaled(matrix)
        history = self.model.fit(
            scaled,
            scaled,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            shuffle=True,
            verbose=0,
        )
        self.loss_history = [float(v) for v in history.history["loss"]]
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
        """Per-feature squared reconstruction error (rows x features)."""
        if self.model is None:
            raise RuntimeError("the detector has not been fitted or loaded")
        scaled = self._scaled(matrix)
        parts = []
        for start in range(0, len(scaled), SCORE_CHUNK):
            chunk = scaled[start : start + SCORE_CHUNK]
            # Calling the model directly is far faster than predict() on large batches.
            rebuilt = np.asarray(self.model(chunk, training=False))
            parts.append((chunk - rebuilt) ** 2)
        return np.concatenate(parts) if parts else np.zeros((0, len(self.center)), np.float32)

    def score(self, matrix) -> np.ndarray:
        """Mean squared reconstruction error per row: higher means more anomalous."""
        return self.contributions(matrix).mean(axis=1)

    def save(self, directory: Path) -> None:
        """Write the model (native .keras) and its scaling to a folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)
        scaling = {
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
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
        detector.loss_history = scaling["loss_history"]
        detector.model = keras.models.load_model(directory / MODEL_FILE)
        return detector
