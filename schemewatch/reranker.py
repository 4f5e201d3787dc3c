"""Learning from dispositions: a supervised re-ranker of the autoencoder's alerts.

Once auditors have closed enough alerts (MIN_LABELS, with both confirmed fraud and false
positives among them), training also fits a gradient-boosted classifier on the features (see
`classifier_input` for why not on the autoencoder's score too). Its labels are the auditors'
dispositions only, never the generator's ground truth: confirmed_fraud is 1, false_positive
is 0. Because dispositions exist only on top alerts (positive-unlabelled data), the negatives
are the false positives plus a seeded sample of rows the autoencoder itself calls normal (below
its alert threshold); the rest stays unlabelled.

The combined risk (`combined_score`, in [0, 1]) keeps the autoencoder in charge:
    p = the row's autoencoder percentile among the training rows
    below the gate (p < GATE):  combined = p                       (the classifier has no say)
    from the gate up:           combined = GATE + (1 - GATE) * (u + w * q * (1 - u))
        where u = (p - GATE) / (1 - GATE) and q = the classifier's probability of fraud.
So every row in the top (1 - GATE) of autoencoder scores ranks above every row below it, the
classifier only lifts rows within that band (towards the top by w * q of the remaining way; a
row it has no opinion on, q = 0, keeps its autoencoder rank), and for a fixed q the combined
risk never falls as the autoencoder score rises. Saved as reranker.joblib in the model
version's folder (joblib is pickle: load only models you trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemewatch import store

MIN_LABELS = 50
RERANKER_FILE = "reranker.joblib"
GATE_SHARE = 0.05  # the classifier reorders the top 5% of autoencoder scores
CLASSIFIER_WEIGHT = 1.0
BACKGROUND_ROWS = 10_000  # rows below the alert threshold taken as normal
TOP_SHARE = 0.01  # the model card counts how many of the top 1% alerts moved
GRID_POINTS = 2_001
LABEL_VALUES = {"confirmed_fraud": 1, "false_positive": 0}


@dataclass
class Reranker:
    """A fitted classifier and how its probability is combined with the autoencoder's score."""

    classifier: object
    score_grid: np.ndarray  # autoencoder score quantiles of the training rows
    gate_share: float = GATE_SHARE
    weight: float = CLASSIFIER_WEIGHT
    summary: dict = field(default_factory=dict)

    def percentile(self, ae_scores: np.ndarray) -> np.ndarray:
        """Each score's percentile (0-1) among the training rows' autoencoder scores."""
        levels = np.linspace(0.0, 1.0, len(self.score_grid))
        return np.interp(np.asarray(ae_scores, float), self.score_grid, levels)

    def probability(self, matrix: np.ndarray, ae_scores: np.ndarray) -> np.ndarray:
        """The classifier's probability that each row is a confirmed fraud."""
        return self.classifier.predict_proba(classifier_input(matrix, ae_scores))[:, 1]


def classifier_input(matrix: np.ndarray, ae_scores: np.ndarray) -> np.ndarray:
    """The classifier's input: the features alone.

    The autoencoder's score is left out on purpose: the labelled alerts are the most extreme
    rows, so with the score as a column the classifier learns "extreme means fraud", which the
    autoencoder already knows (bench_feedback, seed 1: no gain). On the features alone it learns
    what confirmed fraud looks like and lifts milder rows of the same kind.
    """
    return np.asarray(matrix, np.float32)


def combine(percentile: np.ndarray, probability: np.ndarray, gate_share: float, weight: float):
    """The documented combination (module docstring) of AE percentile and classifier probability."""
    gate = 1.0 - gate_share
    inside = percentile >= gate
    within = np.clip((percentile - gate) / gate_share, 0.0, 1.0)
    boosted = gate + gate_share * (within + weight * probability * (1.0 - within))
    return np.where(inside, boosted, percentile)


def combined_score(reranker: Reranker | None, matrix, ae_scores) -> np.ndarray:
    """Combined risk (0-1) of scored rows; the AE percentile alone when there is no re-ranker.

    Without a re-ranker the ordering is exactly the autoencoder's.
    """
    ae_scores = np.asarray(ae_scores, float)
    if reranker is None:
        return ae_scores
    percentile = reranker.percentile(ae_scores)
    probability = np.zeros(len(ae_scores))
    inside = percentile >= 1.0 - reranker.gate_share
    if inside.any():
        probability[inside] = reranker.probability(np.asarray(matrix)[inside], ae_scores[inside])
    return combine(percentile, probability, reranker.gate_share, reranker.weight)


def why_not_fitted(labels: np.ndarray) -> str | None:
    """Why these disposition labels are not enough to learn from (None if they are)."""
    if len(labels) < MIN_LABELS:
        return f"{len(labels)} dispositions; at least {MIN_LABELS} are needed"
    if labels.all() or not labels.any():
        return "the dispositions need both confirmed_fraud and false_positive"
    return None


