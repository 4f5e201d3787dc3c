"""Features in bounded chunks: the earlier rows later chunks need, kept bounded, and chunked reads.

`Tail` holds what the behavioural windows of rows still to come can reach; `read_chunks` reads
transactions in id order a chunk at a time (the next read runs in a child process meanwhile);
`feature_chunks` is the pipeline the backfill and training share. Values equal a whole-table
`features.compute_features` (tested with chunks of 7 rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import features, store
from schemewatch.freed_memory import give_back_freed_memory
from schemewatch.schemes import DAY
from schemewatch.text_hashes import MISSING, check_hashes, id_hashes, pair

# Rows read and featurised together: bounds the memory (a 3M-row backfill peaked at 3.1 GB with
# 250,000, at 3.9 GB with 500,000, which was about a quarter faster).
CHUNK_ROWS = 250_000
# Beyond this many stored rows, chunks are half as large: the registry and the tail grow with the
# population, so the chunk gives way. On 2026-12-07, the feature pass over 3M rows of a 10M
# database peaked at 2,150 MB with 250,000 rows and 1,760-1,810 MB with 125,000 (47-56 s either
# way); a 10M backfill at 3,090 MB and 273 s with 250,000, 2,934 MB and 298 s with 125,000; a 1M
# backfill at 1,159 MB and 17.8 s with 250,000, 956 MB and 21.8 s with 125,000.
LARGE_STORE_ROWS = 4_000_000


def chunk_rows(stored_rows: int) -> int:
    """How many rows to featurise at a time in a store of this many rows."""
    return CHUNK_ROWS if stored_rows <= LARGE_STORE_ROWS else CHUNK_ROWS // 2


# How far back the agent windows reach (HISTORY_NEEDS names it whatever windows features.py has).
AGENT_REACH = features.HISTORY_NEEDS["agent"]
# How far back any behavioural window reaches. features.py has no single constant for it yet
# (another branch is adding multi-window features): if it gains LONGEST_WINDOW, that wins.
LONGEST_WINDOW = getattr(features, "LONGEST_WINDOW", None) or max(
    AGENT_REACH, *features.BENEFICIARY_WINDOWS.values()
)
# Rows may arrive a little out of time order (clocks of several feeds); keep this much extra.
DISORDER_SLACK = DAY


def _merged(sorted_unique: np.ndarray, more: np.ndarray) -> np.ndarray:
    """The sorted union of a sorted array of distinct values and some more values."""
    more = np.unique(more)
    found = np.searchsorted(sorted_unique, more)
    present = found < len(sorted_unique)
    present[present] = sorted_unique[found[present]] == more[present]
    return np.insert(sorted_unique, found[~present], more[~present])


def _by_hash(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows in order of their hash's leading bits, those leading bits in that order, where each
    run of equal leading bits ends, and how many bits were shifted off: a binary search of the
    leading bits finds a hash's rows, which are then compared whole.

    Each hash's trailing bits are replaced by its row number and the keys sorted as values:
    numpy sorts 64-bit values several times faster than it sorts positions by them (argsort),
    and sorting was half of finding a chunk's history at 10 million rows."""
    shift = max(int(len(hashes)).bit_length(), 1)
    rows = np.arange(len(hashes), dtype=np.uint64)
    keys = (hashes >> np.uint64(shift) << np.uint64(shift)) | rows
    keys.sort()
    rows = (keys & np.uint64((1 << shift) - 1)).astype(np.int64)
    keys >>= np.uint64(shift)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.repeat(np.r_[starts[1:], len(keys)], np.diff(np.r_[starts, len(keys)]))
    return rows, keys, ends.astype(np.int32 if len(keys) < 2**31 else np.int64), shift


# Ids are compared by hash (schemewatch/text_hashes.py); grouping by hash is checked against the
# text before anything is dropped.
_HASHED = {"beneficiary": "beneficiary_id", "account": "account_id", "agent": "agent_id"}


