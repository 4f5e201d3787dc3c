import sqlite3

import pytest

from schemewatch import store
from schemewatch.errors import DatabaseError, SchemaVersionError


def test_new_database_gets_every_table_wal_and_current_version(tmp_path):
    conn = store.open_database(tmp_path / "new.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        store.TRANSACTIONS,
        store.BENEFICIARIES,
        store.ENROLMENTS,
        store.PAYOUT_AGENTS,
        store.GROUND_TRUTH,
        store.METADATA,
    } <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version(conn) == store.SCHEMA_VERSION


def test_migrating_twice_changes_nothing(tmp_path):
    conn = store.open_database(tmp_path / "db.db")
    before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert store.migrate(conn) == store.SCHEMA_VERSION
    after = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert [tuple(r) for r in before] == [tuple(r) for r in after]


def test_indexes_cover_time_scheme_state_beneficiary_account_agent(tmp_path):
    conn = store.open_database(tmp_path / "db.db")
    indexed = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='transactions'"
        )
    }
    for column in ("paid_at", "scheme", "state", "beneficiary", "account", "agent"):
        assert any(column in name for name in indexed), column


def test_readers_keep_a_small_page_cache_and_writers_a_large_one(generated_db):
    reader, writer = store.connect(generated_db, readonly=True), store.connect(generated_db)
    assert reader.execute("PRAGMA cache_size").fetchone()[0] == -store.READER_CACHE_KIB
    assert writer.execute("PRAGMA cache_size").fetchone()[0] == -store.WRITER_CACHE_KIB
    reader.close()
    writer.close()


def test_database_from_newer_schemewatch_is_refused(tmp_path):
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={store.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        store.open_database(path)


def test_transactions_are_append_only(conn):
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE transactions SET amount = 1 WHERE transaction_id = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM transactions WHERE transaction_id = 1")


def test_write_transaction_rolls_back_on_error(conn):
    before = store.count_rows(conn, store.GROUND_TRUTH)
    with pytest.raises(RuntimeError), store.write_transaction(conn):
        store.insert_ground_truth(conn, [(1, "burst", "G999999")])
        raise RuntimeError("boom")
    assert store.count_rows(conn, store.GROUND_TRUTH) == before


def test_locked_database_gives_a_clear_error(generated_db):
    holder = store.connect(generated_db)
    holder.execute("BEGIN IMMEDIATE")
    waiter = store.connect(generated_db, busy_timeout_ms=50)
    with pytest.raises(DatabaseError, match="busy or locked"), store.write_transaction(waiter):
        pass
    holder.execute("ROLLBACK")


def test_read_only_connection_of_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        store.connect(tmp_path / "missing.db", readonly=True)
