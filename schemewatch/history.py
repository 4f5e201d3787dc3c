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


# 64-bit hashes of id text: the tail keeps them beside its rows, so finding a batch's history and
# pruning compare integers, not strings (at 10 million rows the string comparisons cost more than
# the features). Grouping by hash is checked against the text before anything is dropped.
_STEP = np.uint64(0x100000001B3)  # the polynomial's base (odd)
_MISSING = np.uint64(0x5555)  # the hash of a missing value


def _mix(z: np.ndarray) -> np.ndarray:
    """Spread a 64-bit value's bits over all of it (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _strings(column: pd.Series) -> pa.LargeStringArray:
    """A text column as one Arrow array (taking rows from one array is much faster than from
    the chunks a concatenated frame holds)."""
    array = pa.array(column, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _merged(sorted_unique: np.ndarray, more: np.ndarray) -> np.ndarray:
    """The sorted union of a sorted array of distinct values and some more values."""
    more = np.unique(more)
    found = np.searchsorted(sorted_unique, more)
    present = found < len(sorted_unique)
    present[present] = sorted_unique[found[present]] == more[present]
    return np.insert(sorted_unique, found[~present], more[~present])


def id_hashes(column: pd.Series) -> np.ndarray:
    """A 64-bit hash of each value of a text column (missing values all hash alike).

    Computed on Arrow's buffers with numpy (pandas' own hashing turns every value into a Python
    string first: about ten times slower). Equal text, equal hash; different text may collide.
    """
    return _polynomial_hashes(column, _STEP, np.uint64(0x9E3779B97F4A7C15))


def check_hashes(column: pd.Series) -> np.ndarray:
    """A second, independent 64-bit hash: two ids with equal `id_hashes` but different check
    hashes collided; ids equal in both are taken as equal (about one chance in 10^25 otherwise
    among ten million ids, far below a memory error)."""
    return _polynomial_hashes(column, np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _polynomial_hashes(column: pd.Series, step: np.uint64, salt: np.uint64) -> np.ndarray:
    """Sum of byte x step^position, mod 2^64, with the length and mixed (splitmix64)."""
    array = _strings(column)
    if not len(array):
        return np.zeros(0, np.uint64)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64)[array.offset : array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0]
    sums = np.zeros(len(array), np.uint64)
    filled = lengths > 0
    if filled.any():
        data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
        with np.errstate(over="ignore"):
            powers = np.cumprod(
                np.r_[np.uint64(1), np.full(int(lengths.max()) - 1, step)], dtype=np.uint64
            )
            position = np.arange(len(data)) - np.repeat(starts, lengths)
            terms = data.astype(np.uint64) * powers[position]
            sums[filled] = np.add.reduceat(terms, starts[filled])
    with np.errstate(over="ignore"):
        hashes = _mix(sums ^ lengths.astype(np.uint64) * salt)
    if array.null_count:
        hashes[~np.asarray(array.is_valid())] = _MISSING
    return hashes


def _pair(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(first * np.uint64(0x9E3779B97F4A7C15) ^ second)


_HASHED = {"beneficiary": "beneficiary_id", "account": "account_id", "agent": "agent_id"}


class _Hashes:
    """The hashes of one frame's ids (beneficiary, account, agent) and of (beneficiary, scheme),
    and the check hashes of (beneficiary, scheme) and (account, beneficiary)."""

    FIELDS = ("beneficiary", "account", "agent", "scheme", "scheme_check", "account_check")

    def __init__(self, frame: pd.DataFrame):
        for name, column in _HASHED.items():
            setattr(self, name, id_hashes(frame[column]))
        self.scheme = _pair(self.beneficiary, id_hashes(frame["scheme"]))
        beneficiary = check_hashes(frame["beneficiary_id"])
        self.scheme_check = _pair(beneficiary, check_hashes(frame["scheme"]))
        self.account_check = _pair(check_hashes(frame["account_id"]), beneficiary)

    @classmethod
    def joined(cls, parts: list[_Hashes]) -> _Hashes:
        joined = cls.__new__(cls)
        for name in cls.FIELDS:
            setattr(joined, name, np.concatenate([getattr(part, name) for part in parts]))
        return joined

    def take(self, keep: np.ndarray) -> _Hashes:
        taken = _Hashes.__new__(_Hashes)
        for name in self.FIELDS:
            setattr(taken, name, getattr(self, name)[keep])
        return taken

    def period_keys(self, frame: pd.DataFrame) -> np.ndarray:
        """Of each row's (beneficiary, scheme, instalment period)."""
        return _pair(self.scheme, id_hashes(frame["instalment_period"]))


