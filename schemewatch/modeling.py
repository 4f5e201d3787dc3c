"""Training, model artifacts (versioned folders with a JSON model card) and loading them safely.

Layout of the model directory:
    modeling/current.json              {"version": "..."}: the model the monitor uses
    modeling/<version>/autoencoder.keras
    modeling/<version>/scaling.json
    modeling/<version>/model_card.json
Training never reads the ground-truth labels.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import features, store
from schemewatch.detector import AutoencoderConfig, AutoencoderDetector
from schemewatch.errors import ModelError

CURRENT_FILE = "current.json"
CARD_FILE = "model_card.json"
DEFAULT_ALERT_BUDGET = 0.01
MIN_ROWS_FOR_RANGES = 1_000  # a scheme's own 1st-99th percentile range needs this many rows
CARD_VERSION = 1


@dataclass
class LoadedModel:
    """A detector with its model card (threshold, feature list, normal ranges)."""

    version: str
    detector: AutoencoderDetector
    card: dict

    folder: Path | None = None

    @property
    def threshold(self) -> float:
        """The alert threshold: an admin's override if one was set, else the calibrated one."""
        override = read_threshold_override(self.folder) if self.folder else None
        return float(self.card["threshold"] if override is None else override["threshold"])


def load_registry(conn, beneficiary_ids=None) -> features.Registry:
    """Registry context for all beneficiaries, or only those given."""
    context = pd.DataFrame(
        store.registry_context(conn, beneficiary_ids), columns=list(features.REGISTRY_COLUMNS)
    )
    rights = pd.DataFrame(
        store.entitlements(conn, beneficiary_ids),
        columns=["beneficiary_id", "scheme", "entitlement"],
    )
    return features.build_registry(context, rights)


def feature_matrix(db_path: Path, conn) -> tuple[pd.DataFrame, np.ndarray]:
    """Every stored transaction and its features (batch mode)."""
    transactions = store.transactions_for_scoring(db_path, 0)
    return transactions, features.compute_features(transactions, load_registry(conn))


def with_column_roles(config: AutoencoderConfig) -> AutoencoderConfig:
    """Our features' roles: channel and scheme are context; the scheme is the segment."""
    names = features.FEATURE_NAMES
    return replace(
        config,
        context_columns=tuple(names.index(n) for n in features.CONTEXT_FEATURES),
        segment_columns=tuple(names.index(n) for n in features.SEGMENT_FEATURES),
    )


def _rows_by_scheme(transactions: pd.DataFrame) -> dict[str, np.ndarray]:
    scheme = transactions["scheme"].to_numpy()
    return {name: scheme == name for name in pd.unique(scheme)}


def calibrate_threshold(scores: np.ndarray, alert_budget: float) -> float:
    """The score above which `alert_budget` of the rows lie."""
    if not 0 < alert_budget < 1:
        raise ModelError("the alert budget must be between 0 and 1 (e.g. 0.01 for 1%)")
    return float(np.quantile(scores, 1 - alert_budget))


def normal_ranges(matrix: np.ndarray) -> dict[str, list[float]]:
    """1st and 99th percentile of each feature on the training rows."""
    low, high = np.percentile(matrix, [1, 99], axis=0)
    return {
        name: [float(lo), float(hi)]
        for name, lo, hi in zip(features.FEATURE_NAMES, low, high, strict=True)
    }


