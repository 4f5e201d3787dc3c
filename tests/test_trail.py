"""The tamper-evident trail: chained audit entries and case events, sealed transaction batches.

Each tampering test writes to the SQLite file the way someone with the file would (dropping
triggers where they are in the way) and checks that `verify` names what was changed.
"""

import re
import sqlite3
import subprocess

import pytest
from conftest import PYTHON, ROOT

from schemewatch import store, triage
from schemewatch.store import integrity

pytestmark = pytest.mark.both_engines

GUARDS = (
    "transactions_are_append_only_update",
    "transactions_are_append_only_delete",
    "transactions_are_append_only_replace",
    *(
        f"{table}_{guard}"
        for table in ("audit_log", "case_events", "transaction_batches")
        for guard in (
            "is_append_only_update",
            "is_append_only_delete",
            "is_append_only_replace",
            "entries_are_chained",
        )
    ),
)


def _with_audit_entries(db, count: int = 5) -> None:
    conn = store.open_database(db)
    for n in range(count):
        store.append_audit(conn, "asha", "case note", str(n + 1), None, f"note {n}")
    conn.close()


def _raw(db):
    """A plain connection, as anyone with the file has, with the guarding triggers dropped.

    On PostgreSQL: a superuser session with triggers and foreign keys off (replica role).
    """
    if store.is_postgres_url(db):
        return _RawPostgres(db)
    raw = sqlite3.connect(db, isolation_level=None)
    for name in GUARDS:
        raw.execute(f"DROP TRIGGER IF EXISTS {name}")
    return raw


class _RawPostgres:
    """Runs the SQLite tampering statements below on PostgreSQL, bypassing every trigger."""

    _REPLACE = re.compile(r"INSERT OR REPLACE INTO (\w+) (SELECT .* WHERE (\w+) = (\d+))$", re.S)

    def __init__(self, db):
        import psycopg

        self.conn = psycopg.connect(db.url, autocommit=True)
        self.conn.execute("SET session_replication_role = replica")

    def execute(self, sql: str, params=()):
        if sql.startswith("PRAGMA"):
            return
        replace = self._REPLACE.match(sql)
        if replace:
            table, select, key, value = replace.groups()
            self.conn.execute(f"CREATE TEMP TABLE replacement AS {select}")
            self.conn.execute(f"DELETE FROM {table} WHERE {key} = {value}")
            self.conn.execute(f"INSERT INTO {table} SELECT * FROM replacement")
            self.conn.execute("DROP TABLE replacement")
            return
        self.conn.execute(sql.replace("?", "%s"), params or None)


def _problems(db, **options) -> list[str]:
    conn = store.connect(db, readonly=True)
    try:
        return store.verify(conn, **options).problems
    finally:
        conn.close()


