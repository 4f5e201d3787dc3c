"""AppTest checks of every dashboard page: login gate, roles, filters, triage, empty database."""

import json

import pytest
from conftest import VIEWS, add_accounts, login, open_dashboard, site_db

from schemewatch import store, triage, users

pytestmark = pytest.mark.both_engines

_app = open_dashboard
_login = login


def _audit_actions(site) -> list[str]:
    """Audited actions after the fixture's set-up."""
    conn = store.connect(site_db())
    sql = "SELECT action FROM audit_log WHERE actor != 'setup' ORDER BY entry_id"
    return [r[0] for r in conn.execute(sql)]


def test_nothing_but_the_login_form_before_login(site):
    app = _app()
    assert not app.exception
    assert [t.label for t in app.text_input] == ["Username", "Password"]
    assert not app.metric and not app.dataframe and not app.get("plotly_chart")
    assert not app.get("deck_gl_json_chart") and not app.get("download_button")
    for view in ("alerts", "model", "audit_log", "users"):
        app.switch_page(f"{VIEWS}/{view}.py")
        app.run()
        assert not app.metric and not app.dataframe, view


def test_wrong_password_is_rejected_and_audited(site):
    app = _login("asha", "not the password")
    assert any("Wrong user name or password" in e.value for e in app.error)
    assert not app.metric
    assert _audit_actions(site) == ["login failed"]


def test_repeated_failures_lock_the_account(site):
    for _ in range(5):
        _login("asha", "not the password")
    app = _login("asha")
    assert not app.metric
    assert any("locked" in e.value for e in app.error)
    assert _audit_actions(site) == ["login failed"] * 5 + ["login refused"]


def test_overview_shows_kpis_charts_and_an_offline_map(site):
    app = _login("ravi")
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert set(metrics) == {"Transactions", "Alerts", "Alert rate", "Amount at risk", "Open cases"}
    assert int(metrics["Alerts"].replace(",", "")) > 0
    assert len(app.get("plotly_chart")) == 4
    [deck] = app.get("deck_gl_json_chart")
    spec = json.loads(deck.proto.json)
    assert spec["mapStyle"].startswith("data:")  # no basemap from a tile server
    assert "http" not in deck.proto.json
    assert any(layer["@@type"] == "GeoJsonLayer" for layer in spec["layers"])
    assert "login" in _audit_actions(site)


def test_filters_change_the_figures(site):
    app = _login("ravi")
    everything = int(app.metric[0].value.replace(",", ""))
    app.multiselect(key="filter_states").select("Bihar")
    app.run()
    bihar = int(app.metric[0].value.replace(",", ""))
    conn = store.connect(site_db())
    total_bihar = conn.execute("SELECT COUNT(*) FROM transactions WHERE state='Bihar'").fetchone()[
        0
    ]
    assert 0 < bihar < everything and bihar <= total_bihar


@pytest.mark.parametrize("view", ["alerts", "model", "audit_log", "users"])
def test_every_page_renders_for_an_admin(site, view):
    app = _login("meera")
    app.switch_page(f"{VIEWS}/{view}.py")
    app.run()
    assert not app.exception
    assert app.title and not app.error


def _case_members(app) -> list[int]:
    """The transaction ids of the open case, lead first, as the page lists them."""
    options = app.selectbox(key="payment_choice").options
    return [int(o.removeprefix("transaction ")) for o in options]


def test_triage_saves_the_case_and_writes_the_audit_log(site):
    app = _login("asha")
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    alert = int(app.selectbox(key="payment_choice").value)
    app.checkbox[0].check()
    app.radio[0].set_value("false_positive")
    app.text_area[0].input("Two muster rolls in one fortnight; checked with the block office.")
    next(b for b in app.button if b.label == "Save").click()
    app.run()
    assert not app.exception
    assert any("audit log" in s.value for s in app.success)
    conn = store.connect(site_db())
    entries = conn.execute(
        "SELECT actor, action, target, old_value, new_value FROM audit_log "
        "WHERE action LIKE 'case%' ORDER BY entry_id"
    ).fetchall()
    members = _case_members(app)
    assert alert == members[0]  # the form opens on the case's lead alert
    assert [e[1] for e in entries] == [
        action for _ in members for action in ("case claimed by", "case disposition", "case note")
    ]
    assert [e[2] for e in entries] == [str(m) for m in sorted(members) for _ in range(3)]
    assert all(e[0] == "asha" for e in entries)
    assert entries[1][3:] == (None, "false_positive")