class _Hashes:
    """Per row of a frame: hashes of its ids (beneficiary, account, agent), of (beneficiary,
    scheme), of (account, beneficiary) and of (beneficiary, scheme, instalment period), and the
    check hashes of the two pairs."""

    FIELDS = ("beneficiary", "account", "agent", "scheme", "pair", "period", "checks")

    def __init__(self, frame: pd.DataFrame):
        for name, column in _HASHED.items():
            setattr(self, name, id_hashes(frame[column]))
        self.scheme = pair(self.beneficiary, id_hashes(frame["scheme"]))
        self.pair = pair(self.account, self.beneficiary)
        self.period = pair(self.scheme, id_hashes(frame["instalment_period"]))
        beneficiary = check_hashes(frame["beneficiary_id"])
        self.checks = np.column_stack(
            [
                pair(beneficiary, check_hashes(frame["scheme"])),
                pair(check_hashes(frame["account_id"]), beneficiary),
            ]
        )

    @classmethod
    def joined(cls, parts: list[_Hashes]) -> _Hashes:
        joined = cls.__new__(cls)
        for name in cls.FIELDS:
            setattr(joined, name, np.concatenate([getattr(part, name) for part in parts]))
        return joined

    def take(self, rows: np.ndarray) -> _Hashes:
        taken = _Hashes.__new__(_Hashes)
        for name in self.FIELDS:
            setattr(taken, name, getattr(self, name)[rows])
        return taken


class _Part:
    """Rows the tail carries, their hashes, and which of them are still carried (pruning marks
    rows dropped instead of copying the rest; see Tail._compact)."""

    def __init__(self, frame: pd.DataFrame, hashes: _Hashes, alive: np.ndarray | None = None):
        self.frame, self.hashes = frame, hashes
        self.alive = np.ones(len(frame), bool) if alive is None else alive
        self.paid_at = frame["paid_at"].to_numpy()
        self._sorted: dict[str, tuple] = {}

    def rows_with(self, field: str, values: np.ndarray) -> np.ndarray:
        """Whether each row's `field` hash is one of `values`, found by binary search in the
        part's hashes sorted once (a batch asks about a few hundred thousand ids; probing every
        one of millions of carried rows instead took most of finding the history)."""
        if field not in self._sorted:
            self._sorted[field] = _by_hash(getattr(self.hashes, field))
        rows, prefixes, ends, shift = self._sorted[field]
        found = np.zeros(len(rows), bool)
        if not len(rows):
            return found
        # Sorted needles: numpy's binary search starts each from where the previous one ended,
        # instead of a random walk through millions of hashes for each (most of finding a
        # chunk's history at 10 million rows).
        values = np.sort(values)
        wanted = values >> shift
        first = np.searchsorted(prefixes, wanted, side="left")
        hit = prefixes[np.minimum(first, len(rows) - 1)] == wanted
        if hit.any():
            first, values = first[hit], values[hit]
            counts = ends[first] - first
            steps = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            candidates = rows[np.repeat(first, counts) + steps]
            # A row sharing only the leading bits with a value asked about is not one of them.
            same = getattr(self.hashes, field)[candidates] == np.repeat(values, counts)
            found[candidates[same]] = True
        return found

    def __len__(self) -> int:
        return int(self.alive.sum())

    def take(self, rows: np.ndarray) -> _Part:
        return _Part(self.frame[rows].reset_index(drop=True), self.hashes.take(rows))

    def without(self, rows: np.ndarray) -> _Part:
        """This part with `rows` marked dropped (the same frame, hashes and search index: copying
        the rows staying was a third of pruning)."""
        part = _Part(self.frame, self.hashes, self.alive & ~rows)
        part.paid_at, part._sorted = self.paid_at, self._sorted
        return part

    def carried(self) -> _Part:
        """This part without the rows dropped."""
        return self if self.alive.all() else self.take(self.alive)

    @staticmethod
    def joined(parts: list[_Part]) -> _Part:
        """The carried rows of these parts as one part (the parts stay as they are; where the
        tail owns them and lets them go, `gathered` holds less at once)."""
        parts = [part.carried() for part in parts]
        if len(parts) == 1:
            return parts[0]
        frame = pd.concat([part.frame for part in parts], ignore_index=True)
        return _Part(frame, _Hashes.joined([part.hashes for part in parts]))

    def owned(self) -> _Part:
        """This part with a frame and hashes of its own (the same arrays), which `gathered` may
        take apart without touching the frame a caller handed to the tail."""
        hashes = _Hashes.__new__(_Hashes)
        for name in _Hashes.FIELDS:
            setattr(hashes, name, getattr(self.hashes, name))
        return _Part(self.frame.copy(deep=False), hashes, self.alive)

    @staticmethod
    def gathered(parts: list[_Part]) -> _Part:
        """The carried rows of these parts (the tail's own: see `owned`) as one part, built a
        column at a time, each column of the parts let go once copied: the parts are used up.

        Copying whole parts, then joining them, held the old rows twice over at once: over the
        first 8M rows of a 10M database (125,000-row chunks) the feature pass peaked at 2,653 MB
        while compacting, 2,402 MB this way, in the same time."""
        if len(parts) == 1 and parts[0].alive.all():
            return parts[0]
        kept = [None if part.alive.all() else np.flatnonzero(part.alive) for part in parts]
        for part in parts:
            part._sorted.clear()
            part.paid_at = None
        columns = {}
        for name in list(parts[0].frame.columns):
            columns[name] = pd.concat(
                [
                    part.frame[name] if rows is None else part.frame[name].take(rows)
                    for part, rows in zip(parts, kept, strict=True)
                ],
                ignore_index=True,
            )
            for part in parts:
                del part.frame[name]
        hashes = _Hashes.__new__(_Hashes)
        for name in _Hashes.FIELDS:
            setattr(
                hashes,
                name,
                np.concatenate(
                    [
                        getattr(part.hashes, name)[slice(None) if rows is None else rows]
                        for part, rows in zip(parts, kept, strict=True)
                    ]
                ),
            )
            for part in parts:
                setattr(part.hashes, name, None)
        return _Part(pd.DataFrame(columns, copy=False), hashes)