def _verify_cli(db, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "schemewatch", "verify", "--db", str(db), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_an_untouched_database_verifies_ok_from_the_cli(generated_db):
    _with_audit_entries(generated_db)
    result = _verify_cli(generated_db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("OK: 5 audit entries")
    assert "6,000 transactions in" in result.stdout and "last batch hash" in result.stdout


def test_every_stored_transaction_is_in_a_sealed_batch(conn):
    sealed = conn.execute(
        "SELECT SUM(row_count), MIN(first_id), MAX(last_id) FROM transaction_batches"
    ).fetchone()
    assert tuple(sealed) == (6_000, 1, 6_000)
    assert store.verify(conn).ok


@pytest.mark.parametrize(
    ("table", "sql"),
    [
        (
            "transactions",
            "INSERT OR REPLACE INTO transactions SELECT * FROM transactions "
            "WHERE transaction_id = 9",
        ),
        (
            "audit_log",
            "INSERT OR REPLACE INTO audit_log SELECT * FROM audit_log WHERE entry_id = 2",
        ),
        (
            "case_events",
            "INSERT OR REPLACE INTO case_events SELECT * FROM case_events WHERE event_id = 1",
        ),
        (
            "transaction_batches",
            "INSERT OR REPLACE INTO transaction_batches "
            "SELECT * FROM transaction_batches WHERE batch_id = 1",
        ),
    ],
)
def test_insert_or_replace_cannot_silently_rewrite_a_row(generated_db, table, sql):
    _with_audit_entries(generated_db)
    conn = store.open_database(generated_db)
    triage.update_case(conn, 9, "asha", "auditor", note="checked")
    if store.is_postgres(conn):  # PostgreSQL's form of it: an upsert over the same key
        key = re.search(r"WHERE (\w+) =", sql).group(1)
        sql = sql.replace("INSERT OR REPLACE", "INSERT") + (
            f" ON CONFLICT ({key}) DO UPDATE SET {key} = excluded.{key}"
        )
    with pytest.raises(store.driver_errors(), match="append-only"):
        conn.execute(sql)


def test_a_raw_insert_without_hashes_is_refused(generated_db):
    conn = store.open_database(generated_db)
    with pytest.raises(store.driver_errors(), match="write through schemewatch.store"):
        conn.execute("INSERT INTO audit_log (at, actor, action) VALUES (1, 'x', 'y')")


# -- the audit log ---------------------------------------------------------------------------


def _audit_replaced(raw):
    raw.execute(
        "INSERT OR REPLACE INTO audit_log SELECT entry_id, at, 'mallory', action, target, "
        "old_value, new_value, details, previous_hash, hash FROM audit_log WHERE entry_id = 3"
    )


def _audit_updated(raw):
    raw.execute("UPDATE audit_log SET new_value = 'nothing to see' WHERE entry_id = 3")


def _audit_inserted(raw):
    raw.execute(
        "INSERT INTO audit_log SELECT entry_id + 1, at, actor, 'download', target, old_value, "
        "new_value, details, previous_hash, hash FROM audit_log WHERE entry_id = 5"
    )


def _audit_deleted(raw):
    raw.execute("DELETE FROM audit_log WHERE entry_id = 3")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_audit_replaced, "audit entry 3 was changed"),
        (_audit_updated, "audit entry 3 was changed"),
        (_audit_inserted, "audit entry 6 was inserted"),
        (_audit_deleted, "audit entry 3 was removed"),
    ],
)
def test_verify_names_the_audit_entry_that_was_tampered_with(generated_db, tamper, expected):
    _with_audit_entries(generated_db)
    assert _problems(generated_db) == []
    tamper(_raw(generated_db))
    [problem] = _problems(generated_db)
    assert problem.startswith(expected)


def test_the_cli_exits_non_zero_with_one_clear_line(generated_db):
    _with_audit_entries(generated_db)
    _audit_updated(_raw(generated_db))
    result = _verify_cli(generated_db)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: audit entry 3 was changed (it no longer matches its hash)"
    ]


def test_an_anchored_hash_catches_a_truncated_audit_log(generated_db):
    _with_audit_entries(generated_db)
    conn = store.connect(generated_db, readonly=True)
    anchor = store.verify(conn, transactions=False).audit.last_hash
    conn.close()
    _raw(generated_db).execute("DELETE FROM audit_log WHERE entry_id = 5")
    assert _problems(generated_db) == []  # dropping the newest entry leaves a valid chain...
    assert _verify_cli(generated_db, "--anchor", anchor).returncode == 1  # ...but not the anchor
    [problem] = _problems(generated_db, anchor=anchor)
    assert "anchored hash" in problem


# -- transactions ----------------------------------------------------------------------------


def _transaction_replaced(raw):
    raw.execute(
        "INSERT OR REPLACE INTO transactions SELECT transaction_id, external_id, beneficiary_id, "
        "scheme, instalment_period, amount * 10, paid_at, latitude, longitude, account_id, "
        "agent_id, channel, state, district, ingested_at FROM transactions "
        "WHERE transaction_id = 4321"
    )


def _transaction_updated(raw):
    raw.execute("UPDATE transactions SET account_id = 'MULE-0001' WHERE transaction_id = 4321")


def _transaction_inserted(raw):
    raw.execute(
        "INSERT INTO transactions SELECT 6001, 'EXTRA-1', beneficiary_id, scheme, "
        "instalment_period, amount, paid_at, latitude, longitude, account_id, agent_id, "
        "channel, state, district, ingested_at FROM transactions WHERE transaction_id = 10"
    )


