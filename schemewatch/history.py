"""Features in bounded chunks: the earlier rows later chunks need, kept bounded, and chunked reads.

`Tail` holds what the behavioural windows of rows still to come can reach; `read_chunks` reads
transactions in id order a chunk at a time (the next read runs in a child process meanwhile);
`feature_chunks` is the pipeline the backfill and training share. Values equal a whole-table
`features.compute_features` (tested with chunks of 7 rows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemewatch import features, store
from schemewatch.schemes import DAY

# Rows read and featurised together: bounds the memory (a 3M-row backfill peaked at 3.1 GB with
# 250,000, at 3.9 GB with 500,000, which was about a quarter faster).
CHUNK_ROWS = 250_000
# How far back the agent windows reach (HISTORY_NEEDS names it whatever windows features.py has).
AGENT_REACH = features.HISTORY_NEEDS["agent"]
# How far back any behavioural window reaches. features.py has no single constant for it yet
# (another branch is adding multi-window features): if it gains LONGEST_WINDOW, that wins.
LONGEST_WINDOW = getattr(features, "LONGEST_WINDOW", None) or max(
    AGENT_REACH, *features.BENEFICIARY_WINDOWS.values()
)
# Rows may arrive a little out of time order (clocks of several feeds); keep this much extra.
DISORDER_SLACK = DAY


def _glibc():
    """The C library, if it is glibc (it alone has malloc_trim); None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def give_back_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the operating system.

    Arrow's allocator keeps freed buffers for reuse and glibc keeps freed heap; the next chunk
    would reuse them, but meanwhile they count as ours, and they add up over a long pass. On a
    3M-row training pass: 1.65 GB resident after ten chunks without this, 0.97 GB with it.
    """
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _period_keys(rows: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's (beneficiary, scheme, instalment period)."""
    hashed = [
        pd.util.hash_pandas_object(rows[column], index=False).to_numpy()
        for column in ("beneficiary_id", "scheme", "instalment_period")
    ]
    with np.errstate(over="ignore"):
        return hashed[0] * np.uint64(0x9E3779B97F4A7C15) ^ hashed[1] * np.uint64(31) ^ hashed[2]