def test_auditors_cannot_confirm_fraud_download_or_read_the_audit_log(site):
    app = _login("asha")
    assert not app.get("download_button")
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    assert "confirmed_fraud" not in app.radio[0].options
    for page in ("audit_log", "users"):  # not even registered for an auditor
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            app.switch_page(f"{VIEWS}/{page}.py")
    conn = store.open_database(site_db())
    with pytest.raises(triage.NotAllowed):
        triage.update_case(conn, 1, "asha", "auditor", disposition="confirmed_fraud")


def test_supervisors_get_the_download_and_the_audit_log(site):
    app = _login("ravi")
    assert app.get("download_button")
    app.switch_page(f"{VIEWS}/audit_log.py")
    app.run()
    assert app.dataframe and not app.exception


def test_pages_render_with_an_empty_database(site, monkeypatch, tmp_path, empty_db):
    empty = empty_db
    add_accounts(empty)  # accounts live in the database; no payments, no scores
    monkeypatch.setenv("SCHEMEWATCH_DB", str(empty))
    monkeypatch.setenv("SCHEMEWATCH_MODEL_DIR", str(tmp_path / "no-models"))
    app = _login("meera")
    assert not app.exception
    assert app.metric[0].value == "0"
    assert any("No model" in i.value for i in app.info)
    for view in ("alerts", "model", "audit_log", "users"):
        app.switch_page(f"{VIEWS}/{view}.py")
        app.run()
        assert not app.exception, view


def test_admins_manage_accounts_from_the_users_page(site):
    app = _login("meera")
    app.switch_page(f"{VIEWS}/users.py")
    app.run()
    app.text_input(key="new_username").input("kiran")
    app.selectbox(key="new_role").set_value("auditor")
    app.text_input(key="new_password").input("another long password")
    next(b for b in app.button if b.label == "Add").click()
    app.run()
    assert not app.exception and any("kiran" in s.value for s in app.success)
    conn = store.open_database(site_db())
    assert users.check_password(conn, "kiran", "another long password")
    app.run()  # the new account shows in the lists on the next run
    app.selectbox(key="target_user").set_value("kiran")
    next(b for b in app.button if b.label == "Remove account").click()
    app.run()
    assert "kiran" not in [u for u, _, _ in users.list_users(conn)]
    assert _audit_actions(site)[-2:] == ["user added", "user removed"]


def test_admins_set_the_alert_threshold_and_it_is_audited(site):
    app = _login("meera")
    app.switch_page(f"{VIEWS}/model.py")
    app.run()
    app.number_input(key="new_threshold").set_value(123.0)
    next(b for b in app.button if b.label == "Apply threshold").click()
    app.run()
    assert not app.exception and any("123.0" in s.value for s in app.success)
    actions = _audit_actions(site)
    assert actions[-1] == "threshold changed"
    auditor = _login("asha")
    auditor.switch_page(f"{VIEWS}/model.py")
    auditor.run()
    assert not [b for b in auditor.button if b.label == "Apply threshold"]


def test_the_model_page_shows_a_saved_evaluation_and_says_how_to_get_one(site):
    from schemewatch import evaluation, modeling

    models = site / "modeling"
    version = modeling.current_version(models)
    saved = evaluation.report_path(models, version)
    saved.unlink(missing_ok=True)
    app = _login("asha")
    app.switch_page(f"{VIEWS}/model.py")
    app.run()
    assert not app.exception
    assert any("schemewatch evaluate" in c.value for c in app.caption)
    figures = {"precision": 0.9, "recall": 0.8, "f1": 0.85, "pr_auc": 0.93, "roc_auc": 0.99}
    figures |= {"recall_at_budget": {"0.005": 0.5, "0.01": 0.8, "0.02": 0.9}, "per_typology": {}}
    saved.write_text(json.dumps({"models": {"autoencoder": figures}, "rows": 10}))
    app.run()
    assert not app.exception
    assert any(s.value == "Evaluation against the generator's ground truth" for s in app.subheader)
    assert any("0.930" in c.value for c in app.code)