def label_positions(conn, transaction_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in `transaction_ids`) of the rows auditors closed; their labels (1 = fraud)."""
    closed = store.auditor_labels(conn)
    if not closed:
        return np.zeros(0, np.int64), np.zeros(0, np.int8)
    ids = np.array([row[0] for row in closed], np.int64)
    values = np.array([LABEL_VALUES[row[1]] for row in closed], np.int8)
    order = np.argsort(transaction_ids, kind="stable")
    found = np.searchsorted(transaction_ids, ids, sorter=order)
    found = np.minimum(found, len(order) - 1)
    known = transaction_ids[order[found]] == ids
    return order[found[known]], values[known]


def background_positions(
    ae_scores: np.ndarray, threshold: float, exclude: np.ndarray, rows: int, seed: int
) -> np.ndarray:
    """A seeded sample of rows the autoencoder calls normal (below the threshold), unlabelled."""
    candidates = np.flatnonzero(np.asarray(ae_scores) <= threshold)
    candidates = np.setdiff1d(candidates, exclude)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(rows, len(candidates)), replace=False))


def fit(
    matrix: np.ndarray,
    ae_scores: np.ndarray,
    labels: np.ndarray,
    background: np.ndarray,
    all_scores: np.ndarray,
    *,
    seed: int = 0,
    gate_share: float = GATE_SHARE,
    weight: float = CLASSIFIER_WEIGHT,
) -> Reranker:
    """Fit the classifier on labelled rows (1/0) plus background rows (0, features given).

    `matrix`/`ae_scores` hold the labelled rows first, then the background rows; `all_scores`
    are every training row's autoencoder scores (for the percentile grid).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    target = np.concatenate([labels, np.zeros(len(background), np.int8)])
    classifier = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        class_weight="balanced",
        random_state=seed,
    ).fit(classifier_input(matrix, ae_scores), target)
    grid = np.quantile(np.asarray(all_scores, float), np.linspace(0.0, 1.0, GRID_POINTS))
    return Reranker(classifier, grid, gate_share, weight)


def fit_from_dispositions(
    conn,
    transaction_ids: np.ndarray,
    ae_scores: np.ndarray,
    rows_at,
    threshold: float,
    *,
    seed: int = 0,
    background_rows: int = BACKGROUND_ROWS,
    gate_share: float = GATE_SHARE,
    weight: float = CLASSIFIER_WEIGHT,
) -> tuple[Reranker | None, dict]:
    """A re-ranker learnt from the auditors' dispositions of these training rows, and its card.

    `rows_at(positions)` returns the feature matrix of the given (sorted) row positions. Returns
    (None, card) with the reason when the dispositions are too few or of one kind.
    """
    positions, labels = label_positions(conn, np.asarray(transaction_ids))
    card = {
        "labels": int(len(labels)),
        "confirmed_fraud": int(labels.sum()),
        "false_positive": int(len(labels) - labels.sum()),
        "source": "auditors' dispositions (never the generator's ground truth)",
    }
    reason = why_not_fitted(labels)
    if reason is not None:
        return None, {**card, "fitted": False, "reason": reason}
    background = background_positions(ae_scores, threshold, positions, background_rows, seed)
    chosen = np.concatenate([positions, background])
    order = np.argsort(chosen, kind="stable")
    fetched = rows_at(chosen[order])
    matrix = np.empty_like(fetched)
    matrix[order] = fetched
    reranker = fit(
        matrix,
        np.asarray(ae_scores)[chosen],
        labels,
        background,
        ae_scores,
        seed=seed,
        gate_share=gate_share,
        weight=weight,
    )
    card.update(
        fitted=True,
        background_rows=int(len(background)),
        gate_share=gate_share,
        classifier_weight=weight,
        combination=(
            "autoencoder percentile p; below 1 - gate_share it alone is the risk; above, "
            "gate + gate_share * (u + weight * q * (1 - u)), u = p's place within the band, "
            "q = the classifier's probability of confirmed fraud"
        ),
    )
    reranker.summary = card
    return reranker, card


def describe(card: dict) -> str:
    """One line on what the re-ranker learnt from, or why it was not fitted."""
    if not card.get("fitted"):
        return f"no re-ranker: {card['reason']}"
    return (
        f"re-ranker fitted on {card['confirmed_fraud']} confirmed fraud and "
        f"{card['false_positive']} false positive dispositions"
    )


def top_moves(ae_scores: np.ndarray, combined: np.ndarray, share: float = TOP_SHARE) -> dict:
    """How many of the top `share` alerts by the autoencoder left, and how many came in."""
    count = max(1, int(round(len(ae_scores) * share)))
    by_ae = set(np.argsort(-np.asarray(ae_scores), kind="stable")[:count].tolist())
    by_combined = set(np.argsort(-np.asarray(combined), kind="stable")[:count].tolist())
    return {
        "top_share": share,
        "top_alerts": count,
        "moved_in": len(by_combined - by_ae),
        "moved_out": len(by_ae - by_combined),
    }


def save(folder: Path, reranker: Reranker) -> None:
    """Write the re-ranker beside the autoencoder (joblib)."""
    import joblib

    joblib.dump(reranker, Path(folder) / RERANKER_FILE)


def load(folder: Path) -> Reranker | None:
    """The model version's re-ranker, or None if it has none."""
    path = Path(folder) / RERANKER_FILE
    if not path.exists():
        return None
    import joblib

    return joblib.load(path)
