"""Evaluate detectors against the generator's ground truth (evaluation only, never training).

Compares, on the same rows: the trained autoencoder at its saved threshold, an Isolation Forest on
the same features, and the autoencoder on the earlier prototype's basic features.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from schemewatch import modeling, schemes, store
from schemewatch.detector import AutoencoderDetector
from schemewatch.errors import SchemewatchError

BUDGETS = (0.005, 0.01, 0.02)
BASIC_FEATURES = ("amount", "log_amount", "hour", "weekday", "latitude", "longitude")


class EvaluationError(SchemewatchError):
    """Evaluation needs ground truth that is not there."""


def basic_features(transactions: pd.DataFrame) -> np.ndarray:
    """The earlier prototype's features: amount, log amount, hour, weekday, latitude, longitude."""
    paid_at = transactions["paid_at"].to_numpy(np.int64)
    amount = transactions["amount"].to_numpy(float)
    return np.column_stack(
        [
            amount,
            np.log1p(amount),
            schemes.local_hours(paid_at),
            (((paid_at + schemes.IST_OFFSET_SECONDS) // schemes.DAY) + 3) % 7,
            transactions["latitude"].to_numpy(float),
            transactions["longitude"].to_numpy(float),
        ]
    ).astype(np.float32)


def metrics(scores: np.ndarray, threshold: float, labels: np.ndarray, typology: np.ndarray) -> dict:
    """Precision/recall/F1 at the threshold, PR-AUC, ROC-AUC, recall at budgets, per typology."""
    flagged = scores > threshold
    true_positives = int((flagged & labels).sum())
    precision = true_positives / max(int(flagged.sum()), 1)
    recall = true_positives / max(int(labels.sum()), 1)
    at_budget = {}
    for budget in BUDGETS:
        cut = np.quantile(scores, 1 - budget)
        at_budget[str(budget)] = float((scores[labels] > cut).mean()) if labels.any() else 0.0
    one_percent = np.quantile(scores, 0.99)
    per_typology = {
        name: {
            "count": int((typology == name).sum()),
            "recall_at_1pct": float((scores[typology == name] > one_percent).mean()),
        }
        for name in sorted(set(typology[labels].tolist()))
    }
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "pr_auc": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "recall_at_budget": at_budget,
        "per_typology": per_typology,
    }


REPORT_FILE = "evaluation.json"


def report_path(model_dir: Path, version: str) -> Path:
    """Where a model's evaluation is saved, beside the model (the Model page shows it)."""
    return Path(model_dir) / version / REPORT_FILE


def why_not_evaluate(db_path: Path, model_dir: Path) -> str | None:
    """Why an evaluation is not needed or not possible now (None if it should run)."""
    version = modeling.current_version(model_dir)
    if report_path(model_dir, version).exists():
        return f"the evaluation of model {version} is already saved"
    if len(store.ground_truth_frame(db_path)) == 0:
        return "this database has no ground-truth labels to evaluate against"
    return None


def evaluate(db_path: Path, model_dir: Path, *, progress=None) -> dict:
    """Figures for the autoencoder and both baselines on every stored transaction."""
    say = progress or (lambda message: None)
    conn = store.open_database(db_path)
    truth = store.ground_truth_frame(db_path)
    if len(truth) == 0:
        raise EvaluationError("this database has no ground-truth labels to evaluate against")
    model = modeling.load_model(model_dir)
    say("computing features")
    transactions, matrix = modeling.feature_matrix(db_path, conn)
    conn.close()
    typology = (
        transactions[["transaction_id"]].merge(truth, how="left")["typology"].fillna("").to_numpy()
    )
    labels = typology != ""
    budget = float(model.card.get("alert_budget", modeling.DEFAULT_ALERT_BUDGET))
    results = {}
    say("scoring with the autoencoder")
    results["autoencoder"] = metrics(
        model.detector.score(matrix), model.threshold, labels, typology
    )
    say("fitting the Isolation Forest baseline")
    forest = IsolationForest(n_estimators=100, random_state=0, n_jobs=-1).fit(matrix)
    forest_scores = -forest.score_samples(matrix)
    results["isolation_forest"] = metrics(
        forest_scores, modeling.calibrate_threshold(forest_scores, budget), labels, typology
    )
    say("fitting the autoencoder on the basic features")
    basic = basic_features(transactions)
    # The prototype's detector: the autoencoder alone, scored by its largest feature error.
    plain = replace(
        model.detector.config,
        context_columns=(),
        segment_columns=(),
        aggregation="max",
        isolation_forest=False,
    )
    basic_scores = AutoencoderDetector(plain).fit(basic).score(basic)
    results["autoencoder_basic_features"] = metrics(
        basic_scores, modeling.calibrate_threshold(basic_scores, budget), labels, typology
    )
    report = {"models": results, "rows": int(len(transactions)), "model_version": model.version}
    report_path(model_dir, model.version).write_text(json.dumps(report, indent=2))
    return report


def format_table(report: dict) -> str:
    """The evaluation as a plain-text table."""
    models = report["models"]
    names = list(models)
    lines = [f"{'':34}" + "".join(f"{n[:26]:>28}" for n in names)]
    for key in ("precision", "recall", "f1", "pr_auc", "roc_auc"):
        lines.append(f"{key:34}" + "".join(f"{models[n][key]:>28.3f}" for n in names))
    for budget in BUDGETS:
        label = f"recall at {budget:.1%} budget"
        lines.append(
            f"{label:34}"
            + "".join(f"{models[n]['recall_at_budget'][str(budget)]:>28.3f}" for n in names)
        )
    for typology in models[names[0]]["per_typology"]:
        count = models[names[0]]["per_typology"][typology]["count"]
        label = f"{typology} ({count}) recall@1%"
        lines.append(
            f"{label:34}"
            + "".join(
                f"{models[n]['per_typology'].get(typology, {}).get('recall_at_1pct', 0):>28.3f}"
                for n in names
            )
        )
    return "\n".join(lines)


CURVE_TOP_SHARE = 0.1  # the curve's thresholds lie within the top tenth of the scores


def threshold_curve_of(
    scores: np.ndarray, fraud_scores: np.ndarray, points: int = 30
) -> list[tuple]:
    """(threshold, alerts, precision, recall) over thresholds spread across the top of the
    range, from every score and the scores of the rows labelled fraud (the Model page at 10
    million rows reads the scores alone, and the labels' side for the frauds)."""
    total = len(scores)
    if total == 0:
        return []
    top = min(total, int(CURVE_TOP_SHARE * total) + 1)  # every threshold is among these
    highest = np.sort(np.partition(scores, total - top)[total - top :])[::-1]
    frauds = np.sort(np.asarray(fraud_scores, float))
    positives = max(len(frauds), 1)
    curve = []
    for share in np.geomspace(0.0005, CURVE_TOP_SHARE, points):
        threshold = float(highest[min(int(share * total), total - 1)])
        flagged = int(np.searchsorted(-highest, -threshold, side="left"))  # scores above it
        hits = len(frauds) - int(np.searchsorted(frauds, threshold, side="right"))
        curve.append((threshold, flagged, hits / max(flagged, 1), hits / positives))
    return curve