class Tail:
    """The earlier transactions later rows' features can reach, kept bounded.

    Every row paid on or after `horizon` (the newest payment seen, less the longest window and a
    day of slack) stays. Of older rows only what the features need per key stays: each
    beneficiary's latest payment of each scheme (days since the last payment, distance from the
    usual payout places) and the latest payment per (account, beneficiary) (distinct
    beneficiaries on an account, counted over all time; paid into a new account); mostly the same
    rows. So its size follows the population and one window of payments, not the rows stored. Of
    the rows dropped, only a 64-bit hash of their (beneficiary, scheme, period) is kept (8 bytes a
    row), because the period features count every earlier payment of a period.

    Beside each row it keeps 64-bit hashes of its ids: finding a batch's history compares
    integers (a hash collision only brings rows no window uses), and pruning groups by hash after
    checking the groups against the text (with a collision it groups by the text itself).

    A row the tail cannot serve exactly (paid before `horizon` plus the window, or of a period
    with a dropped payment) is marked `late`; its history then comes from the store. A hash
    collision there only costs a needless read.
    """

    PRUNE_ROWS = 250_000  # prune after this many new rows (pruning goes over the whole tail)

    def __init__(self):
        self.parts: list[tuple[pd.DataFrame, _Hashes]] = []
        self.horizon = -np.inf
        self.newest = -np.inf
        self.added = 0
        self.dropped_periods = np.zeros(0, np.uint64)  # sorted, unique
        self._last: tuple[pd.DataFrame, _Hashes] | None = None  # the last batch asked about

    def __len__(self) -> int:
        return sum(len(frame) for frame, _ in self.parts)

    @property
    def frames(self) -> list[pd.DataFrame]:
        return [frame for frame, _ in self.parts]

    def _hashes(self, batch: pd.DataFrame) -> _Hashes:
        """The batch's hashes, computed once for the batch asked about and then added."""
        if self._last is None or self._last[0] is not batch:
            self._last = (batch, _Hashes(batch))
        return self._last[1]

    def add(self, rows: pd.DataFrame) -> None:
        """Remember scored rows; prune once enough have been added."""
        if not len(rows):
            return
        self.parts.append((rows, self._hashes(rows)))
        self._last = None
        self.newest = max(self.newest, float(rows["paid_at"].max()))
        self.added += len(rows)
        if self.added >= self.PRUNE_ROWS:
            self.prune()
        elif len(self.parts) > 9:  # many small live batches: one part, the big frame untouched
            self.parts = [self.parts[0], _joined(self.parts[1:])]

    def prune(self) -> None:
        """Drop what no later row (paid after the horizon) can need."""
        self.added = 0
        if not self.parts:
            return
        frame, hashes = _joined(self.parts)
        horizon = max(self.horizon, self.newest - LONGEST_WINDOW - DISORDER_SLACK)
        paid_at = frame["paid_at"].to_numpy()
        older = np.flatnonzero(paid_at < horizon)
        older = older[np.lexsort((frame["transaction_id"].to_numpy()[older], paid_at[older]))]
        keep = paid_at >= horizon
        keep[older[_latest_of_each(frame, hashes, older)]] = True
        self.dropped_periods = _merged(
            self.dropped_periods, hashes.take(~keep).period_keys(frame[~keep])
        )
        self.parts = [(frame[keep].reset_index(drop=True), hashes.take(keep))]
        self.horizon = horizon

    def settle(self) -> None:
        """Prune into one frame now, before live ticks ask."""
        self.prune()

    def late(self, batch: pd.DataFrame) -> np.ndarray:
        """Batch rows whose windows reach rows the tail may have dropped."""
        paid_at = batch["paid_at"].to_numpy()
        late = paid_at < self.horizon + LONGEST_WINDOW
        if len(self.dropped_periods):
            keys = self._hashes(batch).period_keys(batch)
            found = np.searchsorted(self.dropped_periods, keys)
            found = np.minimum(found, len(self.dropped_periods) - 1)
            late |= self.dropped_periods[found] == keys
        return late

    def needed(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        """The tail rows of the batch's beneficiaries and accounts, and its agents' recent rows.

        A superset of what features.history_needed would pick (the tail already holds only what
        the windows need), and rows a window does not reach do not change the batch's values.
        """
        asked = self._hashes(batch)
        agents = _known(asked.agent)
        agent_since = int(batch["paid_at"].min()) - AGENT_REACH
        # The agents' recent payouts carry values of their own beneficiaries' histories (distance
        # from habit uses the previous payout), so those beneficiaries' rows come along too.
        people = [asked.beneficiary]
        recent = [frame["paid_at"].to_numpy() >= agent_since for frame, _ in self.parts]
        for (_, hashes), near_now in zip(self.parts, recent, strict=True):
            if near_now.any():
                by_agent = near_now & _isin(hashes.agent, agents)
                people.append(hashes.beneficiary[by_agent])
        people = _known(np.concatenate(people))
        accounts = _known(asked.account)
        found = []
        for (frame, hashes), near_now in zip(self.parts, recent, strict=True):
            near = _isin(hashes.beneficiary, people) | _isin(hashes.account, accounts)
            if near_now.any():
                near |= near_now & _isin(hashes.agent, agents)
            if near.any():
                found.append(frame[near])
        if not found:
            return None
        return pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]


