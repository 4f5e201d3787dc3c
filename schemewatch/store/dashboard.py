"""Read queries behind the dashboard: filters, KPIs, trends, the alert queue, downloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemewatch.store.schema import (
    ALERT_CASES,
    ALERT_OVERVIEW,
    BENEFICIARIES,
    CASES,
    DAILY_SUMMARY,
    DISPOSITIONS,
    RULE_HITS,
    SCORES,
    TRANSACTIONS,
)

# -- dashboard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardFilters:
    """What an auditor narrowed the view to; None or empty means no restriction."""

    start: int | None = None  # paid_at >= start
    end: int | None = None  # paid_at < end
    schemes: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    status: str = "all"  # all | alerts | open | claimed | DISPOSITIONS...
    risk_min: float | None = None  # risk 0-100 (schemewatch.risk); rows without risk drop out
    risk_max: float | None = None
    typologies: tuple[str, ...] = ()  # the typology an alert most resembles
    search: str | None = None  # beneficiary id or transaction id


def _in(column: str, values: tuple) -> tuple[str, list]:
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


def _dashboard_where(filters: DashboardFilters, version: str | None) -> tuple[str, str, list]:
    """FROM ... WHERE for transactions joined with their score and case; all values bound."""
    clauses, params = [], []
    source = (
        f"{TRANSACTIONS} t LEFT JOIN {SCORES} s "
        "ON s.transaction_id = t.transaction_id AND s.model_version = ? "
        f"LEFT JOIN {CASES} c ON c.transaction_id = t.transaction_id"
    )
    params.append(version or "")
    plain, plain_params = _plain_clauses(filters)
    clauses += plain
    params += plain_params
    for column, values in (("t.district", filters.districts), ("s.resembles", filters.typologies)):
        if values:
            clause, extra = _in(column, values)
            clauses.append(clause)
            params += extra
    if filters.risk_min is not None:
        clauses.append("s.risk >= ?")
        params.append(filters.risk_min)
    if filters.risk_max is not None:
        clauses.append("s.risk <= ?")
        params.append(filters.risk_max)
    status = filters.status
    if status != "all":
        clauses.append("s.is_alert = 1")
    if status == "open":
        clauses.append("c.disposition IS NULL")
    elif status == "claimed":
        clauses.append("c.claimed_by IS NOT NULL AND c.disposition IS NULL")
    elif status in DISPOSITIONS:
        clauses.append("c.disposition = ?")
        params.append(status)
    if filters.search:
        clauses.append("(t.beneficiary_id = ? OR CAST(t.transaction_id AS TEXT) = ?)")
        params += [filters.search.strip(), filters.search.strip()]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return source, where, params


def dashboard_kpis(conn, filters: DashboardFilters, version: str | None) -> dict:
    """Transactions, alerts, amount at risk and open cases under the filters."""
    source, where, params = _dashboard_where(filters, version)
    sql = (
        "SELECT COUNT(*), COALESCE(SUM(s.is_alert), 0), "
        "COALESCE(SUM(CASE WHEN s.is_alert = 1 THEN t.amount END), 0), "
        f"COUNT(s.transaction_id) FROM {source}{where}"
    )
    total, alerts, at_risk, scored = conn.execute(sql, params).fetchone()
    return {
        "transactions": total,
        "alerts": alerts,
        "amount_at_risk": at_risk,
        "open_cases": open_case_count(conn, filters, version),
        "scored": scored,
    }


def open_case_count(conn, filters: DashboardFilters, version: str | None) -> int:
    """Cases (linked alerts, `alert_cases`) with an alert under the filters nobody has closed.

    A case counts once however many alerts it holds; an alert not linked yet is a case of its
    own. Only alerts are read (the partial index on alerts), not the whole transactions table.
    """
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = (
        f"SELECT COUNT(DISTINCT {_CASE_ID}) FROM {_with_cases(source)}{where} "
        "AND c.disposition IS NULL"
    )
    return conn.execute(sql, params).fetchone()[0]


_IST_DAY = "date(t.paid_at + 19800, 'unixepoch')"


def dashboard_daily(conn, filters: DashboardFilters, version: str | None) -> list[tuple]:
    """(IST day, transactions, alerts) per day."""
    source, where, params = _dashboard_where(filters, version)
    sql = (
        f"SELECT {_IST_DAY} AS day, COUNT(*), COALESCE(SUM(s.is_alert), 0) "
        f"FROM {source}{where} GROUP BY day ORDER BY day"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def dashboard_alerts_by(conn, filters: DashboardFilters, version: str | None, column: str):
    """(value, transactions, alerts) grouped by scheme or state."""
    if column not in ("scheme", "state"):
        raise ValueError(column)
    source, where, params = _dashboard_where(filters, version)
    sql = (
        f"SELECT t.{column}, COUNT(*), COALESCE(SUM(s.is_alert), 0) FROM {source}{where} "
        f"GROUP BY t.{column} ORDER BY 3 DESC"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def dashboard_hour_weekday(conn, filters: DashboardFilters, version: str | None) -> list[tuple]:
    """(weekday 0=Sunday, IST hour, alerts) for alerts under the filters."""
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = (
        "SELECT CAST(strftime('%w', t.paid_at + 19800, 'unixepoch') AS INTEGER) AS weekday, "
        "CAST(strftime('%H', t.paid_at + 19800, 'unixepoch') AS INTEGER) AS hour, COUNT(*) "
        f"FROM {source}{where} GROUP BY weekday, hour"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def replace_status(filters: DashboardFilters, status: str) -> DashboardFilters:
    """The same filters with another alert status."""
    from dataclasses import replace

    return replace(filters, status=status)


def _alerts_only(filters: DashboardFilters) -> DashboardFilters:
    """Alerts only, unless the filters already ask for a narrower alert status."""
    return filters if filters.status != "all" else replace_status(filters, "alerts")


ALERT_QUEUE_FIELDS = (
    "t.transaction_id",
    "t.beneficiary_id",
    "t.scheme",
    "t.amount",
    "t.paid_at",
    "t.state",
    "t.district",
    "t.latitude",
    "t.longitude",
    "t.account_id",
    "t.agent_id",
    "t.channel",
    "s.score",
    "s.risk",
    "s.reasons",
    "s.resembles",
    "c.claimed_by",
    "c.disposition",
    "c.note",
    "s.combined_risk",
)
ALERT_QUEUE_COLUMNS = tuple(field.split(".")[1] for field in ALERT_QUEUE_FIELDS)


# The queue's order: the combined risk (autoencoder and re-ranker, schemewatch.reranker) where
# the model version has one, else the autoencoder's risk, else (rows scored before risk existed)
# the raw score. Within one model version every row has a combined risk or none does.
def _alert_order(scores: str = "s", payments: str = "t") -> str:
    """The queue's order over the tables aliased `scores` and `payments`."""
    return (
        f"{scores}.combined_risk IS NULL, {scores}.combined_risk DESC, {scores}.risk IS NULL, "
        f"{scores}.risk DESC, {scores}.score DESC, {payments}.transaction_id"
    )


