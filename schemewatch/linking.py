"""Linked alerts become one case, so an auditor triages a colluding agent's sweep once.

Two alerts are linked when they share (limits in `LinkLimits`, chosen on benchmark seed 1 only):
- the same beneficiary (any time: one person's alerts belong together);
- the same bank account (any time: a shared account is the ring);
- the same phone in the registry (any time: ghosts share a phone);
- the same payout agent, paid within `agent_window` of another alert at that agent (a night
  sweep is minutes apart; the same agent's alerts weeks apart are separate matters);
- optionally, beneficiaries enrolled by the same operator within `camp_days` of each other (a
  camp). Off by default: on benchmark seed 1 a 3-day camp link merged honest enrolments of busy
  operators into fraud cases (purity 0.86 against 0.95 without it) while ghosts were already
  linked by their shared phone (groups recovered 1.00 against 0.98 without it).
A case is a connected component of these links (single linkage: a chain of payouts each within
the window of the next is one sweep). The monitor calls `link_new_alerts` after each commit of
scores; a new alert that links two cases merges them into the one with the smaller id (a case's
id is its smallest transaction id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from schemewatch import store

DAY = 86_400


@dataclass(frozen=True)
class LinkLimits:
    """How close in time two alerts must be to link through an agent or an enrolment camp."""

    agent_window: int = 3_600  # seconds between payouts at the same agent
    camp_days: int | None = None  # days between enrolments by the same operator; None: no link


def case_of_each(alerts: pd.DataFrame, limits: LinkLimits = LinkLimits()) -> np.ndarray:
    """The case id (smallest transaction id of its component) of each alert (LINK_COLUMNS).

    An alert already in a case (`case_id` set) stands for its whole case: alerts of one case
    are linked, and the component's id is at most the case's id (its smallest transaction id,
    which need not be among the given alerts).
    """
    n = len(alerts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    stored = _stored_cases(alerts)
    pairs = [
        _consecutive(alerts["beneficiary_id"], None, 0),
        _consecutive(alerts["account_id"], None, 0),
        _consecutive(alerts["phone_hash"], None, 0),
        _consecutive(alerts["agent_id"], alerts["paid_at"], limits.agent_window),
        _consecutive(pd.Series(stored).where(~np.isnan(stored)), None, 0),
    ]
    if limits.camp_days is not None:
        days = _enrolment_day(alerts["enrolled_on"])
        pairs.append(_consecutive(alerts["enrolled_by"], days, limits.camp_days))
    left = np.concatenate([p[0] for p in pairs])
    right = np.concatenate([p[1] for p in pairs])
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    ids = alerts["transaction_id"].to_numpy(dtype=np.int64)
    lowest = np.where(np.isnan(stored), ids, np.fmin(ids, stored)).astype(np.int64)
    smallest = pd.Series(lowest).groupby(component).transform("min")
    return smallest.to_numpy(dtype=np.int64)


def _stored_cases(alerts: pd.DataFrame) -> np.ndarray:
    """Each alert's case id so far, NaN where it has none."""
    if "case_id" not in alerts:
        return np.full(len(alerts), np.nan)
    return pd.to_numeric(alerts["case_id"], errors="coerce").to_numpy(dtype=float)


def _consecutive(key: pd.Series, when: pd.Series | None, window: float):
    """Positions of alerts sharing a key (and, with `when`, within `window` of the previous)."""
    present = key.notna().to_numpy() & (key.astype(str) != "").to_numpy()
    if when is not None:
        present &= when.notna().to_numpy()
    positions = np.flatnonzero(present)
    if len(positions) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = key.to_numpy()[positions].astype(str)
    times = np.zeros(len(positions)) if when is None else when.to_numpy(dtype=float)[positions]
    order = np.lexsort((times, keys))
    keys, times, positions = keys[order], times[order], positions[order]
    same = keys[1:] == keys[:-1]
    if when is not None:
        same &= (times[1:] - times[:-1]) <= window
    return positions[:-1][same], positions[1:][same]


def _enrolment_day(enrolled_on: pd.Series) -> pd.Series:
    """Enrolment dates (ISO text) as day numbers; missing or unreadable dates never link."""

    def day(value):
        try:
            return float(date.fromisoformat(str(value)[:10]).toordinal())
        except ValueError:
            return np.nan

    return enrolled_on.map(day)


def link_new_alerts(conn, version: str, limits: LinkLimits = LinkLimits()) -> int:
    """Put this model version's new alerts in cases, merging cases they link; returns moves.

    Reads the new alerts and the alerts already in cases that they can link to (sharing a
    beneficiary, account or phone, or paid at one of their agents within the window), not
    every alert: at millions of rows a live tick would otherwise read a hundred thousand
    alerts to place a handful. Adding alerts never splits a case, so this equals linking every
    alert afresh (tested). With the camp link on, or more new alerts than INCREMENTAL_MOST (a
    backfill), every alert is read. New alerts are those waiting in the store's queue (written
    with their scores); does nothing when none is waiting. The reads are
    inside the write transaction: monitor workers sharing a store (PostgreSQL) link one after
    another, each on what the previous one wrote, never on a stale read.
    """
    if not store.has_unlinked_alerts(conn, version):
        return 0
    with store.write_transaction(conn):
        waiting = _frame(store.unlinked_alerts(conn, version))
        store.forget_linked(conn, version, waiting["transaction_id"].tolist())
        new = waiting[waiting["case_id"].isna()]
        if new.empty:
            return 0
        if limits.camp_days is not None or len(new) > INCREMENTAL_MOST:
            alerts = _frame(store.alerts_for_linking(conn, version))
        elif not store.has_alert_cases(conn, version):
            alerts = new.sort_values("transaction_id", ignore_index=True)  # none to link to yet
        else:
            alerts = pd.concat([new, _frame(_neighbours(conn, version, new, limits))])
            alerts = alerts.sort_values("transaction_id", ignore_index=True)
        cases = case_of_each(alerts, limits)
        stored = _stored_cases(alerts)
        fresh = np.isnan(stored)
        ids = alerts["transaction_id"].to_numpy(dtype=np.int64)
        store.assign_alert_cases(
            conn, version, zip(ids[fresh].tolist(), cases[fresh].tolist(), strict=True)
        )
        moved = ~fresh & (stored != cases)
        merges = dict(
            zip(stored[moved].astype(np.int64).tolist(), cases[moved].tolist(), strict=True)
        )
        changed = int(fresh.sum())
        for case_id, into in merges.items():
            changed += store.move_case(conn, version, case_id, into)
    return changed


INCREMENTAL_MOST = 20_000


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=store.LINK_COLUMNS)


def _neighbours(conn, version: str, new: pd.DataFrame, limits: LinkLimits) -> list[tuple]:
    """The alerts already in cases that the new alerts can link to."""

    def values(column: str) -> list[str]:
        return sorted({str(v) for v in new[column].dropna().tolist() if str(v) != ""})

    at_agents = new["paid_at"][new["agent_id"].notna()]
    return store.linked_alerts_near(
        conn,
        version,
        beneficiaries=values("beneficiary_id"),
        accounts=values("account_id"),
        phones=values("phone_hash"),
        agents=values("agent_id"),
        since=float(at_agents.min()) - limits.agent_window if len(at_agents) else 0.0,
        until=float(at_agents.max()) + limits.agent_window if len(at_agents) else 0.0,
    )
