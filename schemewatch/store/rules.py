"""Auditors' rules: their versions, backtest summaries, hits, and the reads a backtest needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from schemewatch.store.schema import (
    CASES,
    GROUND_TRUTH,
    METADATA,
    RULE_HIT_COLUMNS,
    RULE_HITS,
    RULE_VERSIONS,
    RULES,
    SCORES,
    SCORING_COLUMNS,
    TRANSACTIONS,
    _insert_sql,
    now,
    rows_by_ids,
)

_RULE_FIELDS = (
    "r.rule_id",
    "r.name",
    "r.current_version",
    "r.enabled",
    "r.updated_by",
    "r.updated_at",
    "v.expression",
    "v.description",
    "v.backtest",
    "v.backtested_by",
    "v.backtested_at",
)
STORED_RULE_COLUMNS = tuple(field.split(".")[1] for field in _RULE_FIELDS)
_RULE_SELECT = (
    f"SELECT {', '.join(_RULE_FIELDS)} FROM {RULES} r JOIN {RULE_VERSIONS} v "
    "ON v.rule_id = r.rule_id AND v.version = r.current_version"
)


def get_rule(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    """One rule in its current version (STORED_RULE_COLUMNS), or None."""
    return conn.execute(f"{_RULE_SELECT} WHERE r.name = ?", (name,)).fetchone()


def list_rules(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every rule in its current version, by name."""
    return conn.execute(f"{_RULE_SELECT} ORDER BY r.name").fetchall()


def enabled_rules(conn: sqlite3.Connection) -> list[tuple]:
    """(rule_id, name, version, expression) of every enabled rule, by rule id."""
    sql = (
        f"SELECT r.rule_id, r.name, r.current_version, v.expression FROM {RULES} r "
        f"JOIN {RULE_VERSIONS} v ON v.rule_id = r.rule_id AND v.version = r.current_version "
        "WHERE r.enabled = 1 ORDER BY r.rule_id"
    )
    return [tuple(row) for row in conn.execute(sql)]


def insert_rule(conn, name: str, expression: str, description: str | None, actor: str) -> int:
    """A new, disabled rule at version 1 (inside the caller's write transaction); its id."""
    at = now()
    rule_id = conn.execute(
        f"INSERT INTO {RULES} (name, current_version, enabled, updated_by, updated_at) "
        "VALUES (?, 1, 0, ?, ?) RETURNING rule_id",
        (name, actor, at),
    ).fetchone()[0]
    insert_rule_version(conn, rule_id, 1, expression, description, actor)
    return rule_id


def insert_rule_version(
    conn, rule_id: int, version: int, expression: str, description: str | None, actor: str
) -> None:
    """Add a version and make it current; the rule is disabled until this version is backtested."""
    at = now()
    conn.execute(
        f"INSERT INTO {RULE_VERSIONS} (rule_id, version, expression, description, created_by, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (rule_id, version, expression, description, actor, at),
    )
    conn.execute(
        f"UPDATE {RULES} SET current_version = ?, enabled = 0, updated_by = ?, updated_at = ? "
        "WHERE rule_id = ?",
        (version, actor, at, rule_id),
    )


def set_rule_enabled(conn, rule_id: int, enabled: bool, actor: str) -> None:
    """Switch a rule on or off (inside the caller's write transaction)."""
    conn.execute(
        f"UPDATE {RULES} SET enabled = ?, updated_by = ?, updated_at = ? WHERE rule_id = ?",
        (int(enabled), actor, now(), rule_id),
    )


def save_backtest(conn, rule_id: int, version: int, summary: str, actor: str) -> None:
    """Keep a version's latest backtest summary (JSON) with it."""
    conn.execute(
        f"UPDATE {RULE_VERSIONS} SET backtest = ?, backtested_by = ?, backtested_at = ? "
        "WHERE rule_id = ? AND version = ?",
        (summary, actor, now(), rule_id, version),
    )


def insert_rule_hits(conn, rows) -> None:
    """Hits as (model_version, transaction_id, rule_id, rule_version), in the caller's write."""
    conn.executemany(_insert_sql(RULE_HITS, RULE_HIT_COLUMNS), rows)


