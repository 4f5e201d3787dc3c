"""Open dashboard sessions are re-checked on every run: account changes made elsewhere, idle and
absolute lifetimes, the re-login cookie, logout, and permissions from the current role."""

import tomllib
from dataclasses import replace

import jwt
import pytest
from conftest import PASSWORD, ROOT, make_site, site_db
from conftest import login as _login
from streamlit.testing.v1 import AppTest

from schemewatch import sessions, store, triage, users
from schemewatch.dashboard import auth
from schemewatch.settings import load_settings

pytestmark = pytest.mark.both_engines

LIMITS = sessions.Lifetimes()


@pytest.fixture
def site(scored_template, tmp_path, monkeypatch, request, engine):
    """The scored site with a supervisor and an admin only."""
    accounts = (("ravi", "supervisor"), ("meera", "admin"))
    return make_site(scored_template, tmp_path, monkeypatch, accounts, request=request)


def _on_login_form(app: AppTest) -> bool:
    return [t.label for t in app.text_input] == ["Username", "Password"] and not app.metric


def _entries(site, actor: str) -> list[tuple[str, str]]:
    conn = store.connect(site_db())
    sql = "SELECT action, details FROM audit_log WHERE actor = ? ORDER BY entry_id"
    return [tuple(row) for row in conn.execute(sql, (actor,)).fetchall()]


def _change(site, action: str) -> None:
    """Change ravi's account from outside the dashboard, as the CLI would."""
    conn = store.open_database(site_db())
    if action == "remove":
        users.remove_user(conn, "ravi", actor="cli:test")
    elif action == "demote":
        users.change_role(conn, "ravi", "auditor", actor="cli:test")
    else:
        users.reset_password(conn, "ravi", "a different secret", actor="cli:test")
    conn.close()


@pytest.mark.parametrize(
    "action, message",
    [("remove", "removed"), ("demote", "was changed"), ("reset", "was changed")],
)
def test_an_open_session_ends_when_its_account_is_changed_elsewhere(site, action, message):
    app = _login("ravi")
    assert app.get("download_button") and not app.exception
    _change(site, action)
    app.run()
    assert not app.exception
    assert _on_login_form(app) and not app.get("download_button")
    assert any(message in w.value for w in app.warning)
    assert _entries(site, "ravi")[-1][0] == "logout"
    app.switch_page("schemewatch/dashboard/views/audit_log.py")
    app.run()
    assert _on_login_form(app) and not app.dataframe


def test_a_demoted_supervisor_signing_in_again_has_no_download(site):
    _change(site, "demote")
    app = _login("ravi")
    assert app.metric and not app.get("download_button")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        app.switch_page("schemewatch/dashboard/views/audit_log.py")


def test_the_old_password_no_longer_signs_in_after_a_reset(site):
    _change(site, "reset")
    assert _on_login_form(_login("ravi"))
    assert _login("ravi", "a different secret").metric


@pytest.mark.parametrize(
    "environ, idle_seconds, ends",
    [
        ({}, 29 * 60, False),
        ({}, 31 * 60, True),
        ({"SCHEMEWATCH_IDLE_MINUTES": "5"}, 6 * 60, True),
    ],
)
def test_an_idle_session_ends(site, monkeypatch, environ, idle_seconds, ends):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    app = _login("ravi")
    session = app.session_state[auth.SESSION_KEY]
    app.session_state[auth.SESSION_KEY] = replace(
        session, last_seen_at=session.last_seen_at - idle_seconds
    )
    app.run()
    assert _on_login_form(app) == ends
    assert any("inactive" in w.value for w in app.warning) == ends


def test_a_session_ends_at_its_absolute_limit_however_active(site):
    app = _login("ravi")
    session = app.session_state[auth.SESSION_KEY]
    app.session_state[auth.SESSION_KEY] = replace(
        session, started_at=session.started_at - 12 * 3600
    )
    app.run()
    assert _on_login_form(app)
    assert any("12-hour limit" in w.value for w in app.warning)
    assert _entries(site, "ravi")[-1] == ("logout", app.warning[0].value)


def test_logging_out_is_audited_and_shows_the_login_form(site):
    app = _login("ravi")
    app.button(key="Logout").click()
    app.run()
    assert not app.exception and _on_login_form(app)
    assert _entries(site, "ravi")[-2:] == [("login", None), ("logout", "signed out")]
    app.run()
    assert _on_login_form(app)  # and it stays signed out


def test_an_unknown_user_name_is_refused_and_audited(site):
    app = _login("nobody")
    assert _on_login_form(app)
    assert any("Wrong user name or password" in e.value for e in app.error)
    assert _entries(site, "nobody") == [("login failed", "unknown user name")]


KEY = "a cookie key of at least thirty-two characters"


def _cookie(username: str, issued_at: float) -> dict:
    """A cookie as streamlit-authenticator signs it, decoded as it decodes it."""
    token = jwt.encode(
        {"username": username, "exp_date": issued_at + LIMITS.absolute}, KEY, algorithm="HS256"
    )
    return jwt.decode(token, KEY, algorithms=["HS256"])


@pytest.fixture
def accounts(empty_conn):
    users.add_user(empty_conn, "ravi", "supervisor", PASSWORD, actor="setup")
    assert users.attempt_login(empty_conn, "ravi", PASSWORD).succeeded
    return empty_conn


