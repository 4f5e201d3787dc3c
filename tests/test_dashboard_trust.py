"""AppTest checks of trust on the dashboard: triage by role, no lost updates, hostile data shown
as text, and the audit trail's status."""

import html
import json
import re
import sqlite3

import pytest
from conftest import VIEWS, login, site_db
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from schemewatch import modeling, store, triage
from schemewatch.dashboard.formatting import escape_markdown

pytestmark = pytest.mark.both_engines

HOSTILE_ID = "![t](http://host.example/b.png)"
HOSTILE_DISTRICT = "[Re-verify here](http://phish.example/login)"
HOSTILE_NOTE = "**urgent** <img src=x onerror=alert(1)> see www.phish.example :red[now]"
HOSTILE_USER = "[boss](http://phish.example)"
# Streamlit renders CommonMark plus GFM tables and strikethrough; bare URLs are autolinked.
RENDER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _alerts_page(username: str) -> AppTest:
    app = login(username)
    app.switch_page(f"{VIEWS}/alerts.py")
    app.run()
    assert not app.exception
    return app


def _save(app: AppTest) -> None:
    next(b for b in app.button if b.label == "Save").click()
    app.run()
    assert not app.exception


def _open(site):
    return store.open_database(site_db())


def test_an_auditor_sees_a_confirmed_fraud_and_saving_a_note_keeps_it(site):
    alert = int(_alerts_page("asha").selectbox(key="payment_choice").value)
    triage.update_case(_open(site), alert, "ravi", "supervisor", disposition="confirmed_fraud")
    app = _alerts_page("asha")
    [radio] = app.radio
    assert radio.value == "confirmed_fraud" and radio.disabled
    assert any("set by a supervisor" in c.value for c in app.caption)
    app.text_area[0].input("Beneficiary confirmed alive by the gram panchayat.")
    _save(app)
    case = triage.load_case(_open(site), alert)
    assert (case.disposition, case.note) == (
        "confirmed_fraud",
        "Beneficiary confirmed alive by the gram panchayat.",
    )


def test_saving_a_note_keeps_another_auditors_claim(site):
    alert = int(_alerts_page("asha").selectbox(key="payment_choice").value)
    triage.update_case(_open(site), alert, "ravi", "supervisor", claimed_by="ravi")
    app = _alerts_page("asha")
    assert [c.label for c in app.checkbox] == ["Take over the claim from ravi"]
    app.text_area[0].input("Looked at the muster roll.")
    _save(app)
    assert triage.load_case(_open(site), alert).claimed_by == "ravi"


def test_a_save_over_someone_elses_change_is_refused_with_who_and_when(site):
    asha = _alerts_page("asha")
    alert = int(asha.selectbox(key="payment_choice").value)
    ravi = _alerts_page("ravi")
    ravi.text_area[0].input("Ravi's finding.")
    _save(ravi)
    asha.text_area[0].input("Asha's finding.")
    _save(asha)
    [error] = asha.error
    assert "changed by ravi at" in error.value and "reload" in error.value
    assert triage.load_case(_open(site), alert).note == "Ravi's finding."
    next(b for b in asha.button if b.label == "Reload the case").click()
    asha.run()
    assert asha.text_area[0].value == "Ravi's finding."


