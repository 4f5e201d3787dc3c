"""Accounts in the database: hashing, the users CLI, the one-time credentials.yaml import,
atomic failure counting and locking, and account changes that never revert."""

import os
import sqlite3
import stat
import subprocess
import threading

import bcrypt
import pytest
import yaml
from conftest import PYTHON, ROOT

from schemewatch import store, users
from schemewatch.errors import SchemewatchError

pytestmark = pytest.mark.both_engines

SECRET = "correct horse battery staple"
WRONG = "not the right password"


def _cli(*args, stdin=None, cwd=ROOT, env=None):
    return subprocess.run(
        [PYTHON, "-m", "schemewatch", "users", *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _clean_env() -> dict:
    """The test process's environment without SCHEMEWATCH_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SCHEMEWATCH_")}


@pytest.fixture
def accounts_db(tmp_path):
    path = tmp_path / "accounts.db"
    store.open_database(path).close()
    return path


def _audit(db, sql_filter="1=1"):
    conn = sqlite3.connect(db)
    sql = f"SELECT actor, action, target, old_value, new_value, details FROM audit_log WHERE {sql_filter} ORDER BY entry_id"  # noqa: E501
    return conn.execute(sql).fetchall()


def test_added_user_is_bcrypt_hashed_in_the_database(empty_conn):
    users.add_user(empty_conn, "asha", "auditor", SECRET, actor="test")
    row = store.get_user(empty_conn, "asha")
    assert row["password_hash"].startswith("$2b$") and SECRET not in row["password_hash"]
    assert row["role"] == "auditor" and row["credential_version"] == 1
    assert users.check_password(empty_conn, "asha", SECRET)
    assert not users.check_password(empty_conn, "asha", WRONG)


def test_each_database_gets_its_own_random_cookie_key(tmp_path):
    keys = set()
    for name in ("a.db", "b.db"):
        conn = store.open_database(tmp_path / name)
        keys.add(users.cookie_key(conn))
        assert users.cookie_key(conn) in keys  # made once, stable
        conn.close()
    assert len(keys) == 2 and all(len(k) >= 32 for k in keys)


@pytest.mark.parametrize(
    "username, role, password, message",
    [
        ("asha", "auditor", "short", "at least 10"),
        ("Asha Rao", "auditor", SECRET, "user names"),
        ("asha", "superuser", SECRET, "unknown role"),
        ("asha", "auditor", f" {SECRET}", "may not begin or end"),
        ("asha", "auditor", f"{SECRET}\t", "may not begin or end"),
    ],
)
def test_bad_account_requests_are_refused(empty_conn, username, role, password, message):
    with pytest.raises(SchemewatchError, match=message):
        users.add_user(empty_conn, username, role, password, actor="test")
    assert users.list_users(empty_conn) == []


def test_passwords_are_checked_exactly_as_typed(empty_conn):
    inner = "inner spaces are kept"
    users.add_user(empty_conn, "asha", "auditor", inner, actor="test")
    assert users.attempt_login(empty_conn, "asha", inner).succeeded
    for typed in (f" {inner}", f"{inner} ", inner.replace(" ", "")):
        assert not users.attempt_login(empty_conn, "asha", typed).succeeded
    with pytest.raises(SchemewatchError, match="may not begin or end"):
        users.reset_password(empty_conn, "asha", f"{inner} ", actor="test")


def test_cli_manages_accounts_and_audits_every_change(accounts_db):
    common = ["--db", accounts_db]
    added = _cli("add", "ravi", "--role", "supervisor", "--password-stdin", *common, stdin=SECRET)
    assert added.returncode == 0, added.stderr
    duplicate = _cli("add", "ravi", "--role", "auditor", "--password-stdin", *common, stdin=SECRET)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = _cli("list", *common)
    assert "ravi" in listed.stdout and "supervisor" in listed.stdout and "$2b$" not in listed.stdout
    reset = _cli("reset-password", "ravi", "--password-stdin", *common, stdin="another secret\n")
    assert reset.returncode == 0, reset.stderr
    assert _cli("set-role", "ravi", "--role", "auditor", *common).returncode == 0
    conn = store.open_database(accounts_db)
    assert users.check_password(conn, "ravi", "another secret")
    assert users.role_of(conn, "ravi") == "auditor"
    assert _cli("remove", "ravi", *common).returncode == 0
    assert "ravi" not in _cli("list", *common).stdout
    entries = _audit(accounts_db)
    assert [e[1] for e in entries] == [
        "user added",
        "password reset",
        "role changed",
        "user removed",
    ]
    assert entries[2][3:5] == ("supervisor", "auditor")
    assert all(e[0].startswith("cli:") for e in entries)
    everything = "".join(
        str(r) for r in sqlite3.connect(accounts_db).execute("SELECT * FROM audit_log")
    )
    assert SECRET not in everything and "another secret" not in everything


def test_users_cli_without_db_does_not_create_a_database(tmp_path):
    result = _cli("list", cwd=tmp_path, env=_clean_env())
    assert result.returncode == 1
    assert result.stderr.startswith("Error: database transactions.db does not exist")
    assert "Traceback" not in result.stderr
    added = _cli("add", "asha", "--role", "auditor", "--password-stdin", cwd=tmp_path,
                 env=_clean_env(), stdin=SECRET)  # fmt: skip
    assert added.returncode == 1 and "does not exist" in added.stderr
    assert list(tmp_path.iterdir()) == []


def test_users_cli_uses_the_configured_database(accounts_db, tmp_path):
    env = {**_clean_env(), "SCHEMEWATCH_DB": str(accounts_db)}
    added = _cli("add", "asha", "--role", "auditor", "--password-stdin", cwd=tmp_path, env=env,
                 stdin=SECRET)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert users.list_users(store.open_database(accounts_db)) == [("asha", "auditor", "asha")]


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_new_database_files_are_readable_by_their_owner_only(tmp_path, umask):
    previous = os.umask(umask)
    try:
        conn = store.open_database(tmp_path / "new.db")
        users.add_user(conn, "asha", "auditor", SECRET, actor="test")
        for name in ("new.db", "new.db-wal"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        conn.close()
    finally:
        os.umask(previous)


def test_an_existing_database_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.db"
    store.open_database(path).close()
    os.chmod(path, 0o640)
    store.open_database(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def _old_credentials_file(path, **accounts) -> None:
    usernames = {
        name: {
            "name": name.title(),
            "password": bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode(),
            "roles": [role],
            "failed_login_attempts": 0,
        }
        for name, role in accounts.items()
    }
    path.write_text(yaml.safe_dump({"credentials": {"usernames": usernames}, "cookie": {}}))


def test_credentials_file_is_moved_into_the_database_once_and_audited(accounts_db, tmp_path):
    old = tmp_path / "credentials.yaml"
    _old_credentials_file(old, asha="auditor", ravi="supervisor")
    first = _cli("list", "--db", accounts_db, "--credentials", old)
    assert first.returncode == 0, first.stderr
    assert "Moved 2 accounts" in first.stderr and "no longer used" in first.stderr
    assert "asha" in first.stdout and "supervisor" in first.stdout
    conn = store.open_database(accounts_db)
    assert users.check_password(conn, "ravi", SECRET)
    # The file is no longer read: a removal sticks, and editing the file changes nothing.
    assert _cli("remove", "asha", "--db", accounts_db, "--credentials", old).returncode == 0
    _old_credentials_file(old, asha="admin", kiran="admin")
    again = _cli("list", "--db", accounts_db, "--credentials", old)
    assert "Moved" not in again.stderr
    assert [u for u, _, _ in users.list_users(conn)] == ["ravi"]
    imported = _audit(accounts_db, "action = 'user imported'")
    assert sorted(e[2] for e in imported) == ["asha", "ravi"]


def test_a_removed_name_added_again_does_not_reuse_a_credential_version(empty_conn):
    users.add_user(empty_conn, "asha", "admin", SECRET, actor="test")
    users.remove_user(empty_conn, "asha", actor="test")
    assert store.get_user(empty_conn, "asha") is None
    assert not users.attempt_login(empty_conn, "asha", SECRET).succeeded
    users.add_user(empty_conn, "asha", "auditor", SECRET, actor="test")
    assert store.get_user(empty_conn, "asha")["credential_version"] == 3


def test_five_wrong_passwords_lock_for_fifteen_minutes(empty_conn):
    users.add_user(empty_conn, "asha", "auditor", SECRET, actor="test")
    start = store.now()
    for _ in range(users.MAX_FAILED_LOGINS):
        assert users.attempt_login(empty_conn, "asha", WRONG, now=start).outcome == "wrong"
    assert users.attempt_login(empty_conn, "asha", SECRET, now=start + 60).outcome == "locked"
    later = start + users.LOCKOUT_SECONDS + 1
    assert users.attempt_login(empty_conn, "asha", SECRET, now=later).succeeded
    assert store.get_user(empty_conn, "asha")["failed_logins"] == 0


def test_a_reset_password_unlocks_the_account(empty_conn):
    users.add_user(empty_conn, "asha", "auditor", SECRET, actor="test")
    for _ in range(users.MAX_FAILED_LOGINS):
        users.attempt_login(empty_conn, "asha", WRONG)
    users.reset_password(empty_conn, "asha", "a brand new secret", actor="test")
    assert users.attempt_login(empty_conn, "asha", "a brand new secret").succeeded


def test_parallel_sessions_cannot_get_past_the_lockout(accounts_db):
    """8 sessions x 5 wrong passwords at once: exactly 5 counted before the lock, 40 audited."""
    conn = store.open_database(accounts_db)
    users.add_user(conn, "asha", "auditor", SECRET, actor="test")
    barrier = threading.Barrier(8)
    outcomes, errors = [], []

    def session():
        own = store.open_database(accounts_db)
        try:
            barrier.wait()
            for _ in range(5):
                outcomes.append(users.attempt_login(own, "asha", WRONG).outcome)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=session) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(outcomes) == 40
    assert store.get_user(conn, "asha")["failed_logins"] == 5
    attempts = _audit(accounts_db, "actor = 'asha'")
    assert len(attempts) == 40
    counted = [e for e in attempts if e[1] == "login failed"]
    assert len(counted) == 5
    assert [e[5] for e in counted][-1].startswith("wrong password (5 of 5); locked")
    assert {e[1] for e in attempts} == {"login failed", "login refused"}
    assert outcomes.count("wrong") == 5 and outcomes.count("locked") == 35
    assert users.attempt_login(conn, "asha", SECRET).outcome == "locked"


def test_unknown_user_names_are_audited_without_the_password(empty_conn):
    result = users.attempt_login(empty_conn, "  Nobody ", SECRET)
    assert result.outcome == "wrong"
    [entry] = store.audit_entries(empty_conn)
    assert (entry["actor"], entry["action"], entry["details"]) == (
        "nobody",
        "login failed",
        "unknown user name",
    )
    assert SECRET not in str(tuple(entry))


def test_account_changes_never_revert_while_failed_logins_run(accounts_db):
    """Removals and resets from the CLI land while sessions keep failing to log in."""
    conn = store.open_database(accounts_db)
    names = [f"user{i}" for i in range(6)]
    for name in names:
        users.add_user(conn, name, "supervisor", SECRET, actor="test")
    stop = threading.Event()
    errors = []

    def failing_session(name):
        own = store.open_database(accounts_db)
        try:
            while not stop.wait(0.01):
                users.attempt_login(own, name, WRONG)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=failing_session, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    try:
        for name in names[:3]:
            assert _cli("remove", name, "--db", accounts_db).returncode == 0
        for name in names[3:]:
            reset = _cli("reset-password", name, "--password-stdin", "--db", accounts_db,
                         stdin="the new secret\n")  # fmt: skip
            assert reset.returncode == 0, reset.stderr
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors
    assert [u for u, _, _ in users.list_users(conn)] == names[3:]
    for name in names[3:]:
        assert users.check_password(conn, name, "the new secret")
        assert not users.check_password(conn, name, SECRET)
        assert store.get_user(conn, name)["credential_version"] == 2
    changes = _audit(accounts_db, "action IN ('user removed', 'password reset')")
    assert [(e[1], e[2]) for e in changes] == [("user removed", n) for n in names[:3]] + [
        ("password reset", n) for n in names[3:]
    ]