def _transaction_deleted(raw):
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute("DELETE FROM transactions WHERE transaction_id = 4321")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_transaction_replaced, "transaction batch 1 (transactions 1-6000) was changed"),
        (_transaction_updated, "transaction batch 1 (transactions 1-6000) was changed"),
        (_transaction_inserted, "transaction 6001 is in no sealed batch"),
        (_transaction_deleted, "transaction 4321 was removed from transaction batch 1"),
    ],
)
def test_verify_names_the_transaction_batch_that_was_tampered_with(generated_db, tamper, expected):
    tamper(_raw(generated_db))
    [problem] = _problems(generated_db)
    assert problem.startswith(expected)


def test_every_writer_seals_its_own_batch_and_the_batches_chain(generated_db, conn):
    first = store.next_transaction_id(conn)
    row = tuple(conn.execute("SELECT * FROM transactions WHERE transaction_id = 1").fetchone())
    for offset in range(3):
        # An int amount and a float paid_at: the seal hashes what SQLite stores, not what it got.
        extra = (first + offset, None, *row[2:5], 2000, float(row[6]), *row[7:])
        with store.write_transaction(conn):
            store.insert_transactions(conn, iter([extra]))
    batches = conn.execute("SELECT batch_id, first_id, last_id FROM transaction_batches").fetchall()
    assert [tuple(b) for b in batches][-3:] == [(i + 2, first + i, first + i) for i in range(3)]
    report = store.verify(conn)
    assert report.ok and report.batches == 4 and report.transactions.rows == 6_003
    _raw(generated_db).execute("DELETE FROM transaction_batches WHERE batch_id = 3")
    assert store.verify(conn).problems == ["transaction batch 3 was removed"]


# -- migration of an existing database ---------------------------------------------------------


def test_migration_chains_existing_entries_turns_cases_into_events_and_seals_rows(tmp_path):
    db = tmp_path / "old.db"
    conn = store.connect(db)
    before = store.MIGRATIONS.index(
        next(m for m in store.MIGRATIONS if m[1] is integrity._migration_trail)
    )
    for version, (_, apply) in enumerate(store.MIGRATIONS[:before], start=1):
        with store.write_transaction(conn):
            apply(conn)
            conn.execute(f"PRAGMA user_version={version}")
    conn.execute(
        "INSERT INTO beneficiaries (beneficiary_id, state, district, home_latitude, "
        "home_longitude, registered_at) VALUES ('B1', 'Bihar', 'Patna', 25.6, 85.1, 0)"
    )
    for tid in (1, 2, 3):
        conn.execute(
            "INSERT INTO transactions (transaction_id, beneficiary_id, scheme, "
            "instalment_period, amount, paid_at, latitude, longitude, state, district, "
            "ingested_at) VALUES (?, 'B1', 'PM_KISAN', '2025-26/P1', 2000, ?, 25.6, 85.1, "
            "'Bihar', 'Patna', 1.5)",
            (tid, 1_700_000_000 + tid),
        )
    conn.execute("INSERT INTO audit_log (at, actor, action) VALUES (1.5, 'asha', 'login')")
    conn.execute("INSERT INTO audit_log (at, actor, action) VALUES (2.5, 'ravi', 'login')")
    conn.execute(
        "INSERT INTO cases VALUES (2, 'ravi', 'confirmed_fraud', 'ring', 'ravi', 3.5), "
        "(3, 'asha', NULL, 'looking', 'asha', 4.5)"
    )
    store.migrate(conn)
    report = store.verify(conn)
    assert report.ok, report.problems
    assert (report.audit.rows, report.cases.rows, report.batches) == (2, 2, 1)
    fraud = triage.load_case(conn, 2)
    assert (fraud.disposition, fraud.disposition_role, fraud.version) == (
        "confirmed_fraud",
        "supervisor",
        1,
    )
    with pytest.raises(triage.NotAllowed, match="set by a supervisor"):
        triage.update_case(conn, 2, "asha", "auditor", disposition="false_positive")
    assert store.fraud_scores(conn, "none") == []  # the cases view serves old queries