def _add_hostile_alert(site) -> int:
    """A payment imported from a hostile CSV, scored as the top alert and triaged."""
    conn = _open(site)
    version = modeling.current_version(site / "modeling")
    tid = store.next_transaction_id(conn)
    paid_at = int(store.now()) - 86_400
    with store.write_transaction(conn):
        store.insert_beneficiaries(
            conn,
            [
                (
                    HOSTILE_ID,
                    "Bihar",
                    HOSTILE_DISTRICT,
                    25.6,
                    85.1,
                    "ACC1",
                    "XXC1",
                    None,
                    None,
                    None,
                    "active",
                    None,
                    store.now(),
                )
            ],
        )
        store.insert_transactions(
            conn,
            [
                (
                    tid,
                    None,
                    HOSTILE_ID,
                    "PM_KISAN",
                    "2026-27/P1",
                    2000.0,
                    paid_at,
                    25.6,
                    85.1,
                    "ACC1",
                    None,
                    "BANK",
                    "Bihar",
                    HOSTILE_DISTRICT,
                    store.now(),
                )
            ],
        )
        reasons = json.dumps([{"text": f"paid to {HOSTILE_DISTRICT} {HOSTILE_NOTE}"}])
        store.insert_scores(
            conn,
            [(version, tid, 1e9, 1.0, 1, reasons, "[x](http://phish.example)", 0.0, 99.0, None)],
        )
    triage.update_case(
        conn, tid, HOSTILE_USER, "supervisor", claimed_by=HOSTILE_USER, note=HOSTILE_NOTE
    )
    return tid


def _live_markup(markdown: str) -> list[str]:
    """Links, images or raw HTML the markdown would render, and bare URLs GFM would link."""
    rendered = RENDER.render(markdown)
    found = re.findall(r"<(?:a|img|script|span|div)\b[^>]*>", rendered)
    found += re.findall(r"(?<!\\)(?:://|www\.)", markdown)
    found += re.findall(r"(?<!\\):\w+\[", markdown)  # Streamlit's :colour[...] directives
    return found


def test_hostile_ids_districts_notes_and_names_render_as_plain_text(site):
    tid = _add_hostile_alert(site)
    app = _alerts_page("asha")
    assert int(app.selectbox(key="payment_choice").value) == tid
    shown = [
        *(
            e.value
            for kind in ("markdown", "caption", "subheader", "success", "error", "warning")
            for e in app.get(kind)
        ),
        *(c.label for c in app.checkbox),
    ]
    assert {text: _live_markup(text) for text in shown} == {text: [] for text in shown}
    page_text = html.unescape(re.sub(r"<[^>]+>", "", "".join(RENDER.render(t) for t in shown)))
    for hostile in (HOSTILE_ID, HOSTILE_DISTRICT, HOSTILE_USER):
        assert hostile in page_text  # shown, character for character, as text
    assert HOSTILE_NOTE == app.text_area[0].value


@pytest.mark.parametrize(
    "text",
    [HOSTILE_ID, HOSTILE_DISTRICT, HOSTILE_NOTE, "<script>x</script>", "a\n\n# b", "&#58; $x$"],
)
def test_escaped_markdown_renders_back_to_the_same_text_and_nothing_else(text):
    escaped = escape_markdown(text)
    assert _live_markup(escaped) == []
    rendered = RENDER.render(escaped)
    assert rendered.startswith("<p>") and rendered.count("<p>") == 1
    assert html.unescape(rendered[3:-5]) == " ".join(text.split("\n")).replace("  ", " ")


def test_the_audit_log_page_shows_the_chain_status_and_the_first_broken_entry(site):
    from schemewatch.dashboard import data

    app = _alerts_page("ravi")
    app.switch_page(f"{VIEWS}/audit_log.py")
    app.run()
    assert any("Audit trail verified" in s.value for s in app.success)
    _tamper(site_db(), "UPDATE audit_log SET actor = 'nobody' WHERE entry_id = 1")
    data.verify_trail.clear()
    app.run()
    [error] = app.error
    assert "Audit trail broken" in error.value and "audit entry 1 was changed" in error.value


def _tamper(db, sql: str) -> None:
    """Rewrite a row as someone with raw access would, bypassing the append-only triggers."""
    if store.is_postgres_url(db):
        import psycopg

        with psycopg.connect(db.url, autocommit=True) as raw:
            raw.execute("SET session_replication_role = replica")
            raw.execute(sql)
        return
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER audit_log_is_append_only_update")
    raw.execute(sql)
    raw.commit()
    raw.close()