def train(
    db_path: Path,
    model_dir: Path,
    *,
    alert_budget: float = DEFAULT_ALERT_BUDGET,
    config: AutoencoderConfig | None = None,
    progress=None,
) -> dict:
    """Train on every stored transaction, calibrate the threshold, save; returns the model card."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    conn = store.open_database(db_path)
    say("reading transactions and computing features")
    transactions, matrix = feature_matrix(db_path, conn)
    conn.close()
    if len(transactions) < 100:
        raise ModelError(
            f"only {len(transactions)} transactions stored; need at least 100 to train"
        )
    config = with_column_roles(config or AutoencoderConfig())
    say(f"training the autoencoder on {len(matrix):,} rows x {matrix.shape[1]} features")
    detector = AutoencoderDetector(config).fit(matrix)
    scores = detector.score(matrix)
    threshold = calibrate_threshold(scores, alert_budget)
    version = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    card = {
        "card_version": CARD_VERSION,
        "version": version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": int(len(matrix)),
        "last_transaction_id": int(transactions["transaction_id"].max()),
        "features": list(features.FEATURE_NAMES),
        "scaling": {
            "center": detector.center.tolist(),
            "scale": detector.scale.tolist(),
            "input_low": detector.input_low.tolist(),
            "input_high": detector.input_high.tolist(),
            "error_scale": detector.error_scale.tolist(),
        },
        "threshold": threshold,
        "alert_budget": alert_budget,
        "training_loss": detector.loss_history,
        "config": {**config.__dict__, "hidden": list(config.hidden)},
        "normal_ranges": normal_ranges(matrix),
        "normal_ranges_by_scheme": {
            scheme: normal_ranges(matrix[rows])
            for scheme, rows in _rows_by_scheme(transactions).items()
            if rows.sum() >= MIN_ROWS_FOR_RANGES
        },
        "risk_knots": risk_knots(scores, threshold, alert_budget),
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    save(model_dir, detector, card)
    say(f"saved model {version} (threshold {threshold:.4f}) in {model_dir}")
    return card


def risk_knots(scores: np.ndarray, threshold: float, alert_budget: float) -> dict:
    """What the 0-100 risk mapping needs, saved in the model card (see schemewatch.risk)."""
    from schemewatch import risk

    return risk.knots(scores, threshold, alert_budget)


def save(model_dir: Path, detector: AutoencoderDetector, card: dict) -> None:
    """Write the versioned artifacts, then switch current.json to them atomically."""
    folder = Path(model_dir) / card["version"]
    detector.save(folder)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2))
    pointer = Path(model_dir) / CURRENT_FILE
    temporary = pointer.with_suffix(".tmp")
    temporary.write_text(json.dumps({"version": card["version"]}))
    os.replace(temporary, pointer)


def current_version(model_dir: Path) -> str:
    """The version current.json points to; a clear error when there is no trained model."""
    pointer = Path(model_dir) / CURRENT_FILE
    try:
        return json.loads(pointer.read_text())["version"]
    except FileNotFoundError:
        raise ModelError(f"no trained model in {model_dir}/; run train.py first") from None
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{pointer} is damaged ({exc}); run train.py again") from None


def why_train(model_dir: Path) -> str | None:
    """Why a model must be trained before scoring (None if the current one can be used)."""
    if not (Path(model_dir) / CURRENT_FILE).exists():
        return f"there is no trained model in {model_dir}/ yet"
    try:
        version = current_version(model_dir)
        _check_features(version, load_model_card(model_dir, version))
    except ModelError as exc:
        return str(exc)
    return None


def _check_features(version: str, card: dict) -> None:
    if card.get("features") != list(features.FEATURE_NAMES):
        raise ModelError(
            f"model {version} was trained on a different feature list than this Schemewatch "
            f"computes ({len(card.get('features') or [])} vs {len(features.FEATURE_NAMES)} "
            "features); retrain with train.py"
        )


def load_model(model_dir: Path, version: str | None = None) -> LoadedModel:
    """Load a model, refusing artifacts whose feature list differs from this code's."""
    version = version or current_version(model_dir)
    folder = Path(model_dir) / version
    card = load_model_card(model_dir, version)
    _check_features(version, card)
    try:
        detector = AutoencoderDetector.load(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {version}: {exc}") from None
    return LoadedModel(version, detector, card, folder)


THRESHOLD_FILE = "threshold.json"


def read_threshold_override(folder: Path) -> dict | None:
    """The admin-set threshold of a model version, if any."""
    try:
        return json.loads((Path(folder) / THRESHOLD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def set_threshold(model_dir: Path, version: str, threshold: float, user: str) -> float:
    """Save an admin's alert threshold for a model version (used for rows scored from now on).

    Returns the previous threshold.
    """
    if not threshold > 0:
        raise ModelError("the alert threshold must be a positive number")
    folder = Path(model_dir) / version
    previous = load_model_card(model_dir, version)["threshold"]
    override = read_threshold_override(folder)
    if override is not None:
        previous = override["threshold"]
    temporary = folder / (THRESHOLD_FILE + ".tmp")
    temporary.write_text(
        json.dumps(
            {
                "threshold": float(threshold),
                "set_by": user,
                "set_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    )
    os.replace(temporary, folder / THRESHOLD_FILE)
    return float(previous)


def load_model_card(model_dir: Path, version: str) -> dict:
    """A model version's card."""
    try:
        return json.loads((Path(model_dir) / version / CARD_FILE).read_text())
    except FileNotFoundError:
        raise ModelError(f"model {version} is missing its model card in {model_dir}") from None