_ALERT_ORDER = _alert_order()


def dashboard_alerts(conn, filters: DashboardFilters, version: str | None, limit: int = 200):
    """Alerts under the filters, highest combined risk (else risk) first (ALERT_QUEUE_COLUMNS).

    Rows scored before risk existed have none: they come after the others, by score.
    """
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = (
        f"SELECT {', '.join(ALERT_QUEUE_FIELDS)} FROM {source}{where} "
        f"ORDER BY {_ALERT_ORDER} LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, [*params, limit])]


def iter_dashboard_rows(conn, filters: DashboardFilters, version: str | None):
    """Every transaction under the filters with its score and case, streamed (for downloads)."""
    source, where, params = _dashboard_where(filters, version)
    sql = f"SELECT {', '.join(DOWNLOAD_FIELDS)} FROM {source}{where} ORDER BY t.transaction_id"
    cursor = conn.execute(sql, params)
    while batch := cursor.fetchmany(5000):
        yield from (tuple(r) for r in batch)


DOWNLOAD_FIELDS = (
    "t.transaction_id",
    "t.beneficiary_id",
    "t.scheme",
    "t.instalment_period",
    "t.amount",
    "t.paid_at",
    "t.state",
    "t.district",
    "t.latitude",
    "t.longitude",
    "t.account_id",
    "t.agent_id",
    "t.channel",
    "s.score",
    "s.risk",
    "s.is_alert",
    "s.resembles",
    "c.disposition",
)
DOWNLOAD_COLUMNS = tuple(field.split(".")[1] for field in DOWNLOAD_FIELDS)


def beneficiary_timeline(conn, beneficiary_id: str, limit: int = 100) -> list[tuple]:
    """(transaction_id, scheme, period, amount, paid_at, account, agent) newest first."""
    sql = (
        "SELECT transaction_id, scheme, instalment_period, amount, paid_at, account_id, agent_id "
        f"FROM {TRANSACTIONS} WHERE beneficiary_id = ? ORDER BY paid_at DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (beneficiary_id, limit))]


def account_sharers(conn, account_id: str, limit: int = 50) -> list[tuple]:
    """(beneficiary_id, payments) of everyone paid into an account."""
    sql = (
        f"SELECT beneficiary_id, COUNT(*) FROM {TRANSACTIONS} WHERE account_id = ? "
        "GROUP BY beneficiary_id ORDER BY 2 DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (account_id, limit))]


def agent_recent_payouts(conn, agent_id: str, before: int, limit: int = 50) -> list[tuple]:
    """(transaction_id, beneficiary_id, amount, paid_at) of an agent's payouts up to a time."""
    sql = (
        "SELECT transaction_id, beneficiary_id, amount, paid_at FROM "
        f"{TRANSACTIONS} WHERE agent_id = ? AND paid_at <= ? ORDER BY paid_at DESC LIMIT ?"
    )
    return [tuple(r) for r in conn.execute(sql, (agent_id, before, limit))]


# Distinct values read from an index one value at a time (a "loose index scan": each step
# seeks the next value after the last one), instead of reading every row: 3.5 s at 10 million
# payments and 2 million beneficiaries, a few milliseconds this way.
_PRESENT_SCHEMES = f"""
WITH RECURSIVE present(scheme) AS (
    SELECT MIN(scheme) FROM {TRANSACTIONS}
    UNION ALL
    SELECT (SELECT MIN(scheme) FROM {TRANSACTIONS} WHERE scheme > p.scheme)
    FROM present p WHERE p.scheme IS NOT NULL
)
SELECT scheme FROM present WHERE scheme IS NOT NULL"""
# Each state's districts: the state's first, then the next after each (the same index seek).
_PRESENT_DISTRICTS = f"""
WITH RECURSIVE states(state) AS (
    SELECT MIN(state) FROM {BENEFICIARIES}
    UNION ALL
    SELECT (SELECT MIN(state) FROM {BENEFICIARIES} WHERE state > s.state)
    FROM states s WHERE s.state IS NOT NULL
), present(state, district) AS (
    SELECT s.state, (SELECT MIN(b.district) FROM {BENEFICIARIES} b WHERE b.state = s.state)
    FROM states s WHERE s.state IS NOT NULL
    UNION ALL
    SELECT p.state, (SELECT MIN(b.district) FROM {BENEFICIARIES} b
        WHERE b.state = p.state AND b.district > p.district)
    FROM present p WHERE p.district IS NOT NULL
)
SELECT state, district FROM present WHERE district IS NOT NULL ORDER BY state, district"""


def filter_options(conn) -> dict:
    """Schemes present in the transactions; states and (state, district) pairs of the registry."""
    schemes = [r[0] for r in conn.execute(_PRESENT_SCHEMES)]
    pairs = conn.execute(_PRESENT_DISTRICTS).fetchall()
    return {
        "schemes": schemes,
        "states": sorted({p[0] for p in pairs}),
        "districts": [tuple(p) for p in pairs],
    }


def summary_answers(filters: DashboardFilters) -> bool:
    """True when the daily summary alone can answer these filters."""
    return not (
        filters.districts
        or filters.typologies
        or filters.search
        or filters.risk_min is not None
        or filters.risk_max is not None
        or filters.status not in ("all", "alerts")
    )


def _summary_where(filters: DashboardFilters, version: str) -> tuple[str, list]:

    def day(seconds: int) -> str:
        return datetime.fromtimestamp(seconds + 19_800, UTC).strftime("%Y-%m-%d")

    clauses, params = ["model_version = ?"], [version]
    if filters.start is not None:
        clauses.append("day >= ?")
        params.append(day(filters.start))
    if filters.end is not None:
        clauses.append("day < ?")
        params.append(day(filters.end))
    for column, values in (("scheme", filters.schemes), ("state", filters.states)):
        if values:
            clause, extra = _in(column, values)
            clauses.append(clause)
            params += extra
    return " WHERE " + " AND ".join(clauses), params


def _counted(filters: DashboardFilters) -> str:
    """The summary column that counts the rows the filters keep: with the status filter on
    alerts, only alerts are kept (as in the direct queries), else every scored payment."""
    return "alerts" if filters.status == "alerts" else "transactions"


def summary_kpis(conn, filters: DashboardFilters, version: str) -> dict:
    """KPIs from the daily summary; open cases from the alerts (1% of rows) and their cases."""
    where, params = _summary_where(filters, version)
    sql = (
        f"SELECT COALESCE(SUM({_counted(filters)}), 0), COALESCE(SUM(alerts), 0), "
        f"COALESCE(SUM(alert_amount), 0) FROM {DAILY_SUMMARY}{where}"
    )
    total, alerts, at_risk = conn.execute(sql, params).fetchone()
    return {
        "transactions": total,
        "alerts": alerts,
        "amount_at_risk": at_risk,
        "open_cases": summary_open_case_count(conn, filters, version),
        "scored": total,
    }


def _plain_clauses(filters: DashboardFilters, table: str = "t") -> tuple[list[str], list]:
    """Date, scheme and state conditions on `table` (transactions or ALERT_OVERVIEW)."""
    clauses, params = [], []
    for column, value in (("paid_at >= ?", filters.start), ("paid_at < ?", filters.end)):
        if value is not None:
            clauses.append(f"{table}.{column}")
            params.append(value)
    for column, values in (("scheme", filters.schemes), ("state", filters.states)):
        if values:
            clause, extra = _in(f"{table}.{column}", values)
            clauses.append(clause)
            params += extra
    return clauses, params


def summary_daily(conn, filters: DashboardFilters, version: str) -> list[tuple]:
    """(day, transactions, alerts) from the daily summary."""
    where, params = _summary_where(filters, version)
    sql = (
        f"SELECT day, SUM({_counted(filters)}), SUM(alerts) FROM {DAILY_SUMMARY}{where} "
        f"GROUP BY day HAVING SUM({_counted(filters)}) > 0 ORDER BY day"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def summary_alerts_by(conn, filters: DashboardFilters, version: str, column: str) -> list[tuple]:
    """(scheme or state, transactions, alerts) from the daily summary."""
    if column not in ("scheme", "state"):
        raise ValueError(column)
    where, params = _summary_where(filters, version)
    sql = (
        f"SELECT {column}, SUM({_counted(filters)}), SUM(alerts) FROM {DAILY_SUMMARY}{where} "
        f"GROUP BY {column} HAVING SUM({_counted(filters)}) > 0 ORDER BY 3 DESC"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


# -- the overview's alerts from ALERT_OVERVIEW (the filters the daily summary answers) ---------


def _alert_overview_where(filters: DashboardFilters, version: str) -> tuple[str, list]:
    """WHERE on ALERT_OVERVIEW a: the model version, dates, schemes and states."""
    clauses, params = _plain_clauses(filters, "a")
    return " WHERE " + " AND ".join(["a.model_version = ?", *clauses]), [version, *params]


def summary_open_case_count(conn, filters: DashboardFilters, version: str) -> int:
    """open_case_count, reading the alerts from ALERT_OVERVIEW instead of every payment."""
    where, params = _alert_overview_where(filters, version)
    sql = (
        f"SELECT COUNT(DISTINCT COALESCE(ac.case_id, a.transaction_id)) FROM {ALERT_OVERVIEW} a "
        f"LEFT JOIN {CASES} c ON c.transaction_id = a.transaction_id "
        f"LEFT JOIN {ALERT_CASES} ac ON ac.model_version = a.model_version "
        f"AND ac.transaction_id = a.transaction_id{where} AND c.disposition IS NULL"
    )
    return conn.execute(sql, params).fetchone()[0]


def summary_hour_weekday(conn, filters: DashboardFilters, version: str) -> list[tuple]:
    """dashboard_hour_weekday from ALERT_OVERVIEW."""
    where, params = _alert_overview_where(filters, version)
    sql = (
        "SELECT CAST(strftime('%w', a.paid_at + 19800, 'unixepoch') AS INTEGER) AS weekday, "
        "CAST(strftime('%H', a.paid_at + 19800, 'unixepoch') AS INTEGER) AS hour, COUNT(*) "
        f"FROM {ALERT_OVERVIEW} a{where} GROUP BY weekday, hour"
    )
    return [tuple(r) for r in conn.execute(sql, params)]


def summary_alerts(conn, filters: DashboardFilters, version: str, limit: int = 200):
    """dashboard_alerts: the first `limit` alerts chosen in ALERT_OVERVIEW, then only theirs
    read from the payments, scores and cases."""
    where, params = _alert_overview_where(filters, version)
    sql = (
        f"SELECT {', '.join(ALERT_QUEUE_FIELDS)} FROM ("
        f"SELECT a.transaction_id FROM {ALERT_OVERVIEW} a{where} "
        f"ORDER BY {_alert_order('a', 'a')} LIMIT ?) first_alerts "
        f"JOIN {TRANSACTIONS} t ON t.transaction_id = first_alerts.transaction_id "
        f"JOIN {SCORES} s ON s.model_version = ? AND s.transaction_id = t.transaction_id "
        f"LEFT JOIN {CASES} c ON c.transaction_id = t.transaction_id ORDER BY {_ALERT_ORDER}"
    )
    return [tuple(r) for r in conn.execute(sql, [*params, limit, version])]


# -- cases: linked alerts (schemewatch.linking) -----------------------------------------------

# An alert the monitor has not linked yet is a case of its own, under its transaction id.
_CASE_ID = "COALESCE(ac.case_id, t.transaction_id)"
CASE_QUEUE_COLUMNS = (
    "case_id",
    "alerts",
    "amount",
    "risk",
    "score",
    "first_paid_at",
    "last_paid_at",
    "beneficiaries",
    "accounts",
    "agents",
    "open",
    "reasons",
    "resembles",
    "combined_risk",
    "by_model",
    "by_rule",
    "rule_cases",
)
_CASE_ORDER = (
    "combined_risk IS NULL, combined_risk DESC, risk IS NULL, risk DESC, score DESC, case_id"
)


def _with_cases(source: str) -> str:
    return (
        f"{source} LEFT JOIN {ALERT_CASES} ac ON ac.model_version = s.model_version "
        "AND ac.transaction_id = t.transaction_id"
    )


def dashboard_cases(conn, filters: DashboardFilters, version: str | None, limit: int = 200):
    """Cases of alerts under the filters, highest combined risk (else risk) first.

    Returns CASE_QUEUE_COLUMNS rows: the top `limit` cases, and also, so that no alert an
    auditors' rule raised sits unseen below the line, up to `limit` more cases holding a rule's
    alert (`by_rule` = 1), in the same order; `by_model` = 1 when the model flagged one of its
    alerts. `rule_cases` is how many cases under the filters
    hold a rule's alert, listed or not. Sizes, amounts and people count the case's alerts that
    match the filters; the reasons and typology are those of its highest-scoring alert. People,
    accounts and agents are JSON lists.
    """
    source, where, params = _dashboard_where(_alerts_only(filters), version)
    sql = f"""
WITH members AS (
    SELECT {_CASE_ID} AS case_id, t.amount, t.paid_at, t.beneficiary_id, t.account_id,
        t.agent_id, s.risk, s.combined_risk, s.score, s.reasons, s.resembles, c.disposition,
        CASE WHEN s.score > s.threshold THEN 1 ELSE 0 END AS by_model,
        CASE WHEN EXISTS (SELECT 1 FROM {RULE_HITS} h WHERE h.model_version = s.model_version
            AND h.transaction_id = t.transaction_id) THEN 1 ELSE 0 END AS by_rule,
        ROW_NUMBER() OVER (PARTITION BY {_CASE_ID} ORDER BY s.score DESC) AS strongest
    FROM {_with_cases(source)}{where}
), grouped AS (
    SELECT case_id, COUNT(*) AS alerts, SUM(amount) AS amount, MAX(risk) AS risk,
        MAX(score) AS score, MIN(paid_at) AS first_paid_at, MAX(paid_at) AS last_paid_at,
        json_group_array(DISTINCT beneficiary_id) AS beneficiaries,
        json_group_array(DISTINCT account_id) AS accounts,
        json_group_array(DISTINCT agent_id) AS agents,
        SUM(CASE WHEN disposition IS NULL THEN 1 ELSE 0 END) AS open,
        MAX(CASE WHEN strongest = 1 THEN reasons END) AS reasons,
        MAX(CASE WHEN strongest = 1 THEN resembles END) AS resembles,
        MAX(combined_risk) AS combined_risk, MAX(by_model) AS by_model, MAX(by_rule) AS by_rule
    FROM members GROUP BY case_id
), ranked AS (
    SELECT *, ROW_NUMBER() OVER (ORDER BY {_CASE_ORDER}) AS place,
        ROW_NUMBER() OVER (PARTITION BY by_rule ORDER BY {_CASE_ORDER}) AS place_of_kind,
        SUM(by_rule) OVER () AS rule_cases
    FROM grouped
)
SELECT {", ".join(CASE_QUEUE_COLUMNS)} FROM ranked
WHERE place <= ? OR (by_rule = 1 AND place_of_kind <= ?) ORDER BY place"""
    return [tuple(r) for r in conn.execute(sql, [*params, limit, limit])]


def dashboard_case_alerts(conn, version: str | None, case_id: int) -> list[tuple]:
    """Every alert of one case, whatever the filters, in queue order (ALERT_QUEUE_COLUMNS)."""
    source, where, params = _dashboard_where(DashboardFilters(status="alerts"), version)
    sql = (
        f"SELECT {', '.join(ALERT_QUEUE_FIELDS)} FROM {_with_cases(source)}{where} "
        f"AND {_CASE_ID} = ? ORDER BY {_ALERT_ORDER}"
    )
    return [tuple(r) for r in conn.execute(sql, [*params, case_id])]
