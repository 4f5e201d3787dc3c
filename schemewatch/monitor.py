"""Score every transaction exactly once per model version, with reasons for every alert.

`Monitor.tick()` scores the next pending rows (in transaction-id order) and commits them in
chunks; each commit covers a contiguous id range, so the highest scored id is a safe cursor and a
killed process resumes where its last commit ended. `run()` only loops, sleeps and handles signals.
A newly trained model (current.json changes) is picked up at the next tick.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import explanations, features, linking, modeling, risk, store
from schemewatch.schemes import DAY, IST_OFFSET_SECONDS

BACKFILL_BATCH = 2_000_000
FULL_REGISTRY_ROWS = 50_000
WRITE_CHUNK = 100_000


@dataclass
class TickResult:
    """What one tick did."""

    scored: int
    alerts: int
    model_version: str
    pending: int


class _IndexedPart:
    """A block of earlier transactions with row positions per beneficiary, account and agent."""

    KEYS = ("beneficiary_id", "account_id", "agent_id")

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame.reset_index(drop=True)
        self._positions: dict | None = None

    @property
    def positions(self) -> dict:
        """Built on first use: a backfill that ends right after does not pay for it."""
        if self._positions is None:
            self._positions = {
                key: self.frame.groupby(key, sort=False).indices for key in self.KEYS
            }
        return self._positions

    def needed(self, batch: pd.DataFrame) -> pd.DataFrame:
        found = []
        for key in self.KEYS:
            lookup = self.positions[key]
            found.extend(lookup[v] for v in batch[key].dropna().unique() if v in lookup)
        if not found:
            return self.frame.iloc[:0]
        candidates = self.frame.iloc[np.unique(np.concatenate(found))]
        return features.history_needed(batch, candidates)


class _History:
    """Earlier transactions the feature windows may reach: indexed blocks plus recent batches."""

    RECENT_ROWS = 100_000

    def __init__(self, frame: pd.DataFrame):
        self.blocks = [_IndexedPart(frame)] if len(frame) else []
        self.recent: list[pd.DataFrame] = []

    def add(self, batch: pd.DataFrame) -> None:
        self.recent.append(batch)
        if sum(len(part) for part in self.recent) >= self.RECENT_ROWS:
            self.blocks.append(_IndexedPart(pd.concat(self.recent, ignore_index=True)))
            self.recent = []
        elif len(self.recent) > 8:
            self.recent = [pd.concat(self.recent, ignore_index=True)]

    def needed(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        parts = [block.needed(batch) for block in self.blocks]
        parts += [features.history_needed(batch, part) for part in self.recent]
        parts = [part for part in parts if len(part)]
        return pd.concat(parts, ignore_index=True) if parts else None


class Monitor:
    """Holds the loaded model and the history its behavioural features need."""

    def __init__(self, db_path: Path, model_dir: Path, *, batch_size: int = BACKFILL_BATCH):
        self.db_path = Path(db_path)
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.conn = store.open_database(self.db_path)
        self.model: modeling.LoadedModel | None = None
        self.history = _History(pd.DataFrame())
        self.history_through = -1

    def _ensure_model(self) -> modeling.LoadedModel:
        version = modeling.current_version(self.model_dir)
        if self.model is None or self.model.version != version:
            self.model = modeling.load_model(self.model_dir, version)
            self.history_through = -1  # rebuild history for the new version's cursor
        return self.model

    def _prepare_history(self, cursor: int) -> None:
        """Load the rows already scored, once per model version (kept in memory after that)."""
        if self.history_through != cursor:
            self.history = _History(store.transactions_for_scoring(self.db_path, 0, cursor))
            self.history_through = cursor

    def _needed_history(self, batch: pd.DataFrame, cursor: int) -> pd.DataFrame | None:
        """Earlier rows the batch's feature windows reach."""
        self._prepare_history(cursor)
        return self.history.needed(batch)

    def _remember(self, batch: pd.DataFrame) -> None:
        self.history.add(batch)
        self.history_through = int(batch["transaction_id"].max())

    def tick(self) -> TickResult:
        """Score the next batch of pending transactions (if any)."""
        model = self._ensure_model()
        cursor = store.scored_through(self.conn, model.version)
        last = store.last_transaction_id(self.conn)
        if last <= cursor:
            self._prepare_history(cursor)  # be ready before the first new row arrives
            return TickResult(0, 0, model.version, 0)
        through = min(last, cursor + self.batch_size)
        reading = store.start_transactions_read(self.db_path, cursor, through)
        if through - cursor > FULL_REGISTRY_ROWS:
            registry = modeling.load_registry(self.conn)  # meanwhile the read runs in a child
            batch = reading()
            needed = self._needed_history(batch, cursor)
        else:
            batch = reading()
            needed = self._needed_history(batch, cursor)
            people = set(batch["beneficiary_id"].tolist())
            if needed is not None:
                people.update(needed["beneficiary_id"].tolist())
            registry = modeling.load_registry(self.conn, sorted(people))
        matrix = features.compute_features(batch, registry, needed)
        alerts = self._score_and_write(batch, matrix, model)
        linking.link_new_alerts(self.conn, model.version)  # cases: linked alerts together
        self._remember(batch)
        return TickResult(len(batch), alerts, model.version, last - self.history_through)

    def _score_and_write(self, batch: pd.DataFrame, matrix: np.ndarray, model) -> int:
        """Score, explain and store the batch chunk by chunk, each chunk in its own commit.

        A helper thread scores and explains the next chunk while this one is being written
        (TensorFlow and SQLite both let go of the interpreter while they work).
        """
        threshold = model.threshold
        ids = batch["transaction_id"].to_numpy()
        daily = _DailyKeys(batch)
        parts = [slice(s, s + WRITE_CHUNK) for s in range(0, len(batch), WRITE_CHUNK)]
        alerts = 0
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        try:
            judged = [
                pool.submit(_judge, batch.iloc[part], matrix[part], model, threshold)
                for part in parts
            ]
            for part, future in zip(parts, judged, strict=True):
                scores, is_alert, reasons, resembles = future.result()
                now = store.now()
                rows = zip(
                    [model.version] * len(scores),
                    ids[part].tolist(),
                    scores.astype(float).tolist(),
                    [threshold] * len(scores),
                    is_alert.astype(int).tolist(),
                    reasons.tolist(),
                    resembles.tolist(),
                    [now] * len(scores),
                    risk.risk(scores, model.card.get("risk_knots")).tolist(),
                    strict=True,
                )
                summary = daily.counts(part, is_alert, model.version)
                store.record_scores(self.conn, rows, summary)
                alerts += int(is_alert.sum())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return alerts