class Tail:
    """The earlier transactions later rows' features can reach, kept bounded.

    Every row paid on or after `horizon` (the newest payment seen, less the longest window and a
    day of slack) stays (`recent`). Of older rows only what the features need per key stays
    (`old`): each beneficiary's latest payment of each scheme (days since the last payment,
    distance from the usual payout places) and the latest payment per (account, beneficiary)
    (distinct beneficiaries on an account, counted over all time; paid into a new account);
    mostly the same rows. So its size follows the population and one window of payments, not the
    rows stored. Of the rows dropped, only a 64-bit hash of their (beneficiary, scheme, period)
    is kept (8 bytes a row), because the period features count every earlier payment of a period.

    Beside each row it keeps 64-bit hashes of its ids: finding a batch's history compares
    integers (a hash collision only brings rows no window uses), and pruning groups by hash after
    checking the groups with a second, independent hash (with a collision it groups by the text).
    Pruning looks only at the rows leaving `recent` and the old rows of the same beneficiaries,
    and marks old rows dropped; the old rows are copied together only once many are dropped.

    A row the tail cannot serve exactly (paid before `horizon` plus the window, or of a period
    with a dropped payment) is marked `late`; its history then comes from the store. A hash
    collision there only costs a needless read.
    """

    PRUNE_ROWS = 250_000  # prune after this many new rows
    MOST_OLD_PARTS = 8  # more, or a third of old rows dropped: copy the old rows into one part

    def __init__(self):
        self.old: list[_Part] = []
        self.recent: list[_Part] = []
        self.horizon = -np.inf
        self.newest = -np.inf
        self.added = 0
        self.dropped_periods = np.zeros(0, np.uint64)  # sorted, unique
        self._last: tuple[pd.DataFrame, _Hashes] | None = None  # the last batch asked about

    @property
    def parts(self) -> list[_Part]:
        return self.old + self.recent

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def frames(self) -> list[pd.DataFrame]:
        """The rows carried (for inspection: copies the rows of parts with rows dropped)."""
        return [part.carried().frame for part in self.parts]

    def _hashes(self, batch: pd.DataFrame) -> _Hashes:
        """The batch's hashes, computed once for the batch asked about and then added."""
        if self._last is None or self._last[0] is not batch:
            self._last = (batch, _Hashes(batch))
        return self._last[1]

    def add(self, rows: pd.DataFrame) -> None:
        """Remember scored rows; prune once enough have been added."""
        if not len(rows):
            return
        self.recent.append(_Part(rows, self._hashes(rows)))
        self._last = None
        self.newest = max(self.newest, float(rows["paid_at"].max()))
        self.added += len(rows)
        if self.added >= self.PRUNE_ROWS:
            self.prune()
        elif len(self.recent) > 8:  # many small live batches: one part
            self.recent = [_Part.joined(self.recent)]

    def prune(self) -> None:
        """Drop what no later row (paid after the horizon) can need."""
        self.added = 0
        horizon = max(self.horizon, self.newest - LONGEST_WINDOW - DISORDER_SLACK)
        leaving, staying = [], []
        for part in self.recent:
            older = part.paid_at < horizon
            leaves, stays = older & part.alive, ~older & part.alive
            if not leaves.any():
                staying.append(part)
            elif not stays.any():
                leaving.append(part if part.alive.all() else part.take(leaves))
            else:
                leaving.append(part.take(leaves))
                staying.append(part.without(older))
        self.recent = staying
        self.horizon = horizon
        if leaving:
            self._keep_latest(_Part.joined(leaving))
        self._compact()

    def _keep_latest(self, leaving: _Part) -> None:
        """Of the rows leaving `recent` and the old rows of the same beneficiaries (every row
        that shares a key with them), keep the latest of each key; mark the rest dropped."""
        people = pd.unique(leaving.hashes.beneficiary)
        touched = [np.flatnonzero(p.alive & p.rows_with("beneficiary", people)) for p in self.old]
        rows = [(part, at) for part, at in zip(self.old, touched, strict=True) if len(at)]
        rows.append((leaving, np.arange(len(leaving.frame))))
        hashes = _Hashes.joined([part.hashes.take(at) for part, at in rows])
        paid_at = np.concatenate([part.paid_at[at] for part, at in rows])
        ids = np.concatenate([part.frame["transaction_id"].to_numpy()[at] for part, at in rows])
        order = np.lexsort((ids, paid_at))
        keep = np.zeros(len(order), bool)
        keep[order] = _latest_of_each(hashes.take(order), lambda: _text(rows, order))
        self.dropped_periods = _merged(self.dropped_periods, hashes.period[~keep])
        start = 0
        for part, at in rows[:-1]:
            part.alive[at[~keep[start : start + len(at)]]] = False
            start += len(at)
        arrived = keep[start:]
        if arrived.any():
            self.old.append(leaving.owned() if arrived.all() else leaving.take(arrived))

    def _compact(self) -> None:
        carried = sum(len(part) for part in self.old)
        held = sum(len(part.frame) for part in self.old)
        if len(self.old) > self.MOST_OLD_PARTS or carried < held * 2 / 3:
            parts, self.old = self.old, []
            self.old = [_Part.gathered(parts)] if carried else []

    def settle(self) -> None:
        """Prune, and hold the old rows and the recent rows as one part each, before live ticks
        ask (a tick then goes over two parts)."""
        self.prune()
        if self.old:
            parts, self.old = self.old, []
            self.old = [_Part.gathered(parts)]
        if self.recent:
            self.recent = [_Part.joined(self.recent)]

    def late(self, batch: pd.DataFrame) -> np.ndarray:
        """Batch rows whose windows reach rows the tail may have dropped."""
        paid_at = batch["paid_at"].to_numpy()
        late = paid_at < self.horizon + LONGEST_WINDOW
        if len(self.dropped_periods):
            keys = self._hashes(batch).period
            by_key = np.argsort(keys)  # sorted needles search faster (see _Part.rows_with)
            found = np.empty(len(keys), np.int64)
            found[by_key] = np.searchsorted(self.dropped_periods, keys[by_key])
            found = np.minimum(found, len(self.dropped_periods) - 1)
            late |= self.dropped_periods[found] == keys
        return late

    def needed(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        """The tail rows of the batch's beneficiaries and accounts, and its agents' recent rows.

        A superset of what features.history_needed would pick (the tail already holds only what
        the windows need), and rows a window does not reach do not change the batch's values.
        """
        asked = self._hashes(batch)
        agents = _lookup(asked.agent)
        agent_since = int(batch["paid_at"].min()) - AGENT_REACH
        # The agents' recent payouts carry values of their own beneficiaries' histories (distance
        # from habit uses the previous payout), so those beneficiaries' rows come along too.
        people = [asked.beneficiary]
        by_agent = []
        for part in self.parts:
            recent = np.flatnonzero(part.alive & (part.paid_at >= agent_since))
            recent = recent[_member(part.hashes.agent[recent], agents)]
            by_agent.append(recent)
            people.append(part.hashes.beneficiary[recent])
        people = _known(np.concatenate(people))
        accounts = _known(asked.account)
        found = []
        for part, payouts in zip(self.parts, by_agent, strict=True):
            near = part.rows_with("beneficiary", people) | part.rows_with("account", accounts)
            near[payouts] = True
            near &= part.alive
            if near.any():
                found.append(part.frame[near])
        if not found:
            return None
        return pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]


