"""Triage by role without lost updates: dispositions keep their role, claims survive saves,
stale saves are refused, and a case's history is append-only events."""

import pytest

from schemewatch import store, triage
from schemewatch.errors import CaseConflict

pytestmark = pytest.mark.both_engines

ALERT = 5


def _case_entries(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'case%'").fetchone()[0]


def test_an_auditors_note_keeps_a_supervisors_confirmed_fraud(conn):
    triage.update_case(conn, ALERT, "ravi", "supervisor", disposition="confirmed_fraud")
    triage.update_case(conn, ALERT, "asha", "auditor", note="Spoke to the block office.")
    case = triage.load_case(conn, ALERT)
    assert (case.disposition, case.disposition_role, case.note) == (
        "confirmed_fraud",
        "supervisor",
        "Spoke to the block office.",
    )


@pytest.mark.parametrize("new", [None, "false_positive", "needs_information"])
def test_an_auditor_cannot_change_a_supervisors_disposition(conn, new):
    triage.update_case(conn, ALERT, "ravi", "supervisor", disposition="confirmed_fraud")
    entries = _case_entries(conn)
    with pytest.raises(triage.NotAllowed, match="set by a supervisor"):
        triage.update_case(conn, ALERT, "asha", "auditor", disposition=new, note="overwrite")
    assert triage.load_case(conn, ALERT).disposition == "confirmed_fraud"
    assert _case_entries(conn) == entries  # nothing of the refused save was written


def test_a_higher_role_may_change_a_lower_roles_disposition(conn):
    triage.update_case(conn, ALERT, "asha", "auditor", disposition="false_positive")
    triage.update_case(conn, ALERT, "ravi", "supervisor", disposition="confirmed_fraud")
    triage.update_case(conn, ALERT, "meera", "admin", disposition="needs_information")
    case = triage.load_case(conn, ALERT)
    assert (case.disposition, case.disposition_role) == ("needs_information", "admin")
    assert triage.may_change_disposition("supervisor", case) is False


def test_saving_never_drops_another_users_claim(conn):
    triage.update_case(conn, ALERT, "asha", "auditor", claimed_by="asha")
    triage.update_case(conn, ALERT, "kiran", "auditor", note="a note only")
    assert triage.load_case(conn, ALERT).claimed_by == "asha"
    for claimed_by in (None, "kiran"):
        with pytest.raises(triage.NotAllowed, match="claimed by asha"):
            triage.update_case(conn, ALERT, "kiran", "auditor", claimed_by=claimed_by)
    with pytest.raises(triage.NotAllowed, match="only for yourself"):
        triage.update_case(conn, ALERT, "kiran", "auditor", claimed_by="ravi", take_over=True)
    triage.update_case(conn, ALERT, "kiran", "auditor", claimed_by="kiran", take_over=True)
    assert triage.load_case(conn, ALERT).claimed_by == "kiran"


def test_a_stale_save_is_refused_naming_who_changed_the_case_and_when(conn):
    seen = triage.load_case(conn, ALERT)
    triage.update_case(conn, ALERT, "ravi", "supervisor", note="first", expected_version=0)
    with pytest.raises(CaseConflict, match=r"changed by ravi at 20\d\d-\d\d-\d\dT.*reload"):
        triage.update_case(
            conn, ALERT, "asha", "auditor", note="second", expected_version=seen.version
        )
    assert triage.load_case(conn, ALERT).note == "first"
    fresh = triage.load_case(conn, ALERT)
    triage.update_case(conn, ALERT, "asha", "auditor", note="second", expected_version=1)
    assert (fresh.version, triage.load_case(conn, ALERT).version) == (1, 2)


def test_case_history_is_append_only_events_and_cases_shows_the_latest(conn):
    for note in ("one", "two", "three"):
        triage.update_case(conn, ALERT, "asha", "auditor", note=note)
    history = store.case_history(conn, ALERT)
    assert [(e["version"], e["note"]) for e in history] == [(1, "one"), (2, "two"), (3, "three")]
    current = conn.execute("SELECT note, version FROM cases WHERE transaction_id = ?", (ALERT,))
    assert tuple(current.fetchone()) == ("three", 3)
    for sql in ("UPDATE case_events SET note = 'x'", "DELETE FROM case_events"):
        with pytest.raises(store.driver_errors(), match="append-only"):
            conn.execute(sql)
    with pytest.raises(store.driver_errors()):  # a second version 3: a lost update refused
        with store.write_transaction(conn):
            store.append_case_event(
                conn, ALERT, 3, "asha", claimed_by=None, disposition=None, role=None, note="x"
            )
    assert store.verify(conn, transactions=False).ok


def test_a_linked_case_save_writes_every_alerts_event_and_audit_entries(conn):
    saved = triage.update_linked_case(
        conn, {5: 0, 6: 0, 7: 0}, "asha", "auditor", disposition="needs_information"
    )
    assert sorted(saved) == [5, 6, 7]
    assert all(triage.load_case(conn, t).version == 1 for t in (5, 6, 7))
    assert _case_entries(conn) == 3


def test_a_linked_case_save_is_all_or_nothing_when_one_alert_changed_meanwhile(conn):
    triage.update_case(conn, 7, "ravi", "supervisor", note="Ravi's finding.")
    before = _case_entries(conn)
    with pytest.raises(CaseConflict, match="alert 7 was changed by ravi"):
        triage.update_linked_case(conn, {5: 0, 6: 0, 7: 0}, "asha", "auditor", note="Mine.")
    assert [triage.load_case(conn, t).version for t in (5, 6)] == [0, 0]
    assert _case_entries(conn) == before


def test_an_auditor_cannot_confirm_fraud_on_a_whole_case(conn):
    with pytest.raises(triage.NotAllowed):
        triage.update_linked_case(
            conn, {5: 0, 6: 0}, "asha", "auditor", disposition="confirmed_fraud"
        )
