"""Transaction features: the one pure implementation shared by training and scoring.

Input frames in, a float32 matrix out; no I/O, no TensorFlow. Behavioural features look only at
the past as of each payment: rows paid earlier, or at the same second but ingested earlier (smaller
transaction_id). `compute_features(batch, registry, history)` gives, for the rows of `batch`, the
same values as computing over the whole table, provided `history` holds the earlier rows the
windows reach (see `HISTORY_NEEDS`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from schemewatch import schemes
from schemewatch.geography import haversine_km
from schemewatch.store import SCORING_COLUMNS
from schemewatch.text_hashes import arrow_text, id_hashes

HOUR, DAY = 3600, schemes.DAY
# Behaviour is measured over several windows, so a pattern shows whatever its pace.
BENEFICIARY_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
AGENT_WINDOWS = {"10min": 600, "1h": HOUR, "24h": DAY}
AGENT_DISTINCT_WINDOWS = ("10min", "1h")
NO_PREVIOUS_PAYMENT_DAYS = 400.0
MAX_AGENT_WINDOW_ROWS = 64
# Hours of daylight trade around this local hour count as day; "hours into the night" grows
# continuously beyond them (0 at 19:00 and 07:00, 6 at 01:00).
MIDDAY, HALF_DAY_HOURS = 13.0, 6.0
PARALLEL_ROWS = 100_000  # below this, a second thread costs more than it saves

# What history an incremental batch needs for exact parity with a whole-table computation.
HISTORY_NEEDS = {
    "beneficiary": NO_PREVIOUS_PAYMENT_DAYS * DAY,  # days since last payment looks back this far
    "account": None,  # all earlier payments into the batch's accounts
    "period": None,  # all earlier payments of the batch's (beneficiary, scheme, period)
    "agent": max(AGENT_WINDOWS.values()),
}

TRANSACTION_FIELDS = SCORING_COLUMNS

FEATURE_NAMES = (
    "log_amount",
    "amount_to_entitlement",
    "amount_off_whole_instalments",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "position_in_period",
    "off_cycle",
    "log_days_before_window",
    "log_days_after_window",
    "km_from_home",
    "km_from_home_or_usual_payout",
    *(f"log_scheme_payments_{w}" for w in BENEFICIARY_WINDOWS),
    *(f"log_scheme_amount_{w}" for w in BENEFICIARY_WINDOWS),
    "earlier_payments_same_period",
    "earlier_payments_same_period_same_amount",
    "period_amount_to_entitlement",
    "period_paid_over_entitlement",
    "log_days_since_last_payment",
    "log_beneficiaries_on_account",
    "paid_into_new_account",
    *(f"log_agent_payments_{w}" for w in AGENT_WINDOWS),
    *(f"log_agent_beneficiaries_{w}" for w in AGENT_DISTINCT_WINDOWS),
    "agent_night_hours_10min",
    "log_agent_km_10min",
    "log_days_period_began_after_death",
    "log_beneficiaries_sharing_phone",
    "share_of_phone_users_at_other_homes",
    "phone_sharers_enrolled_within_30_days",
    "log_operator_enrolments_same_days",
    *(f"channel_{c.lower()}" for c in schemes.CHANNELS),
    *(f"scheme_{s.lower()}" for s in schemes.SCHEME_CODES),
)
# Context only: they tell the model what kind of payment a row is, and are not anomalies in
# themselves (an unusual channel for a scheme is not a fraud typology).
CONTEXT_FEATURES = tuple(n for n in FEATURE_NAMES if n.startswith(("channel_", "scheme_")))
# The scheme one-hot: what is normal is judged among payments of the same scheme.
SEGMENT_FEATURES = tuple(n for n in FEATURE_NAMES if n.startswith("scheme_"))


@dataclass(frozen=True)
class Registry:
    """What scoring may know about beneficiaries: homes, entitlements, deaths, enrolment context.

    `beneficiaries` is indexed by beneficiary_id with columns home_latitude, home_longitude,
    death_time (unix seconds or NaN), phone_sharers, phone_sharers_at_other_homes (same phone,
    another home), phone_sharers_enrolled_within_30_days (same phone, same operator, enrolled
    within 30 days), operator_enrolments_same_days (same operator, within a day);
    `entitlements` has the same index, with one column per scheme code (NaN: none).
    """

    beneficiaries: pd.DataFrame
    entitlements: pd.DataFrame
    # 64-bit hashes of the beneficiaries' ids, in their order (computed unless given: 2 s for
    # 2 million people, so build_registry hands over the ones it already made)
    hashed_ids: pd.Index | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.hashed_ids is None:
            object.__setattr__(
                self, "hashed_ids", pd.Index(id_hashes(self.beneficiaries.index.array))
            )

    def positions_of(self, ids) -> np.ndarray:
        """Where each beneficiary id is in the registry's rows (-1: not there).

        Looked up by 64-bit hash (a lookup table of the ids themselves holds a Python string per
        person: ~300 MB for 2 million), then the text of every hit is compared; after a hash
        collision, by the text."""
        if self.hashed_ids.is_unique:
            positions = self.hashed_ids.get_indexer(id_hashes(ids))
            hits = np.flatnonzero(positions >= 0)
            known = arrow_text(self.beneficiaries.index.array).take(positions[hits])
            if pc.all(pc.equal(known, arrow_text(ids).take(hits))).as_py() is not False:
                return positions
        return self.beneficiaries.index.get_indexer(ids)


@dataclass(frozen=True)
class _Codes:
    """Integer codes of the frame's text columns, computed once (text comparisons are slow)."""

    beneficiary: np.ndarray
    beneficiaries: pd.api.extensions.ExtensionArray  # unique ids, indexed by code
    scheme: np.ndarray
    schemes: np.ndarray
    period: np.ndarray
    periods: np.ndarray
    account: np.ndarray
    has_account: np.ndarray
    agent: np.ndarray
    has_agent: np.ndarray
    channel: np.ndarray
    channels: np.ndarray


