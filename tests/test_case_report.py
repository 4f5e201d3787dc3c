"""The printable case report: its contents, escaping of hostile data, audit, and who may have it."""

from __future__ import annotations

import html
import json
import re

import pytest
from conftest import VIEWS, login, site_db
from test_dashboard_cases import _largest_case, _open_case

from schemewatch import case_report, modeling, store, triage

pytestmark = pytest.mark.both_engines

HOSTILE_ID = '<script>alert("id")</script>'
HOSTILE_NOTE = (
    '[click me](http://phish.example) "><img src=x onerror=alert(1)> ![i](http://x/i.png)'
)
HOSTILE_USER = "<b>mallory</b>"


def _downloads(db) -> list[tuple]:
    conn = store.connect(db)
    try:
        return conn.execute(
            "SELECT actor, target, new_value, details FROM audit_log WHERE action = 'download'"
        ).fetchall()
    finally:
        conn.close()


def test_the_report_holds_the_payments_links_reasons_and_triage_history(site):
    db = site_db()
    case_id, members = _largest_case(site)
    version = modeling.current_version(site / "modeling")
    conn = store.open_database(db)
    triage.update_linked_case(
        conn,
        {m: 0 for m in members},
        "ravi",
        "supervisor",
        claimed_by="ravi",
        note="Asked the bank for the account opening form.",
    )
    triage.update_linked_case(
        conn, {m: 1 for m in members}, "ravi", "supervisor", disposition="confirmed_fraud"
    )
    payload, rows = case_report.export(conn, version, case_id, "ravi", "supervisor")
    page = payload.decode("utf-8")
    payments = store.dashboard_case_alerts(conn, version, case_id)
    conn.close()

    assert rows == len(members)
    for row in payments:
        payment = dict(zip(store.ALERT_QUEUE_COLUMNS, row, strict=True))
        assert f"<td>{payment['transaction_id']}</td>" in page
        for value in (payment["beneficiary_id"], payment["account_id"], payment["agent_id"]):
            assert value is None or value in page
        for reason in case_report.reasons(payment["reasons"]):
            assert f"<li>{html.escape(reason)}</li>" in page
    assert "Asked the bank for the account opening form." in page
    assert page.count("confirmed fraud") >= len(members)  # one event per payment, and status
    assert "Triage history" in page and "Linked people, accounts and agents" in page
    assert re.search(r"Exported by ravi \(ravi, supervisor\) at \d{4}-\d\d-\d\d", page)
    [(actor, target, count, details)] = _downloads(db)
    assert (actor, target, count) == ("ravi", f"case {case_id} report", str(len(members)))
    assert json.loads(details) == {"case": case_id, "model_version": version, "format": "html"}


def _hostile_report() -> case_report.CaseReport:
    payment = dict.fromkeys(store.ALERT_QUEUE_COLUMNS)
    payment.update(
        transaction_id=7,
        beneficiary_id=HOSTILE_ID,
        scheme="PM_KISAN",
        amount=2000.0,
        paid_at=1_750_000_000,
        state="Bihar",
        district='<iframe src="http://evil.example">',
        account_id="[acc](javascript:alert(1))",
        agent_id="<style>body{display:none}</style>",
        score=12.5,
        risk=97.0,
        reasons=json.dumps([{"text": f"paid to {HOSTILE_NOTE}"}]),
        resembles="<svg onload=alert(1)>",
        claimed_by=HOSTILE_USER,
        alerted_by="rule '<script>x</script>'",
    )
    event = {
        "transaction_id": 7,
        "version": 1,
        "claimed_by": HOSTILE_USER,
        "disposition": None,
        "disposition_role": None,
        "note": HOSTILE_NOTE,
        "updated_by": HOSTILE_USER,
        "updated_at": 1_750_000_100.0,
    }
    return case_report.CaseReport(
        7, "v<1>", [payment], [event], HOSTILE_USER, '"Mal" <m@x>', "supervisor", 1_750_000_200.0
    )


def test_hostile_strings_come_out_as_text_not_markup():
    page = case_report.render(_hostile_report())
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table",
        "thead", "tbody", "tr", "th", "td", "ul", "li", "span", "code",
    }  # fmt: skip
    assert page.count("<style>") == 1 and page.count("<script") == 0
    assert "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "[click me](http://phish.example)" in page  # plain text: no markdown is rendered here
    attributes = " ".join(re.findall(r"<[a-zA-Z][^>]*>", page))
    assert not re.search(r"\b(?:href|src|on\w+)\s*=", attributes)
    assert "default-src 'none'" in page  # and nothing may load even if something slipped through


def test_the_report_loads_nothing_from_outside():
    page = case_report.render(_hostile_report())
    assert not re.search(r"<link|<script|@import|url\(|<img|<iframe", page)


def test_an_auditor_may_not_export_a_case_report_and_nothing_is_audited(site):
    db = site_db()
    case_id, _ = _largest_case(site)
    version = modeling.current_version(site / "modeling")
    conn = store.open_database(db)
    with pytest.raises(triage.NotAllowed):
        case_report.export(conn, version, case_id, "asha", "auditor")
    conn.close()
    assert _downloads(db) == []


def test_a_merged_or_unknown_case_is_one_clear_error(site):
    conn = store.open_database(site_db())
    version = modeling.current_version(site / "modeling")
    with pytest.raises(case_report.CaseNotFound, match="reload the page"):
        case_report.export(conn, version, -1, "ravi", "supervisor")
    conn.close()
    assert _downloads(site_db()) == []


@pytest.mark.parametrize("username, offered", [("asha", False), ("ravi", True), ("meera", True)])
def test_only_roles_that_may_download_are_offered_the_report(site, username, offered):
    case_id, _ = _largest_case(site)
    app = login(username)
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    app = _open_case(app, case_id)
    buttons = app.get("download_button")
    assert bool(buttons) is offered
    if not offered:
        assert any("Supervisors and admins can download" in c.value for c in app.caption)