def rule_hits(conn, model_version: str) -> list[tuple]:
    """(transaction_id, rule name, rule version) of every hit recorded with a model version."""
    sql = (
        f"SELECT h.transaction_id, r.name, h.rule_version FROM {RULE_HITS} h "
        f"JOIN {RULES} r ON r.rule_id = h.rule_id WHERE h.model_version = ? "
        "ORDER BY h.transaction_id, r.name"
    )
    return [tuple(row) for row in conn.execute(sql, (model_version,))]


def alert_sources(conn, model_version: str, transaction_ids) -> dict[int, tuple[bool, list]]:
    """Per alert: (did the model flag it, names of the rules that hit it) for one model version."""
    template = (
        f"SELECT s.transaction_id, s.score > s.threshold, r.name FROM {SCORES} s "
        f"LEFT JOIN {RULE_HITS} h ON h.model_version = s.model_version "
        "AND h.transaction_id = s.transaction_id "
        f"LEFT JOIN {RULES} r ON r.rule_id = h.rule_id "
        "WHERE s.model_version = ? AND s.transaction_id IN ({marks}) ORDER BY r.name"
    )
    ids = [int(i) for i in transaction_ids]
    out: dict[int, tuple[bool, list]] = {}
    for transaction_id, by_model, name in rows_by_ids(conn, template, ids, (model_version,)):
        _, names = out.setdefault(transaction_id, (bool(by_model), []))
        if name is not None:
            names.append(name)
    return out


# -- what a backtest reads ---------------------------------------------------------------------


def transactions_before(path: Path | str, end: int):
    """Every transaction paid before `end` (scoring columns, state and district), in time order."""
    from schemewatch.store.scoring import read_frame

    sql = (
        f"SELECT {', '.join(SCORING_COLUMNS)}, state, district FROM {TRANSACTIONS} "
        "WHERE paid_at < ? ORDER BY paid_at, transaction_id"
    )
    return read_frame(path, sql, (end,))


def districts_of(conn, transaction_ids) -> dict[int, str]:
    """The district of each given transaction (the scoring read does not carry it)."""
    template = (
        f"SELECT transaction_id, district FROM {TRANSACTIONS} WHERE transaction_id IN ({{marks}})"
    )
    return dict(rows_by_ids(conn, template, [int(i) for i in transaction_ids]))


def backtest_labels(conn, model_version: str | None, transaction_ids) -> list[tuple]:
    """(transaction_id, model alert 0/1/None, disposition, ground-truth typology) per id."""
    template = (
        "SELECT t.transaction_id, s.score > s.threshold, c.disposition, g.typology "
        f"FROM {TRANSACTIONS} t LEFT JOIN {SCORES} s ON s.transaction_id = t.transaction_id "
        "AND s.model_version = ? "
        f"LEFT JOIN {CASES} c ON c.transaction_id = t.transaction_id "
        f"LEFT JOIN {GROUND_TRUTH} g ON g.transaction_id = t.transaction_id "
        "WHERE t.transaction_id IN ({marks})"
    )
    ids = [int(i) for i in transaction_ids]
    return rows_by_ids(conn, template, ids, (model_version or "",))


def period_counts(conn, start: int, end: int) -> dict:
    """Transactions, labelled ground truth, model-independent facts about [start, end)."""
    sql = (
        f"SELECT COUNT(*), COUNT(g.transaction_id) FROM {TRANSACTIONS} t "
        f"LEFT JOIN {GROUND_TRUTH} g ON g.transaction_id = t.transaction_id "
        "WHERE t.paid_at >= ? AND t.paid_at < ?"
    )
    transactions, labelled = conn.execute(sql, (start, end)).fetchone()
    generated = conn.execute(f"SELECT 1 FROM {METADATA} WHERE key = 'generator_seed'").fetchone()
    return {"transactions": transactions, "ground_truth": labelled, "generated": bool(generated)}


def paid_at_range(conn) -> tuple[int | None, int | None]:
    """The first and last payment time stored."""
    return tuple(conn.execute(f"SELECT MIN(paid_at), MAX(paid_at) FROM {TRANSACTIONS}").fetchone())