def _codes(frame: pd.DataFrame, time_order: np.ndarray | None = None) -> _Codes:
    """Codes of the frame's text columns; with `time_order`, of the frame's rows in that order
    (numbered as if the frame had been put in that order first: reordering the frame's text
    columns cost more than renumbering the codes)."""

    def factorize(column):
        if column in _ID_COLUMNS:
            codes, uniques = factorize_ids(frame[column])
        else:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
            codes, uniques = codes.astype(np.int64), np.asarray(uniques, dtype=object)
        return (codes, uniques) if time_order is None else _renumbered(codes[time_order], uniques)

    beneficiary, beneficiaries = factorize("beneficiary_id")
    scheme, scheme_names = factorize("scheme")
    period, periods = factorize("instalment_period")
    account, _ = factorize("account_id")
    agent, _ = factorize("agent_id")
    channel, channels = factorize("channel")
    return _Codes(
        beneficiary,
        beneficiaries,
        scheme,
        scheme_names,
        period,
        periods,
        np.where(account < 0, account.max() + 1, account),
        account >= 0,
        np.where(agent < 0, agent.max() + 1, agent),
        agent >= 0,
        channel,
        channels,
    )


def factorize_ids(column: pd.Series) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray]:
    """Codes of an id column as pd.factorize gives them (in order of first appearance, -1 where
    missing) and the distinct ids (Arrow text).

    Grouped by 64-bit hash (factorizing the text itself was a tenth of a 10-million-row feature
    pass), then every row's text is compared with the first of its group: after a collision,
    the text is factorized."""
    text = arrow_text(column)
    hashes = id_hashes(text)
    codes, _ = pd.factorize(hashes)
    firsts = np.flatnonzero(~pd.Series(codes).duplicated().to_numpy())
    valid = np.asarray(text.is_valid())
    first_of_row = firsts[codes]
    alike = pc.all(pc.equal(text, text.take(first_of_row)))
    if alike.as_py() is False or not np.array_equal(valid, valid[first_of_row]):
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        return codes.astype(np.int64), pd.array(uniques, dtype=column.dtype)
    if not valid.all():  # the missing values' group: code -1, the codes after it one less
        missing = codes[np.flatnonzero(~valid)[0]]
        codes = np.where(codes == missing, -1, codes - (codes > missing))
        firsts = np.delete(firsts, missing)
    return codes.astype(np.int64), pd.array(text.take(firsts), dtype=column.dtype)


