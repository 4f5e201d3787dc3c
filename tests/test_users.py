import os
import sqlite3
import stat
import subprocess

import pytest
import yaml
from conftest import PYTHON, ROOT

from schemewatch import users
from schemewatch.errors import SchemewatchError

SECRET = "correct horse battery staple"


def _cli(*args, stdin=None):
    return subprocess.run(
        [PYTHON, "-m", "schemewatch", "users", *map(str, args)],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_added_user_is_bcrypt_hashed_in_a_private_file(tmp_path):
    path = tmp_path / "credentials.yaml"
    users.add_user(path, "asha", "auditor", SECRET)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert SECRET not in text
    data = yaml.safe_load(text)
    stored = data["credentials"]["usernames"]["asha"]
    assert stored["password"].startswith("$2b$") and stored["roles"] == ["auditor"]
    assert users.check_password(data, "asha", SECRET)
    assert not users.check_password(data, "asha", "wrong password!")
    assert len(data["cookie"]["key"]) >= 32


def test_each_credentials_file_gets_its_own_random_cookie_key(tmp_path):
    users.add_user(tmp_path / "a.yaml", "asha", "auditor", SECRET)
    users.add_user(tmp_path / "b.yaml", "asha", "auditor", SECRET)
    keys = {
        yaml.safe_load((tmp_path / f).read_text())["cookie"]["key"] for f in ("a.yaml", "b.yaml")
    }
    assert len(keys) == 2


@pytest.mark.parametrize(
    "username, role, password, message",
    [
        ("asha", "auditor", "short", "at least 10"),
        ("Asha Rao", "auditor", SECRET, "user names"),
        ("asha", "superuser", SECRET, "unknown role"),
    ],
)
def test_bad_account_requests_are_refused(tmp_path, username, role, password, message):
    with pytest.raises(SchemewatchError, match=message):
        users.add_user(tmp_path / "c.yaml", username, role, password)


def test_cli_manages_accounts_and_audits_every_change(tmp_path):
    creds, db = tmp_path / "c.yaml", tmp_path / "t.db"
    common = ["--credentials", creds, "--db", db]
    assert (
        _cli(
            "add", "ravi", "--role", "supervisor", "--password-stdin", *common, stdin=SECRET + "\n"
        ).returncode
        == 0
    )
    duplicate = _cli(
        "add", "ravi", "--role", "auditor", "--password-stdin", *common, stdin=SECRET + "\n"
    )
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = _cli("list", "--credentials", creds)
    assert "ravi" in listed.stdout and "supervisor" in listed.stdout and "$2b$" not in listed.stdout
    assert (
        _cli(
            "reset-password", "ravi", "--password-stdin", *common, stdin="another long secret\n"
        ).returncode
        == 0
    )
    assert users.check_password(users.load_credentials(creds), "ravi", "another long secret")
    assert _cli("remove", "ravi", *common).returncode == 0
    assert "ravi" not in _cli("list", "--credentials", creds).stdout
    actions = [
        r[0] for r in sqlite3.connect(db).execute("SELECT action FROM audit_log ORDER BY entry_id")
    ]
    assert actions == ["user added", "password reset", "user removed"]
    everything = "".join(str(r) for r in sqlite3.connect(db).execute("SELECT * FROM audit_log"))
    assert SECRET not in everything and "another long secret" not in everything


def test_audit_log_is_append_only(conn):
    from schemewatch import store

    with store.write_transaction(conn):
        store.append_audit(conn, "asha", "claim", "T1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'someone else'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
