"""Training, model artifacts (versioned folders with a JSON model card) and loading them safely.

Layout of the model directory:
    modeling/current.json              {"version": "..."}: the model the monitor uses
    modeling/<version>/autoencoder.keras  (the trained Keras model)
    modeling/<version>/layers.npz         (its weights, which scoring runs with NumPy)
    modeling/<version>/scaling.json
    modeling/<version>/model_card.json
    modeling/<version>/reranker.joblib   (only once auditors' dispositions allow one)
Training never reads the ground-truth labels.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import enrolment_counts, features, history, reranker, schemes, store
from schemewatch.detector import AutoencoderConfig, AutoencoderDetector
from schemewatch.errors import ModelError
from schemewatch.freed_memory import give_back_freed_memory

CURRENT_FILE = "current.json"
CARD_FILE = "model_card.json"
DEFAULT_ALERT_BUDGET = 0.01
MIN_ROWS_FOR_RANGES = 1_000  # a scheme's own 1st-99th percentile range needs this many rows
CARD_VERSION = 1
# The detector is fitted on at most this many rows (a seeded sample, stratified by scheme and
# month); normal ranges and the threshold still come from every row.
TRAINING_SAMPLE_ROWS = 2_000_000
SAMPLE_MARGIN = 1.1  # candidates kept while streaming, relative to the sample share


@dataclass
class LoadedModel:
    """A detector with its model card (threshold, feature list, normal ranges)."""

    version: str
    detector: AutoencoderDetector
    card: dict

    folder: Path | None = None
    reranker: reranker.Reranker | None = None  # learnt from auditors' dispositions, if any

    @property
    def threshold(self) -> float:
        """The alert threshold: an admin's override if one was set, else the calibrated one."""
        override = read_threshold_override(self.folder) if self.folder else None
        return float(self.card["threshold"] if override is None else override["threshold"])


def load_registry(conn, beneficiary_ids=None) -> features.Registry:
    """Registry context for all beneficiaries, or only those given.

    For all of them the counts are computed from one read of the registry (enrolment_counts);
    for a few, the store counts them per beneficiary: the same values either way.
    """
    if beneficiary_ids is None:
        entitlements = store.start_all_entitlements_read(conn)  # read while the rest is done
        records = store.beneficiary_records(conn)
        context = pd.concat([records, enrolment_counts.registry_counts(records)], axis=1)
        return features.build_registry(context[list(features.REGISTRY_COLUMNS)], entitlements())
    context = pd.DataFrame(
        store.registry_context(conn, beneficiary_ids), columns=list(features.REGISTRY_COLUMNS)
    )
    rights = pd.DataFrame(
        store.entitlements(conn, beneficiary_ids), columns=list(store.ENTITLEMENT_COLUMNS)
    )
    return features.build_registry(context, rights)


def feature_matrix(db_path: Path, conn) -> tuple[pd.DataFrame, np.ndarray]:
    """Every stored transaction and its features (computed in chunks: the same values)."""
    registry = load_registry(conn)
    chunks = list(history.feature_chunks(db_path, conn, registry))
    if not chunks:
        empty = store.transactions_for_scoring(db_path, 0)
        return empty, features.compute_features(empty, registry)
    transactions = pd.concat([rows for rows, _ in chunks], ignore_index=True)
    return transactions, np.concatenate([matrix for _, matrix in chunks])


def with_column_roles(config: AutoencoderConfig) -> AutoencoderConfig:
    """Our features' roles: channel and scheme are context; the scheme is the segment."""
    names = features.FEATURE_NAMES
    return replace(
        config,
        context_columns=tuple(names.index(n) for n in features.CONTEXT_FEATURES),
        segment_columns=tuple(names.index(n) for n in features.SEGMENT_FEATURES),
    )


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


