"""Reads and writes behind linking alerts into cases (schemewatch.linking)."""

from __future__ import annotations

from schemewatch.store.schema import (
    ALERT_CASES,
    ALERTS_TO_LINK,
    BENEFICIARIES,
    SCORES,
    TRANSACTIONS,
)

# What links two alerts, per alert; case_id is NULL for an alert not yet in a case.
LINK_COLUMNS = (
    "transaction_id",
    "paid_at",
    "beneficiary_id",
    "account_id",
    "agent_id",
    "phone_hash",
    "enrolled_by",
    "enrolled_on",
    "case_id",
)
_LINK_FIELDS = (
    "t.transaction_id",
    "t.paid_at",
    "t.beneficiary_id",
    "t.account_id",
    "t.agent_id",
    "b.phone_hash",
    "b.enrolled_by",
    "b.enrolled_on",
    "ac.case_id",
)


def _alerts_sql(extra: str) -> str:
    """Alerts of a version with what links them."""
    return (
        f"SELECT {', '.join(_LINK_FIELDS)} FROM {SCORES} s "
        f"LEFT JOIN {ALERT_CASES} ac ON ac.model_version = s.model_version "
        "AND ac.transaction_id = s.transaction_id "
        f"JOIN {TRANSACTIONS} t ON t.transaction_id = s.transaction_id "
        f"JOIN {BENEFICIARIES} b ON b.beneficiary_id = t.beneficiary_id "
        f"WHERE s.model_version = ? AND s.is_alert = 1{extra}"
    )


def has_unlinked_alerts(conn, version: str) -> bool:
    """True when some alert of this model version waits to be put in a case."""
    sql = f"SELECT 1 FROM {ALERTS_TO_LINK} WHERE model_version = ? LIMIT 1"
    return conn.execute(sql, (version,)).fetchone() is not None


def has_alert_cases(conn, version: str) -> bool:
    """True when some alert of this model version is already in a case."""
    sql = f"SELECT 1 FROM {ALERT_CASES} WHERE model_version = ? LIMIT 1"
    return conn.execute(sql, (version,)).fetchone() is not None


def alerts_for_linking(conn, version: str) -> list[tuple]:
    """Every alert of a model version with what links it (LINK_COLUMNS), by transaction id."""
    return [tuple(r) for r in conn.execute(_alerts_sql(" ORDER BY t.transaction_id"), (version,))]


def unlinked_alerts(conn, version: str) -> list[tuple]:
    """The alerts of a model version waiting for a case (LINK_COLUMNS; case_id None, or the
    case of one already placed), by transaction id: read from ALERTS_TO_LINK, not by looking
    up the case of every alert."""
    sql = (
        f"SELECT {', '.join(_LINK_FIELDS)} FROM {ALERTS_TO_LINK} q "
        f"JOIN {TRANSACTIONS} t ON t.transaction_id = q.transaction_id "
        f"JOIN {BENEFICIARIES} b ON b.beneficiary_id = t.beneficiary_id "
        f"LEFT JOIN {ALERT_CASES} ac ON ac.model_version = q.model_version "
        "AND ac.transaction_id = q.transaction_id "
        "WHERE q.model_version = ? ORDER BY t.transaction_id"
    )
    return [tuple(r) for r in conn.execute(sql, (version,))]


def forget_linked(conn, version: str, transaction_ids: list[int]) -> None:
    """These alerts have their case: they no longer wait in ALERTS_TO_LINK."""
    conn.executemany(
        f"DELETE FROM {ALERTS_TO_LINK} WHERE model_version = ? AND transaction_id = ?",
        [(version, i) for i in transaction_ids],
    )


# Where linked_alerts_near starts for each kind of link: the index that finds the few payments
# sharing it. Left to itself SQLite starts from the version's scores, all of them (seconds at
# 10 million rows, against milliseconds).
_NEAR = {
    "beneficiary": (
        f"{TRANSACTIONS} t INDEXED BY idx_transactions_beneficiary_paid_at",
        "t.beneficiary_id IN ({})",
    ),
    "account": (
        f"{TRANSACTIONS} t INDEXED BY idx_transactions_account_paid_at",
        "t.account_id IN ({})",
    ),
    "phone": (
        f"{BENEFICIARIES} b INDEXED BY idx_beneficiaries_phone "
        f"JOIN {TRANSACTIONS} t INDEXED BY idx_transactions_beneficiary_paid_at "
        "ON t.beneficiary_id = b.beneficiary_id",
        "b.phone_hash IN ({})",
    ),
    "agent": (
        f"{TRANSACTIONS} t INDEXED BY idx_transactions_agent_paid_at",
        "t.agent_id IN ({}) AND t.paid_at BETWEEN ? AND ?",
    ),
}


def _near_sql(kind: str, count: int) -> str:
    source, condition = _NEAR[kind]
    people = f" JOIN {BENEFICIARIES} b ON b.beneficiary_id = t.beneficiary_id"
    people = "" if kind == "phone" else people
    return (
        f"SELECT {', '.join(_LINK_FIELDS)} FROM {source}{people} "
        f"JOIN {SCORES} s ON s.model_version = ? AND s.transaction_id = t.transaction_id "
        f"AND s.is_alert = 1 "
        f"JOIN {ALERT_CASES} ac ON ac.model_version = s.model_version "
        "AND ac.transaction_id = t.transaction_id "
        f"WHERE {condition.format(', '.join('?' * count))}"
    )


def linked_alerts_near(
    conn,
    version: str,
    *,
    beneficiaries: list[str],
    accounts: list[str],
    phones: list[str],
    agents: list[str],
    since: float,
    until: float,
) -> list[tuple]:
    """Alerts already in a case (LINK_COLUMNS) that share a beneficiary, account or phone with
    the given ones, or were paid at one of the agents between since and until."""
    found: dict[int, tuple] = {}
    for kind, values, extra in (
        ("beneficiary", beneficiaries, ()),
        ("account", accounts, ()),
        ("phone", phones, ()),
        ("agent", agents, (since, until)),
    ):
        for start in range(0, len(values), 500):
            part = list(values[start : start + 500])
            for row in conn.execute(_near_sql(kind, len(part)), (version, *part, *extra)):
                found[row[0]] = tuple(row)
    return [found[key] for key in sorted(found)]


def move_case(conn, version: str, case_id: int, into: int) -> int:
    """Every alert of one case joins another (a merge); returns how many moved."""
    return conn.execute(
        f"UPDATE {ALERT_CASES} SET case_id = ? WHERE model_version = ? AND case_id = ?",
        (into, version, case_id),
    ).rowcount


def assign_alert_cases(conn, version: str, memberships) -> None:
    """Put alerts in cases: (transaction_id, case_id) pairs, new or moved by a merge."""
    conn.executemany(
        f"INSERT INTO {ALERT_CASES} (model_version, transaction_id, case_id) VALUES (?, ?, ?) "
        "ON CONFLICT (model_version, transaction_id) DO UPDATE SET case_id = excluded.case_id",
        [(version, tid, case) for tid, case in memberships],
    )


def alert_case_members(conn, version: str) -> list[tuple]:
    """(transaction_id, case_id) of every alert of a model version that is in a case."""
    sql = f"SELECT transaction_id, case_id FROM {ALERT_CASES} WHERE model_version = ?"
    return [tuple(r) for r in conn.execute(sql, (version,))]