def test_a_cookie_opens_a_session_while_the_account_is_unchanged_and_active(accounts):
    token = _cookie("ravi", store.now())
    now = store.now() + 60
    account = store.get_user(accounts, "ravi")
    assert sessions.cookie_problem(token, account, now, LIMITS) is None
    session = sessions.session_from_cookie(token, account, now, LIMITS)
    assert session.started_at == pytest.approx(now - 60, abs=1)  # the limit counts from issue
    assert sessions.session_problem(session, account, now, LIMITS) is None


@pytest.mark.parametrize("change", ["reset", "demote", "remove"])
def test_a_cookie_issued_before_an_account_change_is_refused(accounts, change):
    token = _cookie("ravi", store.now() - 1)
    if change == "reset":
        users.reset_password(accounts, "ravi", "a different secret", actor="t")
    elif change == "demote":
        users.change_role(accounts, "ravi", "auditor", actor="t")
    else:
        users.remove_user(accounts, "ravi", actor="t")
    account = store.get_user(accounts, "ravi")
    assert sessions.cookie_problem(token, account, store.now(), LIMITS) is not None


def test_an_expired_cookie_is_refused(accounts):
    now = store.now()
    token = _cookie("ravi", now - LIMITS.absolute - 1)
    account = dict(store.get_user(accounts, "ravi"), credentials_changed_at=0)
    assert "expired" in sessions.cookie_problem(token, account, now, LIMITS)


def test_a_cookie_is_refused_after_the_account_was_idle(accounts):
    token = _cookie("ravi", store.now())
    now = store.now() + 60
    account = dict(store.get_user(accounts, "ravi"), last_seen_at=now - LIMITS.idle - 1)
    assert "inactive" in sessions.cookie_problem(token, account, now, LIMITS)


def test_a_deferred_download_rechecks_the_current_role(accounts, empty_db):
    settings = load_settings(environ={}, db_path=empty_db)
    account = store.get_user(accounts, "ravi")
    user = auth.User("ravi", "ravi", "supervisor", account["credential_version"])
    auth.require_current(settings, user, "download")
    users.change_role(accounts, "ravi", "auditor", actor="t")
    with pytest.raises(triage.NotAllowed):
        auth.require_current(settings, user, "download")


def test_the_dashboard_listens_on_localhost_unless_configured_otherwise():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


def test_the_cookie_key_depends_on_the_session_lifetime(accounts):
    twelve = auth.authenticator_config(accounts, LIMITS)["cookie"]
    eight = auth.authenticator_config(accounts, sessions.Lifetimes(absolute=8 * 3600))["cookie"]
    assert twelve["key"] != eight["key"] and users.cookie_key(accounts) not in twelve["key"]
    assert twelve["expiry_days"] == 0.5
    listed = auth.authenticator_config(accounts, LIMITS)["credentials"]["usernames"]
    assert listed["ravi"]["roles"] == ["supervisor"] and "password" not in listed["ravi"]


def test_an_old_credentials_file_is_moved_in_once_and_never_written(site, monkeypatch):
    import bcrypt
    import yaml

    old = site / "credentials.yaml"
    entry = {"name": "Kiran", "password": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))}
    entry = {**entry, "password": entry["password"].decode(), "roles": ["admin"]}
    old.write_text(yaml.safe_dump({"credentials": {"usernames": {"kiran": entry}}, "cookie": {}}))
    monkeypatch.setenv("SCHEMEWATCH_CREDENTIALS", str(old))
    before = old.read_bytes(), old.stat().st_mtime_ns
    app = _login("kiran")
    assert app.metric and not app.exception
    assert _entries(site, "dashboard") == [("user imported", str(old))]
    assert _on_login_form(_login("kiran", "a wrong password!"))
    _change(site, "remove")  # ravi, from outside, while the file still lists kiran only
    conn = store.open_database(site_db())
    users.remove_user(conn, "kiran", actor="cli:test")
    app.run()
    assert _on_login_form(app)
    assert (old.read_bytes(), old.stat().st_mtime_ns) == before
    assert _on_login_form(_login("kiran"))  # the file still lists kiran; it is not read again
    assert users.list_users(conn) == [("meera", "admin", "meera")]


def test_an_admin_demoting_a_supervisor_on_the_users_page_ends_their_open_session(site):
    supervisor = _login("ravi")
    assert supervisor.get("download_button")
    admin = _login("meera")
    admin.switch_page("schemewatch/dashboard/views/users.py")
    admin.run()
    admin.selectbox(key="target_user").set_value("ravi")
    admin.selectbox(key="target_role").set_value("auditor")
    next(b for b in admin.button if b.label == "Change role").click()
    admin.run()
    assert not admin.exception and any("ravi is now auditor" in s.value for s in admin.success)
    supervisor.run()
    assert _on_login_form(supervisor) and not supervisor.get("download_button")
    assert _entries(site, "meera")[-1] == ("role changed", None)


def test_a_removed_admin_cannot_add_an_account_from_a_page_left_open(site):
    admin = _login("meera")
    admin.switch_page("schemewatch/dashboard/views/users.py")
    admin.run()
    conn = store.open_database(site_db())
    users.remove_user(conn, "meera", actor="cli:test")
    admin.text_input(key="new_username").input("eve")
    admin.selectbox(key="new_role").set_value("admin")
    admin.text_input(key="new_password").input("a password for eve")
    next(b for b in admin.button if b.label == "Add").click()
    admin.run()
    assert not admin.exception and _on_login_form(admin)
    assert [u for u, _, _ in users.list_users(conn)] == ["ravi"]
    assert ("user added",) not in [e[:1] for e in _entries(site, "meera")]