def _joined(parts: list[tuple[pd.DataFrame, _Hashes]]) -> tuple[pd.DataFrame, _Hashes]:
    if len(parts) == 1:
        return parts[0]
    frame = pd.concat([frame for frame, _ in parts], ignore_index=True)
    return frame, _Hashes.joined([hashes for _, hashes in parts])


def _latest_of_each(frame: pd.DataFrame, hashes: _Hashes, older: np.ndarray) -> np.ndarray:
    """Of the rows `older` (positions in frame, in time order): which are the latest of their
    (beneficiary, scheme) or of their (account, beneficiary)."""
    groups = (
        (hashes.scheme, hashes.scheme_check, ("beneficiary_id", "scheme")),
        (
            _pair(hashes.account, hashes.beneficiary),
            hashes.account_check,
            ("account_id", "beneficiary_id"),
        ),
    )
    latest = np.zeros(len(older), bool)
    for keys, checks, columns in groups:
        if _hashes_collide(keys[older], checks[older]):
            last = ~frame.iloc[older].duplicated(list(columns), keep="last").to_numpy()
        else:
            last = ~pd.Series(keys[older]).duplicated(keep="last").to_numpy()
        latest |= last
    return latest


def _hashes_collide(keys: np.ndarray, checks: np.ndarray) -> bool:
    """Whether two rows with the same key differ in their check hash (different ids whose
    hashes collided)."""
    order = np.argsort(keys, kind="stable")
    same = keys[order][1:] == keys[order][:-1]
    return bool((checks[order][1:][same] != checks[order][:-1][same]).any())


def _known(hashes: np.ndarray) -> np.ndarray:
    """The distinct hashes of values that are present."""
    hashes = pd.unique(hashes)
    return hashes[hashes != _MISSING]


def _isin(hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
    return pd.Series(hashes, copy=False).isin(values).to_numpy()


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
        # What the late rows' windows reach (the others' the tail holds: anything of theirs the
        # store adds is in the tail too, and is dropped as a duplicate).
        late_rows = batch[late]
        extra = _read_from_store(conn, late_rows, late_rows, through_id)
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