def test_sealing_awkward_text_still_verifies_and_moving_text_between_rows_is_caught(
    generated_db, conn
):
    first = store.next_transaction_id(conn)
    row = tuple(conn.execute("SELECT * FROM transactions WHERE transaction_id = 1").fetchone())
    # NUL inside (SQLite keeps it; PostgreSQL text cannot hold it), empty, NULL mixes
    nul = "\x00" if store.is_postgres_url(generated_db) is False else "\x01"
    awkward = [(f"A{nul}B", None), ("", "AG-1"), ("ACC", None)]
    rows = [
        (first + i, None, *row[2:9], account, agent, 7, *row[12:])  # 7: a number as channel
        for i, (account, agent) in enumerate(awkward)
    ]
    with store.write_transaction(conn):
        store.insert_transactions(conn, rows)
    assert store.verify(conn).ok
    raw = _raw(generated_db)
    moved = "UPDATE transactions SET account_id = ? WHERE transaction_id = ?"
    raw.execute(moved, ("A", first))
    raw.execute(moved, (f"{nul}B", first + 1))
    assert store.verify(conn).problems == [
        f"transaction batch 2 (transactions {first}-{first + 2}) was changed: "
        "its rows no longer match its hash"
    ]


def test_verify_names_a_rewritten_case_event_and_the_cases_view_cannot_hide_it(generated_db):
    conn = store.open_database(generated_db)
    triage.update_case(conn, 9, "ravi", "supervisor", disposition="confirmed_fraud")
    triage.update_case(conn, 9, "asha", "auditor", note="seen")
    _raw(generated_db).execute("UPDATE case_events SET disposition = NULL WHERE event_id = 2")
    assert triage.load_case(conn, 9).disposition is None  # the state looks cleared...
    assert _problems(generated_db) == ["case event 2 was changed (it no longer matches its hash)"]


def test_verify_on_a_database_from_before_the_trail_is_one_clear_line(tmp_path):
    db = tmp_path / "old.db"
    conn = store.connect(db)
    before = [apply for _, apply in store.MIGRATIONS].index(integrity._migration_trail)
    for version, (_, apply) in enumerate(store.MIGRATIONS[:before], start=1):
        with store.write_transaction(conn):
            apply(conn)
            conn.execute(f"PRAGMA user_version={version}")
    conn.close()
    result = _verify_cli(db)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: this database has no tamper-evident trail yet")


def test_hashes_follow_the_documented_serialisations(empty_conn):
    """Recomputed here from store/hashing.py's description alone, so the format cannot drift."""
    import hashlib
    import json
    import struct

    store.append_audit(empty_conn, "asha", "case note", "7", None, "ok")
    entry = tuple(empty_conn.execute("SELECT * FROM audit_log").fetchone())
    canonical = json.dumps(list(entry[:8]), ensure_ascii=False, separators=(",", ":"))
    assert entry[8] == "0" * 64
    assert entry[9] == hashlib.sha256(f"{entry[8]}\n{canonical}".encode()).hexdigest()

    conn = empty_conn
    with store.write_transaction(conn):
        store.insert_beneficiaries(
            conn,
            [
                (
                    "B1",
                    "Bihar",
                    "Patna",
                    25.6,
                    85.1,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "active",
                    None,
                    0.0,
                )
            ],  # fmt: skip
        )
        rows = [
            (1, None, "B1", "PM_KISAN", "2025-26/P1", 2000.0, 1_700_000_000, 25.6, 85.1,
             "ACC", None, "BANK", "Bihar", "Patna", 1.5),
            (2, "X-2", "B1", "PM_KISAN", "2025-26/P2", 2000.0, 1_700_000_100, 25.6, 85.1,
             "ACC", "AG1", "BANK", "Bihar", "Patna", 1.5),
        ]  # fmt: skip
        store.insert_transactions(conn, rows)
    batch = tuple(conn.execute("SELECT * FROM transaction_batches").fetchone())
    digest = hashlib.sha256(
        f"{'0' * 64}\n{json.dumps(list(batch[:5]), separators=(',', ':'))}\n".encode()
    )
    for column, kind in zip(zip(*rows, strict=True), integrity.TRANSACTION_KINDS, strict=True):
        if kind == "integer":
            body = struct.pack("<2q", *column)
        elif kind == "real":
            body = struct.pack("<2d", *column)
        elif all(v is None for v in column):
            body = b"N"
        elif any(v is None for v in column):
            mask = bytes(v is None for v in column)
            body = b"M" + mask + "\x00".join(v or "" for v in column).encode()
        else:
            body = b"T" + "\x00".join(column).encode()
        digest.update(struct.pack("<q", len(body)) if kind == "text" else b"")
        digest.update(body)
    assert batch[6] == digest.hexdigest()