class Tail:
    """The earlier transactions later rows' features can reach, kept bounded.

    Every row paid on or after `horizon` (the newest payment seen, less the longest window and a
    day of slack) stays. Of older rows only what the features need per key stays: each
    beneficiary's latest payment of each scheme (days since the last payment, distance from the
    usual payout places)
    and one payment per (account, beneficiary) (distinct beneficiaries on an account, counted
    over all time). So its size follows the population and one window of payments, not the rows
    stored. Of the rows dropped, only a 64-bit hash of their (beneficiary, scheme, period) is
    kept (8 bytes a row), because the period features count every earlier payment of a period.

    A row the tail cannot serve exactly (paid before `horizon` plus the window, or of a period
    with a dropped payment) is marked `late`; its history then comes from the store. A hash
    collision only costs a needless read.
    """

    PRUNE_ROWS = 1_000_000  # prune after this many new rows (pruning scans the whole tail)

    def __init__(self):
        self.frame: pd.DataFrame | None = None
        self.parts: list[pd.DataFrame] = []
        self.horizon = -np.inf
        self.newest = -np.inf
        self.added = 0
        self.dropped_periods = np.zeros(0, np.uint64)  # sorted, unique
        self.keys = _KeyCodes()  # the big frame's ids as integer codes, until it changes

    def __len__(self) -> int:
        return sum(len(part) for part in self._all())

    def _all(self) -> list[pd.DataFrame]:
        return ([self.frame] if self.frame is not None else []) + self.parts

    def add(self, rows: pd.DataFrame) -> None:
        """Remember scored rows; prune once enough have been added."""
        if not len(rows):
            return
        self.parts.append(rows)
        self.newest = max(self.newest, float(rows["paid_at"].max()))
        self.added += len(rows)
        if self.added >= self.PRUNE_ROWS:
            self.prune()
        elif len(self.parts) > 8:  # many small live batches: one part, the big frame untouched
            self.parts = [pd.concat(self.parts, ignore_index=True)]

    def _merge(self) -> None:
        frames = self._all()
        self.frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        self.parts = []
        self.keys = _KeyCodes()

    def prune(self) -> None:
        """Drop what no later row (paid after the horizon) can need."""
        self._merge()
        self.added = 0
        if self.frame is None:
            return
        horizon = max(self.horizon, self.newest - LONGEST_WINDOW - DISORDER_SLACK)
        frame = self.frame
        paid_at = frame["paid_at"].to_numpy()
        old = paid_at < horizon
        keep = ~old
        older = frame[old]
        time_order = np.lexsort((older["transaction_id"].to_numpy(), older["paid_at"].to_numpy()))
        older = older.iloc[time_order]
        # The latest of each scheme: distance from habit also looks at the same scheme's last.
        latest = ~older.duplicated(["beneficiary_id", "scheme"], keep="last").to_numpy()
        first_on_account = ~older.duplicated(["account_id", "beneficiary_id"]).to_numpy()
        kept_older = older.index.to_numpy()[latest | first_on_account]
        keep[kept_older] = True
        dropped = _period_keys(frame[~keep])
        self.dropped_periods = np.union1d(self.dropped_periods, dropped)
        self.frame = frame[keep].reset_index(drop=True)
        self.keys = _KeyCodes()
        self.horizon = horizon

    def settle(self) -> None:
        """Prune into one frame and code its ids now, before live ticks ask (coding a tail of
        millions of rows takes seconds: the first live tick waited for it)."""
        if not self._all():
            return
        self.prune()
        if self.frame is not None and len(self.frame) >= KEY_CODES_FROM_ROWS:
            for column in ("beneficiary_id", "account_id"):
                self.keys.code(self.frame, column)

    def late(self, batch: pd.DataFrame) -> np.ndarray:
        """Batch rows whose windows reach rows the tail may have dropped."""
        paid_at = batch["paid_at"].to_numpy()
        late = paid_at < self.horizon + LONGEST_WINDOW
        if len(self.dropped_periods):
            keys = _period_keys(batch)
            found = np.searchsorted(self.dropped_periods, keys)
            found = np.minimum(found, len(self.dropped_periods) - 1)
            late |= self.dropped_periods[found] == keys
        return late

    def needed(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        """The tail rows of the batch's beneficiaries and accounts, and its agents' recent rows.

        A superset of what features.history_needed would pick (the tail already holds only what
        the windows need), and rows a window does not reach do not change the batch's values.
        """
        agents = _value_set(batch["agent_id"])
        agent_since = int(batch["paid_at"].min()) - AGENT_REACH
        # The agents' recent payouts carry values of their own beneficiaries' histories (distance
        # from habit uses the previous payout), so those beneficiaries' rows come along too.
        people = batch["beneficiary_id"]
        for part in self._all():
            recent = part["paid_at"].to_numpy() >= agent_since
            if recent.any():
                payouts = part[recent]
                people = pd.concat(
                    [people, payouts["beneficiary_id"][_isin(payouts["agent_id"], agents)]]
                )
        people = _value_set(people)
        accounts = _value_set(batch["account_id"])
        found = []
        for part in self._all():
            near = self._isin(part, "beneficiary_id", people) | self._isin(
                part, "account_id", accounts
            )
            recent = part["paid_at"].to_numpy() >= agent_since
            if recent.any():
                near |= recent & _isin(part["agent_id"], agents)
            if near.any():
                found.append(part[near])
        if not found:
            return None
        return pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]

    def _isin(self, part: pd.DataFrame, column: str, values: pa.Array) -> np.ndarray:
        """part[column].isin(values): for the big frame through its cached codes (a live tick
        asks about a few hundred ids; comparing them with every string of a tail of millions
        took most of a tick at 10 million rows), else through Arrow."""
        if part is self.frame and len(part) >= KEY_CODES_FROM_ROWS:
            return self.keys.isin(part, column, values)
        return _isin(part[column], values)


KEY_CODES_FROM_ROWS = 100_000  # smaller parts are compared directly