def sample_keys(transaction_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per transaction, fixed by its id and the seed (splitmix64).

    The sample then does not depend on how the rows were chunked.
    """
    with np.errstate(over="ignore"):
        x = transaction_ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def scheme_codes(rows: pd.DataFrame) -> np.ndarray:
    """Each row's scheme as its index in schemes.SCHEME_CODES (-1 if unknown)."""
    return pd.Categorical(rows["scheme"], categories=schemes.SCHEME_CODES).codes.astype(np.int8)


def strata(rows: pd.DataFrame) -> np.ndarray:
    """Each row's (scheme, IST month) as one integer: the strata of the training sample."""
    days = (rows["paid_at"].to_numpy(np.int64) + schemes.IST_OFFSET_SECONDS) // schemes.DAY
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return (scheme_codes(rows).astype(np.int64) + 1) * 1_000_000 + months


class _Spill:
    """Feature chunks written to a temporary file (column-major), read back chunk or column."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(dir=folder, prefix="features-")
        self.sizes: list[int] = []
        self.width = len(features.FEATURE_NAMES)

    def append(self, matrix: np.ndarray) -> None:
        self.file.write(np.asarray(matrix, np.float32).tobytes(order="F"))
        self.sizes.append(len(matrix))

    def _start(self, index: int) -> int:
        return sum(self.sizes[:index]) * self.width * 4

    def chunks(self):
        """Each chunk's matrix, in order."""
        for index, size in enumerate(self.sizes):
            self.file.seek(self._start(index))
            flat = np.fromfile(self.file, np.float32, size * self.width)
            yield flat.reshape((size, self.width), order="F")

    def column(self, column: int) -> np.ndarray:
        """One feature over all rows."""
        parts = []
        for index, size in enumerate(self.sizes):
            self.file.seek(self._start(index) + column * size * 4)
            parts.append(np.fromfile(self.file, np.float32, size))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The rows at the given sorted positions, read into one array."""
        taken = np.empty((len(positions), self.width), np.float32)
        start = 0
        for matrix in self.chunks():
            low, high = np.searchsorted(positions, [start, start + len(matrix)])
            taken[low:high] = matrix[positions[low:high] - start]
            start += len(matrix)
        return taken

    def close(self) -> None:
        self.file.close()


def _stratified_sample(candidates: dict, counts: dict, share: float) -> np.ndarray:
    """Per stratum, the round(count x share) candidates with the smallest keys (positions)."""
    keys, stratum = candidates["key"], candidates["stratum"]
    order = np.lexsort((keys, stratum))
    chosen = []
    names, first = np.unique(stratum[order], return_index=True)
    bounds = [*first.tolist(), len(order)]
    for index, name in enumerate(names.tolist()):
        quota = round(counts[name] * share)
        chosen.append(order[bounds[index] : bounds[index + 1]][:quota])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def train(
    db_path: Path,
    model_dir: Path,
    *,
    alert_budget: float = DEFAULT_ALERT_BUDGET,
    config: AutoencoderConfig | None = None,
    sample_rows: int = TRAINING_SAMPLE_ROWS,
    progress=None,
) -> dict:
    """Train on a bounded sample of the stored transactions, calibrate on all; save; the card.

    One streaming pass computes features chunk by chunk (the monitor's chunked path), keeps the
    candidates of a seeded sample stratified by scheme and IST month (at most `sample_rows`,
    each stratum in proportion to its rows) and spills every chunk's features to a temporary
    file. The detector is fitted on the sample; then every row is scored from the spill for
    the threshold, and each feature's normal range (exact 1st-99th percentiles, over all rows
    and per scheme) is computed one column at a time.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    config = with_column_roles(config or AutoencoderConfig())
    conn = store.open_database(db_path)
    total = store.count_rows(conn, store.TRANSACTIONS)
    if total < 100:
        conn.close()
        raise ModelError(f"only {total} transactions stored; need at least 100 to train")
    share = min(1.0, sample_rows / total)
    say(f"computing features of {total:,} transactions in chunks")
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    spill = _Spill(Path(model_dir))
    try:
        registry = load_registry(conn)
        rate = min(1.0, share * SAMPLE_MARGIN)
        # Only the candidates' positions are kept while streaming; the chosen rows are read back
        # from the spill afterwards (holding their features meanwhile cost ~430 MB at 10M rows,
        # on top of the feature pass's own peak).
        positions, keys, strata_seen, scheme_parts, id_parts = [], [], [], [], []
        counts: dict[int, int] = {}
        last_id = offset = 0
        for rows, matrix in history.feature_chunks(db_path, conn, registry):
            spill.append(matrix)
            stratum = strata(rows)
            names, sizes = np.unique(stratum, return_counts=True)
            for name, size in zip(names.tolist(), sizes.tolist(), strict=True):
                counts[name] = counts.get(name, 0) + size
            key = sample_keys(rows["transaction_id"].to_numpy(), config.seed)
            candidate = np.flatnonzero(key < rate)
            positions.append(candidate + offset)
            keys.append(key[candidate])
            strata_seen.append(stratum[candidate])
            scheme_parts.append(scheme_codes(rows))
            id_parts.append(rows["transaction_id"].to_numpy(np.int64))
            last_id = int(rows["transaction_id"].max())
            offset += len(rows)
            del rows, matrix
        conn.close()
        del registry
        candidates = {"key": np.concatenate(keys), "stratum": np.concatenate(strata_seen)}
        del keys, strata_seen
        chosen = _stratified_sample(candidates, counts, share)
        del candidates
        # Give freed buffers back before the sample and the fit need the room.
        give_back_freed_memory()
        sample = spill.rows(np.concatenate(positions)[chosen])
        del positions
        say(f"training the autoencoder on {len(sample):,} of {total:,} rows")
        detector = AutoencoderDetector(config).fit(sample)
        del sample
        say("scoring every row for the threshold")
        scores = np.concatenate([detector.score(m).astype(np.float32) for m in spill.chunks()])
        threshold = calibrate_threshold(scores, alert_budget)
        feedback, feedback_card = learn_from_dispositions(
            db_path, np.concatenate(id_parts), scores, spill, threshold, config.seed
        )
        say(reranker.describe(feedback_card))
        say("normal ranges over every row")
        scheme = np.concatenate(scheme_parts)
        ranges, by_scheme = _streamed_ranges(spill, scheme)
    finally:
        spill.close()
    version = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    card = {
        "card_version": CARD_VERSION,
        "version": version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": int(total),
        "rows_fitted": int(len(chosen)),
        "sample": (
            "every row"
            if share >= 1
            else f"seeded sample of {share:.2%} of each "
            "(scheme, IST month), by a hash of the transaction id and the seed"
        ),
        "last_transaction_id": last_id,
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
        "normal_ranges": ranges,
        "normal_ranges_by_scheme": by_scheme,
        "reranker": feedback_card,
        "risk_knots": risk_knots(scores, threshold, alert_budget),
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    save(model_dir, detector, card, feedback)
    say(f"saved model {version} (threshold {threshold:.4f}) in {model_dir}")
    return card


def _streamed_ranges(spill: _Spill, scheme: np.ndarray) -> tuple[dict, dict]:
    """Exact 1st and 99th percentiles per feature, over all rows and per scheme, a column at a
    time (one feature of 10 million rows is 40 MB)."""
    rows_by_scheme = {
        schemes.SCHEME_CODES[code]: scheme == code
        for code in range(len(schemes.SCHEME_CODES))
        if (scheme == code).sum() >= MIN_ROWS_FOR_RANGES
    }
    ranges: dict[str, list[float]] = {}
    by_scheme: dict[str, dict[str, list[float]]] = {name: {} for name in rows_by_scheme}
    for index, name in enumerate(features.FEATURE_NAMES):
        column = spill.column(index)
        ranges[name] = [float(v) for v in np.percentile(column, [1, 99])]
        for scheme_name, rows in rows_by_scheme.items():
            by_scheme[scheme_name][name] = [float(v) for v in np.percentile(column[rows], [1, 99])]
    return ranges, by_scheme


def learn_from_dispositions(
    db_path: Path, transaction_ids, scores, spill: _Spill, threshold: float, seed: int
) -> tuple[reranker.Reranker | None, dict]:
    """The re-ranker from auditors' dispositions (None below the minimum) and its card entry.

    The card says how many labels of each kind it learnt from and how many of the top 1%
    training alerts it moved in and out.
    """
    conn = store.open_database(db_path)
    try:
        fitted, card = reranker.fit_from_dispositions(
            conn, transaction_ids, scores, spill.rows, threshold, seed=seed
        )
    finally:
        conn.close()
    if fitted is None:
        return None, card
    combined = fitted.percentile(scores)
    inside = np.flatnonzero(combined >= 1 - fitted.gate_share)
    combined[inside] = reranker.combined_score(fitted, spill.rows(inside), scores[inside])
    card["changed"] = reranker.top_moves(scores, combined)
    fitted.summary = card
    return fitted, card


def risk_knots(scores: np.ndarray, threshold: float, alert_budget: float) -> dict:
    """What the 0-100 risk mapping needs, saved in the model card (see schemewatch.risk)."""
    from schemewatch import risk

    return risk.knots(scores, threshold, alert_budget)


def save(
    model_dir: Path,
    detector: AutoencoderDetector,
    card: dict,
    feedback: reranker.Reranker | None = None,
) -> None:
    """Write the versioned artifacts, then switch current.json to them atomically."""
    folder = Path(model_dir) / card["version"]
    detector.save(folder)
    if feedback is not None:
        reranker.save(folder, feedback)
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
    return LoadedModel(version, detector, card, folder, reranker.load(folder))


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
