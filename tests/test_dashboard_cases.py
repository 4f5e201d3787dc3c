"""The Alerts page lists cases of linked alerts; a case is viewed and triaged as a whole."""

from __future__ import annotations

import pytest
from conftest import VIEWS, site_db
from conftest import login as _login
from test_dashboard import _case_members

from schemewatch import modeling, store, triage

pytestmark = pytest.mark.both_engines


def _largest_case(site) -> tuple[int, list[int]]:
    """The largest case the Alerts page lists (under its default filters), with its alerts."""
    listed = {
        int(o.removeprefix("case ")) for o in _alerts("asha").selectbox(key="case_choice").options
    }
    conn = store.connect(site_db(), readonly=True)
    version = modeling.current_version(site / "modeling")
    members: dict[int, list[int]] = {}
    for transaction_id, case_id in store.alert_case_members(conn, version):
        members.setdefault(case_id, []).append(transaction_id)
    members = {c: m for c, m in members.items() if c in listed}
    case_id = max(members, key=lambda c: (len(members[c]), -c))
    return case_id, sorted(members[case_id])


def _alerts(username: str):
    app = _login(username)
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    assert not app.exception
    return app


def _open_case(app, case_id: int):
    app.selectbox(key="case_choice").set_value(case_id)
    app.run()
    assert not app.exception
    return app


@pytest.mark.parametrize("username", ["asha", "ravi", "meera"])
def test_every_role_sees_cases_and_opens_one_with_its_payments_and_network(site, username):
    case_id, members = _largest_case(site)
    assert len(members) >= 2  # the fixture's injected fraud has linked alerts
    app = _open_case(_alerts(username), case_id)
    [queue, payments, *_] = app.dataframe
    assert {"case", "max risk", "alerts", "amount at risk", "why (strongest)"} <= set(
        queue.value.columns
    )
    assert queue.value["case"].is_unique
    assert sorted(payments.value["transaction"]) == members
    assert sorted(_case_members(app)) == members
    assert app.get("graphviz_chart")
    assert any(f"Case {case_id}: {len(members)} alerts" in h.value for h in app.header)


def test_the_queue_has_fewer_cases_than_alerts(site):
    app = _alerts("asha")
    queue = app.dataframe[0].value
    assert queue["alerts"].sum() > len(queue)


@pytest.mark.parametrize(
    "username, may_confirm", [("asha", False), ("ravi", True), ("meera", True)]
)
def test_triage_of_a_case_gives_every_payment_its_event_and_audit_entry(
    site, username, may_confirm
):
    case_id, members = _largest_case(site)
    app = _open_case(_alerts(username), case_id)
    assert ("confirmed_fraud" in app.radio[0].options) is may_confirm
    app.radio[0].set_value("needs_information")
    app.text_area[0].input("One agent's night sweep: ask the bank for the CCTV.")
    next(b for b in app.button if b.label == "Save").click()
    app.run()
    assert not app.exception and any("recorded in the audit log" in s.value for s in app.success)
    conn = store.open_database(site_db())
    for member in members:
        case = triage.load_case(conn, member)
        assert (case.disposition, case.updated_by) == ("needs_information", username)
        assert len(store.case_history(conn, member)) == 1
    raw = store.connect(site_db())
    audited = raw.execute(
        "SELECT target FROM audit_log WHERE action = 'case disposition' AND actor = ?",
        (username,),
    ).fetchall()
    assert sorted(int(t) for (t,) in audited) == members


def test_a_case_save_over_a_newer_change_to_one_payment_is_refused_and_saves_nothing(site):
    case_id, members = _largest_case(site)
    app = _open_case(_alerts("asha"), case_id)
    conn = store.open_database(site_db())
    triage.update_case(conn, members[-1], "ravi", "supervisor", note="Ravi's finding.")
    app.text_area[0].input("Asha's finding.")
    next(b for b in app.button if b.label == "Save").click()
    app.run()
    [error] = app.error
    assert "changed by ravi" in error.value and "reload" in error.value
    assert [triage.load_case(conn, m).note for m in members[:-1]] == [None] * (len(members) - 1)