class _KeyCodes:
    """One frame's id columns as integer codes (computed on first use): membership of a few
    values is then a lookup of their codes and one pass over integers."""

    def __init__(self):
        self.codes: dict[str, tuple[np.ndarray, pd.Index]] = {}

    def code(self, frame: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index]:
        if column not in self.codes:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
            self.codes[column] = (codes, pd.Index(uniques))
        return self.codes[column]

    def isin(self, frame: pd.DataFrame, column: str, values: pa.Array) -> np.ndarray:
        codes, uniques = self.code(frame, column)
        wanted = np.zeros(len(uniques) + 1, bool)  # the last one stands for a missing value
        found = uniques.get_indexer(values.to_pandas())
        wanted[found[found >= 0]] = True
        return wanted[codes]


def _value_set(column: pd.Series) -> pa.Array:
    return pa.array(column.dropna().unique(), type=pa.string())


def _isin(column: pd.Series, values: pa.Array) -> np.ndarray:
    """column.isin(values), through Arrow (pandas' isin on Arrow strings loops in Python)."""
    found = pc.is_in(pa.array(column, type=pa.string(), from_pandas=True), value_set=values)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def read_chunks(db_path: Path, after_id: int, through_id: int, size: int):
    """Transactions after_id < id <= through_id in id order, `size` ids at a time.

    The first chunk starts being read at once (in a child process for large chunks), and the
    next chunk is already being read while the caller works on this one.
    """
    starts = iter(range(after_id, through_id, max(size, 1)))
    first = next(starts, None)
    if first is None:
        return iter(())
    pending = store.start_transactions_read(db_path, first, min(first + size, through_id))
    return _chunks_after(pending, db_path, starts, through_id, size)


def _chunks_after(pending, db_path: Path, starts, through_id: int, size: int):
    for start in starts:
        following = store.start_transactions_read(db_path, start, min(start + size, through_id))
        rows = pending()
        if len(rows):
            yield rows
        del rows
        give_back_freed_memory()
        pending = following
    rows = pending()
    if len(rows):
        yield rows


def history_from_store(conn, batch: pd.DataFrame, through_id: int) -> pd.DataFrame | None:
    """Every earlier row (ids up to through_id) the batch's windows reach, read from the store.

    For a monitor worker scoring a claimed range with no tail of its own.
    """
    return _read_from_store(conn, batch, batch, through_id, with_accounts=True)


def _read_from_store(conn, rows, batch, through_id: int, *, with_accounts: bool = False):
    """What the batch's windows need of the earlier payments of `rows`' beneficiaries, agents
    and (when asked) bank accounts, read from the store."""
    accounts = rows["account_id"].dropna().unique().tolist() if with_accounts else ()
    extra = store.earlier_transactions(
        conn,
        through_id=through_id,
        beneficiary_ids=rows["beneficiary_id"].unique().tolist(),
        agent_ids=rows["agent_id"].dropna().unique().tolist(),
        agents_since=int(rows["paid_at"].min()) - AGENT_REACH,
        account_ids=accounts,
    )
    return features.history_needed(batch, extra)


def needed_history(conn, tail: Tail, batch: pd.DataFrame, through_id: int) -> pd.DataFrame | None:
    """Earlier rows (ids up to through_id) the batch's feature windows reach.

    From the tail, and for rows it cannot serve (see Tail.late) from the store.
    """
    needed = tail.needed(batch)
    late = tail.late(batch)
    if late.any():
        extra = _read_from_store(conn, batch[late], batch, through_id)
        parts = [part for part in (needed, extra) if part is not None and len(part)]
        needed = pd.concat(parts, ignore_index=True) if parts else None
        if needed is not None:
            needed = needed.drop_duplicates("transaction_id")
    return needed


def feature_chunks(db_path: Path, conn, registry, size: int = CHUNK_ROWS):
    """(rows, feature matrix) for every stored transaction, `size` ids at a time."""
    tail = Tail()
    through = 0
    for rows in read_chunks(db_path, 0, store.last_transaction_id(conn), size):
        matrix = features.compute_features(
            rows, registry, needed_history(conn, tail, rows, through)
        )
        yield rows, matrix
        tail.add(rows)
        through = int(rows["transaction_id"].max())
