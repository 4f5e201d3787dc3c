"""`schemewatch copy`: a SQLite database moved to PostgreSQL whole, verified and audited."""

from __future__ import annotations

import subprocess

import pytest
from conftest import PASSWORD, PYTHON, ROOT, add_accounts

from schemewatch import copying, rules, store, triage, users
from schemewatch.store import transfer


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "schemewatch", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _with_history(db) -> None:
    """Accounts, a triaged case and a rule: rows in every kind of table."""
    add_accounts(db)
    conn = store.open_database(db)
    triage.update_case(conn, 9, "asha", "auditor", note="checked the passbook")
    rules.add_rule(conn, "far pensions", "km_from_home > 500", None, "ravi", "supervisor")
    conn.close()


def _counts(db) -> dict[str, int]:
    conn = store.connect(db)
    try:
        return {
            t: transfer.table_checksum(conn, t, transfer.column_names(conn, t))[0]
            for t in transfer.tables_to_copy(conn)
        }
    finally:
        conn.close()


def test_copy_to_postgresql_keeps_every_row_the_trail_and_the_accounts(
    generated_db, postgres_cluster
):
    _with_history(generated_db)
    target = postgres_cluster.create_database()
    result = _cli("copy", "--from", generated_db, "--to", target)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    before, after = _counts(generated_db), _counts(store.locate(target))
    assert after.pop("audit_log") == before.pop("audit_log") + 1  # the copy itself
    assert after == before and before["transactions"] == 6_000
    conn = store.open_database(store.locate(target))
    assert store.verify(conn).ok  # chains and sealed batches still verify on the new engine
    [entry] = [e for e in store.audit_entries(conn) if e["action"] == "copy database"]
    assert str(generated_db) in entry["details"]
    assert users.check_password(conn, "asha", PASSWORD)
    assert triage.load_case(conn, 9).note == "checked the passbook"
    # New rows after the copy get fresh ids (the identity sequences moved past the copied ones).
    rules.add_rule(conn, "big", "amount > 100000", None, "ravi", "supervisor")
    assert len(store.list_rules(conn)) == 2
    conn.close()


def test_copy_refuses_a_target_that_holds_data(generated_db, tmp_path):
    other = tmp_path / "other.db"
    assert _cli("copy", "--from", generated_db, "--to", other).returncode == 0
    again = _cli("copy", "--from", generated_db, "--to", other)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("Error:")
    assert "already holds" in again.stderr and "Traceback" not in again.stderr


def test_checksum_notices_one_changed_value_but_not_row_order(empty_conn):
    rows = [(1, "a", 2.5), (2, "b", None), (3, "c", 7.0)]
    digest = sum(map(transfer.row_digest, rows))
    assert sum(map(transfer.row_digest, reversed(rows))) == digest
    changed = [(1, "a", 2.5), (2, "b", None), (3, "c", 7.000001)]
    assert sum(map(transfer.row_digest, changed)) != digest
    assert transfer.row_digest((1,)) != transfer.row_digest(("1",))


def test_copy_onto_itself_is_refused(generated_db):
    with pytest.raises(copying.CopyError, match="same database"):
        copying.copy_database(generated_db, generated_db, actor="test")