def _text(rows: list[tuple[_Part, np.ndarray]], order: np.ndarray) -> pd.DataFrame:
    """The id columns of the rows pruning looks at, in `order` (only after a hash collision)."""
    columns = ["beneficiary_id", "scheme", "account_id"]
    frame = pd.concat([part.frame[columns].iloc[at] for part, at in rows], ignore_index=True)
    return frame.iloc[order].reset_index(drop=True)


def _latest_of_each(hashes: _Hashes, text) -> np.ndarray:
    """Of rows in time order: which are the latest of their (beneficiary, scheme) or of their
    (account, beneficiary). `text()` gives their id columns, used if the hashes collide."""
    groups = (
        (hashes.scheme, hashes.checks[:, 0], ["beneficiary_id", "scheme"]),
        (hashes.pair, hashes.checks[:, 1], ["account_id", "beneficiary_id"]),
    )
    latest = np.zeros(len(hashes.scheme), bool)
    for keys, checks, columns in groups:
        if _hashes_collide(keys, checks):
            latest |= ~text().duplicated(columns, keep="last").to_numpy()
        else:
            latest |= ~pd.Series(keys).duplicated(keep="last").to_numpy()
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
    return hashes[hashes != MISSING]


def _lookup(hashes: np.ndarray) -> pd.Index:
    """The distinct hashes of values that are present, ready for many membership tests."""
    return pd.Index(_known(hashes))


def _member(hashes: np.ndarray, lookup: pd.Index) -> np.ndarray:
    return lookup.get_indexer(hashes) >= 0


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


def feature_chunks(db_path: Path, conn, registry, size: int | None = None):
    """(rows, feature matrix) for every stored transaction, `size` ids at a time (by default
    as `chunk_rows` says for the store's size)."""
    tail = Tail()
    through = 0
    last = store.last_transaction_id(conn)
    previous = None
    for rows in read_chunks(db_path, 0, last, size or chunk_rows(last)):
        # A chunk joins the tail when the next one needs it: after the last chunk, pruning and
        # compacting a tail nothing will read was the training pass's last and largest peak.
        if previous is not None:
            tail.add(previous)
        matrix = features.compute_features(
            rows, registry, needed_history(conn, tail, rows, through)
        )
        yield rows, matrix
        previous = rows
        through = int(rows["transaction_id"].max())
