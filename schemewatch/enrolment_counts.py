"""The registry's enrolment-context counts for every beneficiary at once (pure; no I/O).

The store can count them per beneficiary with correlated subqueries (`store.registry_context`),
which is right for the few beneficiaries of a live batch but costs four index probes a person
for the whole registry: 2 s at 200,000 beneficiaries, and it grows with the population. Here the
same counts come from sorting: `registry_counts(records)` equals that query, value for value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SAME_HOME_DEGREES = 0.01  # homes within this in latitude and in longitude are the same home
PHONE_OPERATOR_DAYS = 30  # same phone, same operator, enrolled within this many days
OPERATOR_DAYS = 1  # same operator, enrolled within this many days
PAIRS_AT_ONCE = 4_000_000  # pairs of phone sharers compared per step (bounded memory)

COUNT_COLUMNS = (
    "phone_sharers",
    "phone_sharers_at_other_homes",
    "phone_sharers_enrolled_within_30_days",
    "operator_enrolments_same_days",
)


def registry_counts(records: pd.DataFrame) -> pd.DataFrame:
    """COUNT_COLUMNS per row of `records` (beneficiary_id, home_latitude, home_longitude,
    phone_hash, enrolled_by, enrolled_on as 'YYYY-MM-DD'; None where unknown).

    Each count includes the beneficiary; an unknown phone, operator or enrolment date counts 0.
    """
    phone = _codes(records["phone_hash"])
    operator = _codes(records["enrolled_by"])
    day = _days(records["enrolled_on"])
    sharers = _group_sizes(phone)
    same_home = _sharers_at_same_home(
        phone,
        records["home_latitude"].to_numpy(float),
        records["home_longitude"].to_numpy(float),
    )
    both = _codes_of_pairs(phone, operator)
    return pd.DataFrame(
        {
            "phone_sharers": sharers,
            "phone_sharers_at_other_homes": sharers - same_home,
            "phone_sharers_enrolled_within_30_days": _within_days(both, day, PHONE_OPERATOR_DAYS),
            "operator_enrolments_same_days": _within_days(operator, day, OPERATOR_DAYS),
        },
        index=records.index,
    )


def _codes(values: pd.Series) -> np.ndarray:
    """Integer code per value, -1 where missing."""
    return pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64)


def _codes_of_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A code per (first, second) pair, -1 where either is missing."""
    known = (first >= 0) & (second >= 0)
    codes = np.full(len(first), -1, np.int64)
    codes[known] = _codes(pd.Series(first[known] * (second.max() + 1) + second[known]))
    return codes


def _days(dates: pd.Series) -> np.ndarray:
    """Days since 1970 of 'YYYY-MM-DD' text, -1 where missing or not such a date."""
    parsed = pd.to_datetime(dates, format="%Y-%m-%d", errors="coerce")
    days = (parsed - pd.Timestamp("1970-01-01")).dt.days
    return days.fillna(-1).to_numpy(np.int64)


def _group_sizes(code: np.ndarray) -> np.ndarray:
    """How many rows share each row's code (0 where the code is missing)."""
    known = code >= 0
    sizes = np.zeros(len(code), np.int64)
    sizes[known] = np.bincount(code[known])[code[known]]
    return sizes


def _within_days(code: np.ndarray, day: np.ndarray, days: int) -> np.ndarray:
    """Per row: rows with the same code whose day is within `days` of its own (itself included);
    0 where the code or the day is missing."""
    counts = np.zeros(len(code), np.int64)
    known = (code >= 0) & (day >= 0)
    if not known.any():
        return counts
    low = day[known].min()
    span = int(day[known].max() - low) + 2 * days + 1  # keys never reach into the next code
    keys = code[known] * span + (day[known] - low + days)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]  # searched in order: several times faster than in the rows' order
    within = np.searchsorted(ordered, ordered + days, "right") - np.searchsorted(
        ordered, ordered - days, "left"
    )
    counts[np.flatnonzero(known)[order]] = within
    return counts


def _sharers_at_same_home(code: np.ndarray, latitude: np.ndarray, longitude: np.ndarray):
    """Per row: rows with the same code whose home is within SAME_HOME_DEGREES in latitude and
    in longitude (itself included); 0 where the code is missing.

    Compares every pair inside a group, as the per-beneficiary query does, a bounded number of
    pairs at a time.
    """
    counts = np.zeros(len(code), np.int64)
    counts[code >= 0] = 1
    sizes = _group_sizes(code)
    shared = np.flatnonzero(sizes > 1)
    if len(shared) == 0:
        return counts
    shared = shared[np.argsort(code[shared], kind="stable")]  # each group's rows together
    size = sizes[shared]
    first = np.searchsorted(code[shared], code[shared], "left")  # group start, in `shared`
    cumulative = np.cumsum(size)
    begin = 0
    while begin < len(shared):
        limit = cumulative[begin] - size[begin] + PAIRS_AT_ONCE  # pairs before `begin`, + a step
        end = max(int(np.searchsorted(cumulative, limit)), begin + 1)
        counts[shared[begin:end]] = _same_home_pairs(
            shared, first[begin:end], size[begin:end], begin, latitude, longitude
        )
        begin = end
    return counts


def _same_home_pairs(shared, first, size, begin, latitude, longitude) -> np.ndarray:
    """For rows shared[begin:begin + len(size)]: partners in their group at the same home."""
    own = np.repeat(shared[begin : begin + len(size)], size)
    offsets = np.arange(len(own)) - np.repeat(np.cumsum(size) - size, size)
    partner = shared[np.repeat(first, size) + offsets]
    near = (np.abs(latitude[partner] - latitude[own]) <= SAME_HOME_DEGREES) & (
        np.abs(longitude[partner] - longitude[own]) <= SAME_HOME_DEGREES
    )
    return np.add.reduceat(near.astype(np.int64), np.cumsum(size) - size)