_ID_COLUMNS = ("beneficiary_id", "account_id", "agent_id")
# What the features read of a row besides its text columns (which only _codes reads).
_NUMBERS = ("transaction_id", "paid_at", "amount", "latitude", "longitude")


def _renumbered(codes: np.ndarray, uniques) -> tuple[np.ndarray, object]:
    """Codes renumbered in order of first appearance (-1, missing, kept), with their values."""
    present = codes >= 0
    numbered, seen = pd.factorize(codes[present])
    renumbered = np.full(len(codes), -1, np.int64)
    renumbered[present] = numbered
    return renumbered, uniques[seen]


def compute_features(
    batch: pd.DataFrame, registry: Registry, history: pd.DataFrame | None = None
) -> np.ndarray:
    """Feature matrix (len(batch) x len(FEATURE_NAMES), float32) for the rows of `batch`."""
    if len(batch) == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    frame = batch if history is None or len(history) == 0 else _with_history(batch, history)
    time_order = np.lexsort((frame["transaction_id"].to_numpy(), frame["paid_at"].to_numpy()))
    if np.array_equal(time_order, np.arange(len(frame))):
        codes = _codes(frame)
    else:
        codes = _codes(frame, time_order)
        frame = frame[list(_NUMBERS)].iloc[time_order]
    frame = frame.reset_index(drop=True)
    pick = _positions_of(batch, frame)
    people = _people(registry, codes)
    # Values of the row alone only for the batch's rows (the history's are not returned), but
    # distance from home for every row: the agent windows add up the history's.
    row = _row_features(
        frame[["paid_at", "amount"]].iloc[pick], _codes_of_rows(codes, pick), people
    )
    km_from_home = _km_from_home(frame, codes, people)
    row["km_from_home"] = km_from_home[pick]
    entitlement = np.ones(len(frame))
    entitlement[pick] = row["entitlement"]
    paid_at = frame["paid_at"].to_numpy(np.int64)
    order = _grouped_order(codes.beneficiary, paid_at)
    same = codes.beneficiary[order][1:] == codes.beneficiary[order][:-1]
    scheme_order = _grouped_order(codes.beneficiary * len(codes.schemes) + codes.scheme, paid_at)
    near_home_or_habit, has_habit = _near_home_or_habit(
        frame, codes, (order, scheme_order), km_from_home
    )
    # Someone with no earlier payout has no habit to depart from yet: km_from_home speaks for them.
    row["km_from_home_or_usual_payout"] = np.where(has_habit, near_home_or_habit, 0.0)[pick]
    by_beneficiary = partial(
        _beneficiary_windows, frame, codes, entitlement, order, same, scheme_order, pick
    )
    by_account_and_agent = partial(_account_and_agent, frame, codes, near_home_or_habit, pick)
    if len(frame) >= PARALLEL_ROWS:
        # The two groups are independent, and numpy sorts without holding the interpreter.
        with ThreadPoolExecutor(max_workers=1) as helper:
            later = helper.submit(by_account_and_agent)
            parts = (by_beneficiary(), later.result())
    else:
        parts = (by_beneficiary(), by_account_and_agent())
    every_row = {**parts[0], **parts[1]}
    # Column-major on purpose: the detector reads it in row chunks, copying each chunk once.
    matrix = np.empty((len(pick), len(FEATURE_NAMES)), np.float32, order="F")
    for index, name in enumerate(FEATURE_NAMES):
        matrix[:, index] = row[name] if name in row else every_row[name]
    return matrix


class _BatchRows(dict):
    """Feature values of the batch's rows only: each array computed over the batch and its
    history is cut to the batch's rows as it is stored, so the history's values of every
    feature are never held at once (a few hundred MB a chunk at millions of rows)."""

    def __init__(self, pick: np.ndarray):
        super().__init__()
        self.pick = pick
        self.in_order = np.array_equal(pick, np.arange(len(pick)))

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values)
        if not (self.in_order and len(values) == len(self.pick)):  # else: every row, in order
            values = values[self.pick]
        super().__setitem__(name, values)


