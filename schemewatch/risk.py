"""A 0-100 risk figure auditors can read, next to the detector's raw score.

The raw score (a reconstruction error divided by its typical size) runs from about 0 to the
hundreds of thousands and means nothing to an auditor. Risk places a score among the training
payments' scores instead:
- the model's calibrated threshold is always **risk 90** (`THRESHOLD_RISK`);
- below it, risk is the score's percentile among training payments, stretched so that the
  threshold's percentile (1 - alert budget, e.g. 99%) lands on 90: a median payment is risk ~45;
- above it, risk climbs from 90 to 99 through the training alerts' own percentiles (the highest
  training score is 99) and reaches 100 at ten times the highest training score;
- between saved knots it is piecewise-linear in log-score, so it is monotonic and bounded 0-100.
The knots are saved in the model card (`risk_knots`) by `modeling.train`. An admin's threshold
override moves the alert line but not the mapping: risk stays relative to the calibrated threshold.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_RISK = 90.0
TOP_TRAINING_RISK = 99.0
# Percentiles (of training scores) saved as knots below and above the threshold.
_BELOW = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
_ABOVE = np.linspace(0.0, 1.0, 10)  # shares of the way from the threshold to the top score
_FLOOR = 1e-12  # scores are >= 0; log needs a floor


def knots(training_scores: np.ndarray, threshold: float, alert_budget: float) -> dict:
    """The mapping's knots, (log-score, risk) pairs, to save with the model."""
    scores = np.sort(np.asarray(training_scores, float))
    normal_share = 1.0 - alert_budget
    below = _BELOW[_BELOW < normal_share]
    above = normal_share + _ABOVE * alert_budget
    below_scores = np.quantile(scores, below)
    above_scores = np.append(np.quantile(scores, above[1:]), max(scores[-1], threshold) * 10.0)
    above_risks = np.append(
        THRESHOLD_RISK + (TOP_TRAINING_RISK - THRESHOLD_RISK) * _ABOVE[1:], 100.0
    )
    # The threshold is the fixed point: knots on the wrong side of it (ties, or a threshold
    # that is not the budget's quantile, e.g. a hand-set one) are dropped.
    keep_below = below_scores < threshold
    keep_above = above_scores > threshold
    x = np.concatenate([below_scores[keep_below], [threshold], above_scores[keep_above]])
    y = np.concatenate(
        [
            (THRESHOLD_RISK * below / normal_share)[keep_below],
            [THRESHOLD_RISK],
            above_risks[keep_above],
        ]
    )
    log_x = np.log(np.maximum(x, _FLOOR))
    # Knots must rise strictly in score: of tied scores keep the first (lowest risk below the
    # threshold; the threshold itself wins over the alerts' knots above it).
    keep_x, keep_y = [], []
    for lx, ry in zip(log_x, y, strict=True):
        if keep_x and lx <= keep_x[-1]:
            continue
        keep_x.append(float(lx))
        keep_y.append(float(ry))
    return {"log_score": keep_x, "risk": keep_y, "threshold_risk": THRESHOLD_RISK}


def risk(scores, saved: dict | None) -> np.ndarray:
    """Risk 0-100 for raw scores; NaN when the model has no saved knots (older models)."""
    scores = np.asarray(scores, float)
    if not saved:
        return np.full(scores.shape, np.nan)
    log_scores = np.log(np.maximum(scores, _FLOOR))
    return np.clip(np.interp(log_scores, saved["log_score"], saved["risk"]), 0.0, 100.0)


def times_normal(contribution: float) -> float:
    """How many times the normal deviation a feature is off (contributions are squared ratios)."""
    return float(np.sqrt(max(contribution, 0.0)))