def _judge(rows: pd.DataFrame, matrix: np.ndarray, model, threshold: float):
    """Scores, alert flags, and (for alerts) reasons as JSON and the typology they resemble."""
    contributions = model.detector.contributions(matrix)
    scores = contributions.max(axis=1)
    is_alert = scores > threshold
    reasons = np.full(len(rows), None, dtype=object)
    resembles = np.full(len(rows), None, dtype=object)
    flagged = np.flatnonzero(is_alert)
    if len(flagged):
        explained = explanations.explain(
            contributions[flagged],
            matrix[flagged],
            rows.iloc[flagged].to_dict("records"),
            model.card,
        )
        reasons[flagged] = [json.dumps(r, ensure_ascii=False) for r, _ in explained]
        resembles[flagged] = [t for _, t in explained]
    return scores, is_alert, reasons, resembles


class _DailyKeys:
    """(IST day, scheme, state) of each batch row as one integer, for quick per-chunk sums."""

    def __init__(self, batch: pd.DataFrame):
        self.day = (batch["paid_at"].to_numpy(np.int64) + IST_OFFSET_SECONDS) // DAY
        self.first_day = int(self.day.min()) if len(self.day) else 0
        scheme, self.schemes = pd.factorize(batch["scheme"])
        state, self.states = pd.factorize(batch["state"])
        self.width = len(self.schemes) * len(self.states)
        self.key = (self.day - self.first_day) * self.width + scheme * len(self.states) + state
        self.amount = batch["amount"].to_numpy(float)

    def counts(self, part: slice, is_alert: np.ndarray, version: str) -> list[tuple]:
        """Per (day, scheme, state) in the slice: transactions, amount, alerts, amount alerted."""
        keys, inverse = np.unique(self.key[part], return_inverse=True)
        amount, alert = self.amount[part], is_alert.astype(float)
        sums = [
            np.bincount(inverse),
            np.bincount(inverse, weights=amount),
            np.bincount(inverse, weights=alert),
            np.bincount(inverse, weights=amount * alert),
        ]
        days = (keys // self.width + self.first_day).astype("datetime64[D]").astype(str)
        rest = keys % self.width
        schemes = self.schemes[rest // len(self.states)]
        states = self.states[rest % len(self.states)]
        return [
            (version, day, scheme, state, int(n), float(a), int(k), float(r))
            for day, scheme, state, n, a, k, r in zip(
                days.tolist(),
                schemes.tolist(),
                states.tolist(),
                *(x.tolist() for x in sums),
                strict=True,
            )
        ]


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop()


def run(
    db_path: Path,
    model_dir: Path,
    *,
    once: bool,
    poll: float,
    batch_size: int = BACKFILL_BATCH,
    report=None,
) -> int:
    """Score until nothing is pending (--once) or until Ctrl-C / SIGTERM (live)."""
    monitor = Monitor(db_path, model_dir, batch_size=batch_size)
    scored_total = 0
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            result = monitor.tick()
            scored_total += result.scored
            if result.scored and report:
                report(
                    f"scored {result.scored:,} transactions with model {result.model_version}: "
                    f"{result.alerts:,} alerts; {result.pending:,} pending"
                )
            if once and result.pending == 0:
                break
            if not result.scored:
                time.sleep(poll)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        monitor.conn.close()
    return scored_total
