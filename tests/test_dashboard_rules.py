"""AppTest of the Rules page per role: auditors read, supervisors and admins write and switch."""

import pytest
from conftest import VIEWS, site_db
from conftest import login as _login
from conftest import open_dashboard as _app

from schemewatch import rules, store

pytestmark = pytest.mark.both_engines

PAGE = f"{VIEWS}/rules.py"


def _rules_page(username: str):
    app = _login(username)
    app.switch_page(PAGE)
    app.run()
    assert not app.exception
    return app


def _labels(app) -> set[str]:
    return {b.label for b in app.button}


def _add(site_path, name: str, expression: str) -> None:
    conn = store.open_database(site_db())
    rules.add_rule(conn, name, expression, "set up", "setup", "admin")
    conn.close()


def test_the_rules_page_shows_nothing_before_login(site):
    _add(site, "far pensions", "km_from_home > 500")
    app = _app()
    app.switch_page(PAGE)
    app.run()
    assert not app.exception
    assert [t.label for t in app.text_input] == ["Username", "Password"]
    assert not app.dataframe and not app.code


def test_an_auditor_sees_the_rules_and_no_way_to_change_them(site):
    _add(site, "far pensions", 'km_from_home > 500 and scheme == "OLD_AGE_PENSION"')
    app = _rules_page("asha")
    assert app.title[0].value == "Rules"
    assert any("can view the rules" in i.value for i in app.info)
    [table] = [d for d in app.dataframe if "rule" in d.value.columns]
    assert table.value["rule"].tolist() == ["far pensions"]
    assert app.code[0].value == 'km_from_home > 500 and scheme == "OLD_AGE_PENSION"'
    assert not _labels(app) & {"Add rule", "Backtest", "Switch on", "Save as a new version"}
    assert [t.key for t in app.text_input] == ["filter_search"] and not app.text_area


@pytest.mark.parametrize("username", ["ravi", "meera"])
def test_a_supervisor_or_admin_adds_backtests_and_switches_on_a_rule(site, username):
    app = _rules_page(username)
    app.text_input(key="rule_new_name").input("far pensions")
    app.text_area(key="rule_new_expression").input(
        'km_from_home > 500 and scheme == "OLD_AGE_PENSION"'
    )
    app.button(key="rule_add").click()
    app.run()
    assert not app.exception and not app.error
    assert any("Added rule" in s.value for s in app.success)
    assert app.button(key="rule_enable").disabled  # not backtested yet
    app.button(key="rule_backtest").click()
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    shown = " ".join(m.value for m in app.markdown)
    assert "hits in" in shown and "Ground truth \\(generated data\\)" in shown
    assert not app.button(key="rule_enable").disabled
    app.button(key="rule_enable").click()
    app.run()
    assert any("is on" in s.value for s in app.success)
    conn = store.connect(site_db())
    actions = [
        tuple(row)
        for row in conn.execute(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'rule%' ORDER BY entry_id"
        )
    ]
    assert actions == [
        (username, "rule added"),
        (username, "rule backtested"),
        (username, "rule enabled"),
    ]
    assert conn.execute("SELECT enabled FROM rules").fetchone()[0] == 1


def test_a_bad_expression_is_one_clear_error_on_the_page(site):
    app = _rules_page("ravi")
    app.text_input(key="rule_new_name").input("typo")
    app.text_area(key="rule_new_expression").input("km_form_home > 500")
    app.button(key="rule_add").click()
    app.run()
    assert not app.exception
    [error] = app.error
    assert "unknown name" in error.value and "did you mean" in error.value
    assert "km\\_from\\_home" in error.value  # escaped like all data on the pages


def test_a_hostile_rule_name_is_shown_as_text(site):
    _add(site, "![x](http://evil.example/i.png)", "amount > 1")
    app = _rules_page("ravi")
    assert not app.exception
    assert "![x](http" not in app.subheader[0].value


def test_the_alert_queue_can_say_which_alerts_came_from_the_model(site):
    from schemewatch import modeling
    from schemewatch.dashboard import data

    version = modeling.current_version(site / "modeling")
    conn = store.connect(site_db())
    ids = [
        r[0] for r in conn.execute("SELECT transaction_id FROM scores WHERE is_alert = 1 LIMIT 5")
    ]
    assert data.alert_sources(site_db(), version, tuple(ids)) == {i: "model" for i in ids}


def test_an_edit_on_the_page_is_a_new_version_switched_off(site):
    _add(site, "big", "amount > 5000")
    conn = store.open_database(site_db())
    first, last = store.paid_at_range(conn)
    result = rules.backtest(site_db(), "amount > 5000", first, last + 1, None)
    rules.record_backtest(conn, "big", result, "setup", "admin")
    rules.set_enabled(conn, "big", True, "setup", "admin")
    conn.close()
    app = _rules_page("meera")
    assert app.button(key="rule_disable")
    app.text_area(key="rule_edit_expression").input("amount > 9000")
    app.button(key="rule_edit_save").click()
    app.run()
    assert not app.exception and not app.error
    assert any("new version" in s.value for s in app.success)
    assert app.code[0].value == "amount > 9000"
    assert app.button(key="rule_enable").disabled
    audit = store.connect(site_db()).execute(
        "SELECT actor, action, old_value, new_value FROM audit_log ORDER BY entry_id DESC LIMIT 1"
    )
    assert tuple(audit.fetchone()) == ("meera", "rule edited", "amount > 5000", "amount > 9000")