def _positions_of(batch: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Where each batch row (in batch order) is in `frame`."""
    ids = frame["transaction_id"].to_numpy()
    wanted = batch["transaction_id"].to_numpy()
    if len(ids) == len(wanted) and np.array_equal(ids, wanted):
        return np.arange(len(ids))
    return pd.Series(np.arange(len(frame)), index=ids).loc[wanted].to_numpy()


def _codes_of_rows(codes: _Codes, rows: np.ndarray) -> _Codes:
    """The codes of some rows (the same uniques)."""
    per_row = ("beneficiary", "scheme", "period", "account", "has_account", "agent", "has_agent")
    return replace(
        codes, channel=codes.channel[rows], **{name: getattr(codes, name)[rows] for name in per_row}
    )


@dataclass(frozen=True)
class _People:
    """Registry values of the frame's distinct beneficiaries (codes.beneficiaries order)."""

    positions: np.ndarray  # in the registry; -1 if not there
    values: dict  # column -> array (NaN where unknown)
    entitlements: dict  # scheme -> array (NaN where none)


def _people(registry: Registry, codes: _Codes) -> _People:
    positions = registry.positions_of(codes.beneficiaries)
    return _People(
        positions,
        _rows_at(registry.beneficiaries, positions),
        _rows_at(registry.entitlements, positions),
    )


def _km_from_home(frame: pd.DataFrame, codes: _Codes, people: _People) -> np.ndarray:
    home_lat = people.values["home_latitude"][codes.beneficiary]
    home_lon = people.values["home_longitude"][codes.beneficiary]
    km = haversine_km(
        frame["latitude"].to_numpy(float), frame["longitude"].to_numpy(float), home_lat, home_lon
    )
    return np.nan_to_num(km, nan=0.0)


def _with_history(batch: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    earlier = history[~history["transaction_id"].isin(batch["transaction_id"])]
    return pd.concat([earlier[list(TRANSACTION_FIELDS)], batch[list(TRANSACTION_FIELDS)]])


def _row_features(frame: pd.DataFrame, codes: _Codes, people: _People) -> dict:
    paid_at = frame["paid_at"].to_numpy(np.int64)
    amount = frame["amount"].to_numpy(float)
    entitlement = _entitlements(people, codes)
    entitlement = np.where(np.isfinite(entitlement) & (entitlement > 0), entitlement, amount)
    hour = schemes.local_hours(paid_at)
    weekday = (((paid_at + schemes.IST_OFFSET_SECONDS) // DAY) + 3) % 7
    start, end, period_began = _period_windows(codes)
    death = people.values["death_time"][codes.beneficiary]
    # The instalment for the month someone died in is owed, even if paid after the death; an
    # instalment for a period that began after the death is not.
    after_death = np.where(np.isfinite(death), np.maximum(0.0, (period_began - death) / DAY), 0.0)

    def count(column, unknown=1):  # registry counts per row (the beneficiary alone if unknown)
        return np.nan_to_num(people.values[column], nan=unknown)[codes.beneficiary]

    channel_names = np.append(codes.channels, "").astype(str)[codes.channel]
    scheme_names = codes.schemes.astype(str)[codes.scheme]
    ratio = amount / entitlement
    return {
        "entitlement": entitlement,
        "log_amount": np.log1p(amount),
        "amount_to_entitlement": ratio,
        # Arrears are whole instalments; an inflated amount rarely is.
        "amount_off_whole_instalments": np.where(ratio > 1, np.abs(ratio - np.round(ratio)), 0.0),
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "weekday_sin": np.sin(2 * np.pi * weekday / 7),
        "weekday_cos": np.cos(2 * np.pi * weekday / 7),
        "position_in_period": np.clip((paid_at - start) / np.maximum(end - start, 1), -1.0, 2.0),
        "off_cycle": ((paid_at < start) | (paid_at >= end)).astype(float),
        "log_days_before_window": np.log1p(np.maximum(0, start - paid_at) / DAY),
        "log_days_after_window": np.log1p(np.maximum(0, paid_at - end) / DAY),
        "log_days_period_began_after_death": np.log1p(after_death),
        "log_beneficiaries_sharing_phone": np.log1p(count("phone_sharers")),
        # A share, not a count: three people at three addresses on one phone are as odd as thirty.
        "share_of_phone_users_at_other_homes": count("phone_sharers_at_other_homes", 0)
        / np.maximum(count("phone_sharers"), 1),
        "phone_sharers_enrolled_within_30_days": count("phone_sharers_enrolled_within_30_days"),
        "log_operator_enrolments_same_days": np.log1p(count("operator_enrolments_same_days")),
        **{f"channel_{c.lower()}": (channel_names == c).astype(float) for c in schemes.CHANNELS},
        **{f"scheme_{c.lower()}": (scheme_names == c).astype(float) for c in schemes.SCHEME_CODES},
    }


def _rows_at(table: pd.DataFrame, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Each column of `table` at row positions (NaN where a position is -1: not in the table)."""
    missing = positions < 0
    taken = {}
    for column in table.columns:
        values = table[column].to_numpy(float)[np.maximum(positions, 0)]
        values[missing] = np.nan
        taken[column] = values
    return taken


def _entitlements(people: _People, codes: _Codes) -> np.ndarray:
    """Each row's entitlement for its scheme (NaN if none is known)."""
    unknown = np.full(len(people.positions), np.nan)
    per_person = np.column_stack(
        [people.entitlements.get(scheme, unknown) for scheme in codes.schemes]
        + [unknown]  # rows without a scheme
    )
    return per_person[codes.beneficiary, codes.scheme]


def _period_windows(codes: _Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the payment window's start and end, and the start of the period itself."""
    combined = codes.scheme * len(codes.periods) + codes.period
    uniques, inverse = np.unique(combined, return_inverse=True)
    pairs = [
        (codes.schemes[u // len(codes.periods)], codes.periods[u % len(codes.periods)])
        for u in uniques
    ]
    bounds = np.array(
        [(*schemes.period_window(*pair), schemes.period_start(*pair)) for pair in pairs],
        dtype=np.int64,
    ).reshape(len(pairs), 3)
    return bounds[inverse, 0], bounds[inverse, 1], bounds[inverse, 2]


def _grouped_order(keys: np.ndarray, paid_at: np.ndarray) -> np.ndarray:
    """Order rows by key, then time (frame is already in (time, id) order, so stable keeps id).

    The frame is in time order already, so a stable sort on the key alone gives the same order.
    """
    return np.argsort(keys, kind="stable")


class _TimeWindows:
    """Rows grouped by key, in time order within a key (`order`): for each window, where each
    row's window begins, found once and shared by every count and sum over that window."""

    def __init__(self, keys: np.ndarray, paid_at: np.ndarray, order: np.ndarray):
        self.order = order
        self.keys = keys[order].astype(np.int64)
        self.composite = self.keys * (1 << 34) + paid_at[order]
        self.position = np.arange(len(order))
        self._firsts: dict[int, np.ndarray] = {}

    def first(self, window: int) -> np.ndarray:
        """Per ordered row: the first ordered row of its key paid within `window` seconds."""
        if window not in self._firsts:
            self._firsts[window] = np.searchsorted(
                self.composite, self.composite - window, side="left"
            )
        return self._firsts[window]

    def counts(self, window: int) -> np.ndarray:
        """Earlier rows with the same key paid within `window` seconds before (row order)."""
        counts = np.empty(len(self.order))
        counts[self.order] = self.position - self.first(window)
        return counts

    def sums(self, values: np.ndarray, windows) -> list[np.ndarray]:
        """Per window: the sum of `values` over those earlier rows (row order)."""
        cumulative = np.concatenate([[0.0], np.cumsum(values[self.order])])
        out = []
        for window in windows:
            sums = np.empty(len(self.order))
            sums[self.order] = cumulative[self.position] - cumulative[self.first(window)]
            out.append(sums)
        return out


def _beneficiary_windows(
    frame: pd.DataFrame, codes: _Codes, entitlement: np.ndarray, order, same, scheme_order, pick
) -> _BatchRows:
    """Windows over the beneficiary's own payments; `same`: row in `order` has the previous's id;
    `scheme_order`: rows by (beneficiary, scheme), then time; `pick`: the batch's rows."""
    paid_at = frame["paid_at"].to_numpy(np.int64)
    amount = frame["amount"].to_numpy(float)
    beneficiary = codes.beneficiary
    out = _BatchRows(pick)
    # Per scheme: a pension and a crop instalment drawn in one visit are everyday; the same
    # scheme paid again within hours or days is not.
    beneficiary_scheme = beneficiary * len(codes.schemes) + codes.scheme
    windows = _TimeWindows(beneficiary_scheme, paid_at, scheme_order)
    amounts = windows.sums(amount, BENEFICIARY_WINDOWS.values())
    for (name, window), sums in zip(BENEFICIARY_WINDOWS.items(), amounts, strict=True):
        out[f"log_scheme_payments_{name}"] = np.log1p(windows.counts(window))
        out[f"log_scheme_amount_{name}"] = np.log1p(sums)
    scheme_period = codes.scheme * len(codes.periods) + codes.period
    period_key = beneficiary * (len(codes.schemes) * len(codes.periods)) + scheme_period
    out["earlier_payments_same_period"] = _earlier_in_group(period_key)
    amount_code = pd.factorize(amount)[0]
    period_code = pd.factorize(period_key)[0]
    out["earlier_payments_same_period_same_amount"] = _earlier_in_group(
        period_code * (int(amount_code.max(initial=0)) + 1) + amount_code
    )
    paid_in_period = pd.Series(amount).groupby(period_key).cumsum().to_numpy()
    out["period_amount_to_entitlement"] = paid_in_period / entitlement
    # Zero for almost every honest payment, whatever the scheme: the basic audit rule, one-sided.
    out["period_paid_over_entitlement"] = np.maximum(0.0, paid_in_period / entitlement - 1)
    gap = np.full(len(order), NO_PREVIOUS_PAYMENT_DAYS)
    previous_gap = (paid_at[order][1:] - paid_at[order][:-1]) / DAY
    gap_sorted = np.r_[
        NO_PREVIOUS_PAYMENT_DAYS, np.where(same, previous_gap, NO_PREVIOUS_PAYMENT_DAYS)
    ]
    gap[order] = np.minimum(gap_sorted, NO_PREVIOUS_PAYMENT_DAYS)
    out["log_days_since_last_payment"] = np.log1p(gap)
    out["paid_into_new_account"] = _into_new_account(codes, order, same, previous_gap)
    return out


def _into_new_account(codes: _Codes, order, same, previous_gap) -> np.ndarray:
    """1 where a beneficiary paid before (within the history) is paid into an account never used
    for them before: money diverted to someone else's account. Going back to an old one is not."""
    pair = codes.account * (len(codes.beneficiaries) + 1) + codes.beneficiary
    first_on_account = ~pd.Series(pair).duplicated().to_numpy()
    paid_before = np.zeros(len(order), bool)
    paid_before[order[1:]] = same & (previous_gap < NO_PREVIOUS_PAYMENT_DAYS)
    return (first_on_account & paid_before & codes.has_account).astype(float)


def _near_home_or_habit(frame, codes: _Codes, orders, km_from_home) -> tuple[np.ndarray, ...]:
    """Distance from home or from the places the beneficiary usually draws money, whichever is
    nearest: the previous payout, and the previous payout of the same scheme; and whether there
    was any earlier payout to compare with.

    A migrant who draws one scheme's money in a distant city and the others at home is near their
    habit for each; a payout far from home and from every earlier payout place is not. Earlier
    payouts count only within NO_PREVIOUS_PAYMENT_DAYS (the history a batch is given).
    """
    beneficiary_order, scheme_order = orders
    keys = (codes.beneficiary, codes.beneficiary * len(codes.schemes) + codes.scheme)
    lat, lon = frame["latitude"].to_numpy(float), frame["longitude"].to_numpy(float)
    paid_at = frame["paid_at"].to_numpy(np.int64)
    nearest = np.asarray(km_from_home, float).copy()
    has_habit = np.zeros(len(nearest), bool)
    for order, key in zip((beneficiary_order, scheme_order), keys, strict=True):
        now, before = order[1:], order[:-1]
        known = (key[now] == key[before]) & (
            paid_at[now] - paid_at[before] < NO_PREVIOUS_PAYMENT_DAYS * DAY
        )
        from_previous = np.full(len(order), np.inf)
        from_previous[now[known]] = haversine_km(
            lat[now[known]], lon[now[known]], lat[before[known]], lon[before[known]]
        )
        nearest = np.fmin(nearest, from_previous)
        has_habit[now[known]] = True
    return nearest, has_habit


def _earlier_in_group(keys: np.ndarray) -> np.ndarray:
    """How many earlier rows (frame order) share this row's key."""
    order, starts = _runs(keys)
    counts = np.empty(len(keys))
    counts[order] = np.arange(len(keys)) - starts
    return counts


def _running_total_in_group(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row: the sum of `values` (integers) over earlier rows sharing its key, and its own."""
    order, starts = _runs(keys)
    running = np.cumsum(values[order])
    before = np.r_[0, running][starts]  # the running total where this row's group began
    totals = np.empty(len(keys), running.dtype)
    totals[order] = running - before
    return totals


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by key (frame order kept within a key), and for each ordered row the
    position where its key's run begins (numpy's sort: pandas' groupby spent most of its time
    re-coding keys that are integers already)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, np.repeat(starts, np.diff(np.r_[starts, len(keys)]))


def _account_and_agent(
    frame: pd.DataFrame, codes: _Codes, km_from_habit: np.ndarray, pick
) -> _BatchRows:
    paid_at = frame["paid_at"].to_numpy(np.int64)
    beneficiary = codes.beneficiary
    account = codes.account
    first_time_on_account = ~pd.Series(account * (len(frame) + 1) + beneficiary).duplicated()
    distinct = _running_total_in_group(account, first_time_on_account.to_numpy(np.int64))
    distinct = np.where(codes.has_account, distinct, 1)
    has_agent = codes.has_agent
    agent = codes.agent
    agent_order = _grouped_order(agent, paid_at)
    out = _BatchRows(pick)
    out["log_beneficiaries_on_account"] = np.log1p(distinct)
    night = hours_into_night(schemes.local_hours(paid_at))
    short = AGENT_WINDOWS["10min"]
    windows = _TimeWindows(agent, paid_at, agent_order)
    counts = windows.counts(short)
    (night_sum,) = windows.sums(night, [short])
    (km_sum,) = windows.sums(km_from_habit, [short])
    out["log_agent_payments_10min"] = np.log1p(np.where(has_agent, counts, 0))
    for name, window in AGENT_WINDOWS.items():
        if name != "10min":
            longer = windows.counts(window)
            out[f"log_agent_payments_{name}"] = np.log1p(np.where(has_agent, longer, 0))
    distinct_windows = [AGENT_WINDOWS[w] for w in AGENT_DISTINCT_WINDOWS]
    for name, values in zip(
        AGENT_DISTINCT_WINDOWS,
        _distinct_in_window(windows, beneficiary, distinct_windows),
        strict=True,
    ):
        out[f"log_agent_beneficiaries_{name}"] = np.log1p(np.where(has_agent, values, 0))
    # Continuous measures of what makes a sweep suspicious: how deep into the night, and how far
    # from home (or habit) the people paid out in the last 10 minutes live, this payout included.
    out["agent_night_hours_10min"] = np.where(has_agent, night_sum + night, 0)
    out["log_agent_km_10min"] = np.log1p(np.where(has_agent, km_sum + km_from_habit, 0))
    return out


def hours_into_night(hour: np.ndarray) -> np.ndarray:
    """Hours beyond the working day (0 from 07:00 to 19:00 local, up to 6 at 01:00)."""
    from_midday = np.abs((np.asarray(hour, float) - MIDDAY + 12) % 24 - 12)
    return np.maximum(0.0, from_midday - HALF_DAY_HOURS)


def _distinct_in_window(by_key: _TimeWindows, values, windows) -> list[np.ndarray]:
    """Per window: distinct `values` among this row and earlier rows of the same key within it.

    Looks back at most MAX_AGENT_WINDOW_ROWS rows (a cap far above any honest count).
    """
    order = by_key.order
    firsts = [by_key.first(w) for w in windows]
    n = len(order)
    previous_same = _previous_index(by_key.keys * (n + 1) + values[order])
    positions = np.arange(n)
    distinct = [np.zeros(n) for _ in windows]
    widest = int(np.argmax(windows))
    for offset in range(min(MAX_AGENT_WINDOW_ROWS, n)):
        j = positions - offset
        if not (j >= firsts[widest]).any():
            break
        previous = previous_same[np.maximum(j, 0)]
        for first, counts in zip(firsts, distinct, strict=True):
            counts += (j >= first) & (previous < first)
    out = []
    for counts in distinct:
        unsorted = np.empty(n)
        unsorted[order] = counts
        out.append(unsorted)
    return out


def _previous_index(pairs: np.ndarray) -> np.ndarray:
    """For each position, the index of the previous position holding the same value (or -1)."""
    order = np.argsort(pairs, kind="stable")
    previous = np.full(len(pairs), -1)
    same = pairs[order][1:] == pairs[order][:-1]
    previous[order[1:][same]] = order[:-1][same]
    return previous


REGISTRY_COLUMNS = (
    "beneficiary_id",
    "home_latitude",
    "home_longitude",
    "date_of_death",
    "phone_sharers",
    "phone_sharers_at_other_homes",
    "phone_sharers_enrolled_within_30_days",
    "operator_enrolments_same_days",
)
_REGISTRY_COUNTS = REGISTRY_COLUMNS[4:]


def _own_copy(ids: pd.Index) -> pd.Index:
    """The ids in buffers of their own: ids read through Arrow share the buffer of everything read
    with them (2 million people's whole records, ~200 MB, kept alive by their ids)."""
    if ids.dtype == object:  # Python strings: nothing shared
        return ids
    text = arrow_text(ids.array)
    return pd.Index(pd.array(text.take(np.arange(len(text))), dtype=ids.dtype), name=ids.name)


def build_registry(context: pd.DataFrame, entitlements: pd.DataFrame) -> Registry:
    """Registry from per-beneficiary context (REGISTRY_COLUMNS) and enrolment entitlements."""
    people = context.set_index("beneficiary_id")
    death = pd.to_datetime(people["date_of_death"], errors="coerce")
    death_time = (
        death - pd.Timestamp("1970-01-01")
    ).dt.total_seconds() - schemes.IST_OFFSET_SECONDS
    frame = pd.DataFrame(
        {
            "home_latitude": people["home_latitude"].to_numpy(float),
            "home_longitude": people["home_longitude"].to_numpy(float),
            "death_time": death_time.to_numpy(float),
            **{name: people[name].to_numpy(float) for name in _REGISTRY_COUNTS},
        },
        index=_own_copy(people.index),
    )
    entitled = entitlements["beneficiary_id"]
    people_only = Registry(frame, pd.DataFrame())
    positions = people_only.positions_of(entitled)
    if (positions < 0).any():  # entitled but without context: NaN context, as if not found
        unknown = pd.Index(pd.unique(entitled[positions < 0].to_numpy(object)))
        people_only = Registry(frame.reindex(frame.index.append(unknown)), pd.DataFrame())
        frame, positions = people_only.beneficiaries, people_only.positions_of(entitled)
    # A table of people x schemes filled by position (a pivot held every id as a Python string).
    scheme, names = pd.factorize(entitlements["scheme"], sort=True)
    table = np.full((len(frame), len(names)), np.nan)
    table[positions, scheme] = entitlements["entitlement"].to_numpy(float)
    by_scheme = pd.DataFrame(table, index=frame.index, columns=pd.Index(list(names), name="scheme"))
    return Registry(frame, by_scheme, people_only.hashed_ids)


def history_needed(batch: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """The rows of `earlier` that the batch's windows reach (see HISTORY_NEEDS)."""
    since = int(batch["paid_at"].min())
    by_beneficiary = _isin(earlier["beneficiary_id"], batch["beneficiary_id"]) & (
        earlier["paid_at"].to_numpy() >= since - HISTORY_NEEDS["beneficiary"]
    )
    by_account = _isin(earlier["account_id"], batch["account_id"])
    by_agent = _isin(earlier["agent_id"], batch["agent_id"]) & (
        earlier["paid_at"].to_numpy() >= since - HISTORY_NEEDS["agent"]
    )
    period = ["beneficiary_id", "scheme", "instalment_period"]
    same_period = pd.MultiIndex.from_frame(earlier[period]).isin(
        pd.MultiIndex.from_frame(batch[period])
    )
    return earlier[by_beneficiary | by_account | by_agent | same_period]


def _isin(column: pd.Series, values: pd.Series) -> np.ndarray:
    """column.isin(values) ignoring missing values, through object arrays (pandas' isin on
    Arrow strings converts every value in Python: most of a 3M-row backfill's history reads)."""
    wanted = values.dropna().unique()
    return (
        column.astype(object).isin(np.asarray(wanted, dtype=object)).to_numpy()
        & column.notna().to_numpy()
    )
