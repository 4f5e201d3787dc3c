"""Score every transaction exactly once per model version, with reasons for every alert.

`Monitor.tick()` scores the next pending rows (in transaction-id order) and commits them in
chunks; each commit covers a contiguous id range, so the highest scored id is a safe cursor and a
killed process resumes where its last commit ended. `run()` only loops, sleeps and handles signals.
A newly trained model (current.json changes) is picked up at the next tick.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import (
    explanations,
    features,
    history,
    linking,
    modeling,
    reranker,
    risk,
    store,
)
from schemewatch.rules import EnabledRules
from schemewatch.schemes import DAY, IST_OFFSET_SECONDS

BACKFILL_BATCH = 2_000_000
WARM_UP_ROWS = 200  # rows a ready monitor runs through once, about one live tick's
FULL_REGISTRY_ROWS = 50_000
# SQLite's page cache of each of the monitor's two connections: scores are appended in id order
# (only the right edge of each B-tree is written) and history is read a few rows a key, so a
# small cache does; two of the default 256 MB were a quarter of a 3M backfill's memory.
MONITOR_CACHE_KIB = 32_768
WRITE_CHUNK = 100_000
CLAIM_ROWS = 50_000  # ids a worker claims at a time (PostgreSQL)
CLAIM_SECONDS = 300.0  # a claim not done by then is taken over by another worker


@dataclass
class TickResult:
    """What one tick did."""

    scored: int
    alerts: int
    model_version: str
    pending: int


class Monitor:
    """Holds the loaded model and the bounded history its behavioural features need."""

    def __init__(
        self,
        db_path: Path,
        model_dir: Path,
        *,
        batch_size: int = BACKFILL_BATCH,
        chunk_size: int | None = None,  # None: history.chunk_rows for the store's size
        busy_timeout_ms: int = 10_000,
    ):
        self.db_path = store.locate(db_path)
        self.busy_timeout_ms = busy_timeout_ms
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.conn = store.open_database(
            self.db_path, busy_timeout_ms=busy_timeout_ms, cache_kib=MONITOR_CACHE_KIB
        )
        self.rules = EnabledRules(self.db_path)  # auditors' rules, run on every scored chunk
        self.model: modeling.LoadedModel | None = None
        self.tail = history.Tail()
        self.tail_through = -1
        # Scored batches wait here until the next batch needs the tail: the last batch of a
        # backfill is never added (a quarter of a million rows' hashes and pruning saved).
        self.awaiting_tail: list[pd.DataFrame] = []
        # (registry_changes when loaded, the whole registry), kept between backfill ticks.
        self.whole_registry: tuple[str, features.Registry] | None = None

    def _ensure_model(self, version: str) -> modeling.LoadedModel:
        if self.model is None or self.model.version != version:
            self.model = modeling.load_model(self.model_dir, version)
            self.tail_through = -1  # rebuild history for the new version's cursor
        return self.model

    def _prepare_history(self, cursor: int) -> None:
        """Stream the rows already scored into the tail, chunk by chunk (once per model version)."""
        if self.tail_through != cursor:
            self.tail, self.awaiting_tail = history.Tail(), []
            size = self.chunk_size or history.chunk_rows(cursor)
            for rows in history.read_chunks(self.db_path, 0, cursor, size):
                self.tail.add(rows)
            self.tail.settle()
            self.tail_through = cursor
            self._warm_up(cursor)

    def _warm_up(self, cursor: int) -> None:
        """Run the last scored rows through history, features and the model, writing nothing, so
        the first new payment does not wait for first-use costs (at 10 million rows the first
        live tick took 2.4 s, most of it the first reads of the history's store indexes)."""
        if cursor <= 0 or self.model is None:
            return
        rows = store.transactions_for_scoring(self.db_path, max(cursor - WARM_UP_ROWS, 0), cursor)
        if len(rows):
            needed = history.needed_history(self.conn, self._full_tail(), rows, cursor)
            matrix = features.compute_features(rows, self._registry_for(rows, needed), needed)
            _judge(rows, matrix, self.model, self.model.threshold)

    def _needed_history(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        """Earlier rows the batch's feature windows reach: from the tail, else from the store."""
        return history.needed_history(self.conn, self._full_tail(), batch, self.tail_through)

    def _full_tail(self) -> history.Tail:
        """The tail with every scored batch added."""
        for rows in self.awaiting_tail:
            self.tail.add(rows)
        self.awaiting_tail.clear()
        return self.tail

    def tick(self) -> TickResult:
        """Score the next pending transactions (at most batch_size), chunk by chunk."""
        version = modeling.current_version(self.model_dir)
        cursor = store.scored_through(self.conn, version)
        last = store.last_transaction_id(self.conn)
        if last <= cursor:
            self._get_ready(version, cursor)  # be ready before the first new row arrives
            # Alerts whose linking a busy database put off wait in the store's queue: link them.
            linking.link_new_alerts(self.conn, version)
            return TickResult(0, 0, version, 0)
        through = min(last, cursor + self.batch_size)
        # One chunk is scored and written on the writing thread (with its own connection: a
        # connection stays in its thread) while the next chunk's features are computed here.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writing")
        connection = writer.submit(
            store.connect,
            self.db_path,
            busy_timeout_ms=self.busy_timeout_ms,
            cache_kib=MONITOR_CACHE_KIB,
        ).result()
        try:
            # The first chunk is read in a child (and, for a backfill, the whole registry on the
            # writing thread, SQLite letting go of the interpreter) while the model loads here.
            size = self.chunk_size or history.chunk_rows(last)
            chunks = history.read_chunks(self.db_path, cursor, through, size)
            registry = None
            if min(through - cursor, size) > FULL_REGISTRY_ROWS:
                registry = self._start_whole_registry(writer, connection)
            else:
                self.whole_registry = None  # live ticks read their people's rows only
            model = self._get_ready(version, cursor)
            registry = registry() if registry is not None else None
            return self._score_chunks(chunks, registry, model, writer, connection, last, through)
        finally:
            writer.submit(connection.close).result()
            writer.shutdown(wait=True, cancel_futures=True)

    def _start_whole_registry(self, writer, connection):
        """Begin loading the whole registry on the writing thread, unless the previous tick's
        is still the registry stored (a 10M backfill's ticks each loaded 2 million people, 9 s
        a tick); call the result for it."""
        changes = store.registry_changes(self.conn)
        if self.whole_registry is not None and self.whole_registry[0] == changes:
            kept = self.whole_registry[1]
            return lambda: kept
        self.whole_registry = None
        loading = writer.submit(modeling.load_registry, connection)

        def loaded():
            # Changes written while it loaded make the next tick's count differ: it loads again.
            self.whole_registry = (changes, loading.result())
            return self.whole_registry[1]

        return loaded

    def _get_ready(self, version: str, cursor: int) -> modeling.LoadedModel:
        model = self._ensure_model(version)
        self.rules.refresh(self.conn)
        self._prepare_history(cursor)
        return model

    def _score_chunks(self, chunks, registry, model, writer, connection, last, through):
        """Features here, scores and writes on the writing thread, chunk by chunk."""
        scored = alerts = 0
        writing = None
        try:
            for batch in chunks:
                needed = self._needed_history(batch)
                matrix = features.compute_features(
                    batch, registry or self._registry_for(batch, needed), needed
                )
                if writing is not None:
                    alerts += writing.result()
                writing = writer.submit(self._score_and_write, batch, matrix, model, connection)
                scored += len(batch)
                self.awaiting_tail.append(batch)
                self.tail_through = int(batch["transaction_id"].max())
            if writing is not None:
                alerts += writing.result()
                writing = None
        finally:
            if writing is not None:
                writing.exception()  # let the write in flight end before the connection closes
        linking.link_new_alerts(self.conn, model.version)  # cases: linked alerts together
        return TickResult(scored, alerts, model.version, last - through)

    def _registry_for(self, batch: pd.DataFrame, needed: pd.DataFrame | None):
        people = set(batch["beneficiary_id"].tolist())
        if needed is not None:
            people.update(needed["beneficiary_id"].tolist())
        return modeling.load_registry(self.conn, sorted(people))

    def waiting_for_others(self) -> bool:
        """Whether rows are still being scored by other workers (never, for a lone monitor)."""
        return False

    def _score_and_write(
        self, batch: pd.DataFrame, matrix: np.ndarray, model, conn, claim=None
    ) -> int:
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
                hits, is_alert, reasons = self.rules.apply(
                    batch.iloc[part], matrix[part], model.version, is_alert, reasons
                )
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
                    _combined_risk(model, matrix[part], scores),
                    strict=True,
                )
                summary = daily.counts(part, is_alert, model.version)
                store.record_scores(conn, rows, summary, hits, claim=claim)
                alerts += int(is_alert.sum())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return alerts


class ClaimingMonitor(Monitor):
    """One of several monitor workers sharing a store (PostgreSQL): it scores claimed ranges.

    Each tick claims the next range of ids (or an expired claim of a worker that died), reads the
    earlier rows its features need from the store, and commits scores, daily summary, rule hits
    and the claim's completion together (store/claims.py), so every row is scored exactly once
    however many workers run and whichever of them is killed.
    """

    def __init__(
        self,
        db_path: Path,
        model_dir: Path,
        *,
        claim_rows: int = CLAIM_ROWS,
        claim_seconds: float = CLAIM_SECONDS,
        worker: str | None = None,
        busy_timeout_ms: int = 10_000,
    ):
        claim_rows = min(claim_rows, WRITE_CHUNK)  # one claim, one commit
        super().__init__(
            db_path,
            model_dir,
            batch_size=claim_rows,
            chunk_size=claim_rows,
            busy_timeout_ms=busy_timeout_ms,
        )
        self.claim_rows = claim_rows
        self.claim_seconds = claim_seconds
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    def tick(self) -> TickResult:
        version = modeling.current_version(self.model_dir)
        model = self._ensure_model(version)
        self.rules.refresh(self.conn)
        claim = store.claim_next_range(
            self.conn, version, self.worker, self.claim_rows, self.claim_seconds
        )
        if claim is None:
            return TickResult(0, 0, version, 0)
        batch = store.transactions_for_scoring(self.db_path, claim.first_id - 1, claim.last_id)
        needed = history.history_from_store(self.conn, batch, claim.first_id - 1)
        matrix = features.compute_features(batch, self._registry_for(batch, needed), needed)
        try:
            alerts = self._score_and_write(batch, matrix, model, self.conn, claim=claim)
        except store.ClaimLost:  # another worker took the range over; it scores it
            return TickResult(0, 0, version, store.pending_after_claims(self.conn, version))
        linking.link_new_alerts(self.conn, model.version)
        return TickResult(
            len(batch), alerts, version, store.pending_after_claims(self.conn, version)
        )

    def waiting_for_others(self) -> bool:
        version = modeling.current_version(self.model_dir)
        return store.open_claims(self.conn, version) > 0


def new_monitor(
    db_path, model_dir, *, batch_size: int = BACKFILL_BATCH, busy_timeout_ms=10_000, **claims
) -> Monitor:
    """A claiming worker on PostgreSQL (several may run), the single monitor on SQLite."""
    if store.is_postgres_url(db_path):
        return ClaimingMonitor(db_path, model_dir, busy_timeout_ms=busy_timeout_ms, **claims)
    return Monitor(db_path, model_dir, batch_size=batch_size, busy_timeout_ms=busy_timeout_ms)


def _combined_risk(model, matrix: np.ndarray, scores: np.ndarray) -> list:
    """The re-ranked risk (0-100) when the model version has a re-ranker, else None per row."""
    if model.reranker is None:
        return [None] * len(scores)
    return (100.0 * reranker.combined_score(model.reranker, matrix, scores)).tolist()


def _judge(rows: pd.DataFrame, matrix: np.ndarray, model, threshold: float):
    """Scores, alert flags, and (for alerts) reasons as JSON and the typology they resemble."""
    # The detector's own score (as evaluation and the threshold use), contributions for reasons.
    scores, contributions = model.detector.score_and_contributions(matrix)
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
    busy_timeout_ms: int = 10_000,
    **claims,
) -> int:
    """Score until nothing is pending (--once) or until Ctrl-C / SIGTERM (live).

    On PostgreSQL this process is one of any number of workers (`claims`: claim_rows,
    claim_seconds); --once then also waits for ranges other workers hold to be done or expire.
    """
    monitor = new_monitor(
        db_path, model_dir, batch_size=batch_size, busy_timeout_ms=busy_timeout_ms, **claims
    )
    scored_total = 0
    previous = signal.signal(signal.SIGTERM, _stop)
    watching = False
    try:
        while True:
            # A tick that met a lock held past the timeout committed what it had; the next try
            # goes on from the stored cursor.
            result = store.retry_while_busy(monitor.tick, report)
            scored_total += result.scored
            if not once and not watching and result.pending == 0 and report:
                report("up to date; watching for new transactions")
                watching = True
            if result.scored and report:
                report(
                    f"scored {result.scored:,} transactions with model {result.model_version}: "
                    f"{result.alerts:,} alerts; {result.pending:,} pending"
                )
            if once and result.pending == 0 and not monitor.waiting_for_others():
                break
            if not result.scored:
                time.sleep(poll)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        monitor.conn.close()
    return scored_total
