"""The printable case report: its contents, escaping of hostile data, audit, and who may have it."""

from __future__ import annotations

import dataclasses
import html
import io
import json
import re

import pytest
from conftest import VIEWS, login, site_db
from pypdf import PdfReader
from test_dashboard_cases import _largest_case, _open_case

from schemewatch import case_report, case_report_pdf, modeling, store, triage

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


def _triaged_export(site, form: str, *changes: dict):
    """The largest case triaged by ravi (each change one case update, in order), exported in
    `form`: (payload, payment count, the case's queue rows, case id, members, model version)."""
    case_id, members = _largest_case(site)
    version = modeling.current_version(site / "modeling")
    conn = store.open_database(site_db())
    for seen, change in enumerate(changes):
        triage.update_linked_case(
            conn, dict.fromkeys(members, seen), "ravi", "supervisor", **change
        )
    payload, rows = case_report.export(conn, version, case_id, "ravi", "supervisor", form)
    payments = store.dashboard_case_alerts(conn, version, case_id)
    conn.close()
    return payload, rows, payments, case_id, members, version


def test_the_report_holds_the_payments_links_reasons_and_triage_history(site):
    db = site_db()
    payload, rows, payments, case_id, members, version = _triaged_export(
        site,
        "html",
        {"claimed_by": "ravi", "note": "Asked the bank for the account opening form."},
        {"disposition": "confirmed_fraud"},
    )
    page = payload.decode("utf-8")

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


def _pdf_text(payload: bytes) -> str:
    """The PDF's text with all white space removed (table cells wrap lines inside words)."""
    pages = PdfReader(io.BytesIO(payload)).pages
    return "".join("".join(page.extract_text().split()) for page in pages)


def _squeezed(text: str) -> str:
    return "".join(text.split())


def test_the_pdf_report_says_what_the_html_report_says_and_is_audited_as_a_pdf(site):
    db = site_db()
    note = "Bank confirmed the account was opened by the agent."
    payload, rows, payments, case_id, members, version = _triaged_export(
        site, "pdf", {"disposition": "confirmed_fraud", "note": note}
    )

    assert payload.startswith(b"%PDF-") and rows == len(members)
    text = _pdf_text(payload)
    for row in payments:
        payment = dict(zip(store.ALERT_QUEUE_COLUMNS, row, strict=True))
        assert _squeezed(f"Transaction {payment['transaction_id']}: risk") in text
        for value in (payment["beneficiary_id"], payment["account_id"], payment["agent_id"]):
            assert value is None or value in text
        for reason in case_report.reasons(payment["reasons"]):
            assert _squeezed(reason) in text
    assert _squeezed("Bank confirmed the account was opened by the agent.") in text
    assert "₹" in text and _squeezed("confirmed fraud") in text
    assert re.search(r"Exportedbyravi\(ravi,supervisor\)at\d{4}-\d\d-\d\d", text)
    [(actor, target, count, details)] = _downloads(db)
    assert (actor, target, count) == ("ravi", f"case {case_id} report", str(len(members)))
    assert json.loads(details) == {"case": case_id, "model_version": version, "format": "pdf"}


def test_every_page_of_a_long_pdf_report_is_numbered_and_says_who_exported_it():
    report = _hostile_report()
    long = dataclasses.replace(report, payments=report.payments * 60)
    pages = PdfReader(io.BytesIO(case_report_pdf.render_pdf(long))).pages
    assert len(pages) > 2
    for number, page in enumerate(pages, start=1):
        text = _squeezed(page.extract_text())
        assert _squeezed(f"Page {number} of {len(pages)}") in text
        assert _squeezed("Exported by <b>mallory</b>") in text


def test_hostile_strings_in_a_pdf_report_are_text_and_it_holds_no_link_or_script():
    payload = case_report_pdf.render_pdf(_hostile_report())
    text = _pdf_text(payload)
    assert _squeezed('<script>alert("id")</script>') in text
    assert _squeezed(HOSTILE_NOTE) in text
    for action in (b"/JavaScript", b"/JS", b"/URI", b"/Launch", b"/EmbeddedFile", b"/AA"):
        assert action not in payload
    # fpdf2 always names the view to open at (first page, fit width): a place, not an action.
    assert re.findall(rb"/OpenAction [^\n]*", payload) == [b"/OpenAction [3 0 R /FitH null]"]


def test_characters_the_font_cannot_draw_are_marked_in_the_pdf_not_dropped(caplog):
    report = _hostile_report()
    payment = dict(report.payments[0], beneficiary_id="राम-42")  # DejaVu Sans has no Devanagari
    text = _pdf_text(case_report_pdf.render_pdf(dataclasses.replace(report, payments=[payment])))
    assert "\ufffd-42" in text  # each letter the font lacks is a visible mark
    assert _squeezed("3 characters that this PDF's font cannot draw are shown as") in text
    assert "missing the following glyphs" not in caplog.text


def test_without_a_unicode_font_a_pdf_is_refused_with_what_to_install_and_nothing_audited(
    site, monkeypatch
):
    with pytest.raises(case_report_pdf.ReportFontMissing, match="fonts-dejavu-core"):
        case_report_pdf.report_font(environ={}, candidates=("/nonexistent/DejaVuSans.ttf",))
    monkeypatch.setenv(case_report_pdf.FONT_VARIABLE, "/nonexistent/font.ttf")
    case_id, _ = _largest_case(site)
    conn = store.open_database(site_db())
    with pytest.raises(case_report_pdf.ReportFontMissing, match="/nonexistent/font.ttf"):
        case_report.export(
            conn, modeling.current_version(site / "modeling"), case_id, "ravi", "supervisor", "pdf"
        )
    conn.close()
    assert _downloads(site_db()) == []


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
    assert len(buttons) == (2 if offered else 0)  # the printable HTML and the PDF
    if not offered:
        assert any("Supervisors and admins can download" in c.value for c in app.caption)


def test_without_a_unicode_font_the_case_page_offers_the_html_report_and_says_why(
    site, monkeypatch
):
    monkeypatch.setenv(case_report_pdf.FONT_VARIABLE, "/nonexistent/font.ttf")
    case_id, _ = _largest_case(site)
    app = login("ravi")
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    app = _open_case(app, case_id)
    [button] = app.get("download_button")
    assert "HTML" in button.proto.label
    assert any("No PDF report on this machine" in c.value for c in app.caption)
