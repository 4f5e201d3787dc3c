"""End to end in a real headless browser (Debian's chromium driven by Playwright).

A supervisor logs in, checks the overview's charts and map, downloads the CSV and checks its
rows, opens the top case and triages it, downloads its printable report and checks it, writes a
rule on the Rules page, backtests and enables it, and (after new payments and a monitor tick run
by the test) sees the alerts it raised in the queue. No request may leave localhost, and the
report, shown in the browser, loads nothing at all. Screenshots go to test-artifacts/.
"""

import csv
import json
import os
import re
import shutil
import socket
import sqlite3

import pytest
from conftest import ROOT, today_at_ist
from pypdf import PdfReader

from schemewatch import store, users
from schemewatch.demo import start_dashboard
from schemewatch.live_feed import LiveFeed
from schemewatch.monitor import Monitor

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "a long enough secret"
NOTE = "Checked with the block office: a second muster roll."
RULE = ("pensions by post", 'scheme == "OLD_AGE_PENSION" and channel == "POST"')
ARTIFACTS = ROOT / "test-artifacts"
LOCAL = (
    "http://localhost",
    "http://127.0.0.1",
    "ws://localhost",
    "ws://127.0.0.1",
    "data:",
    "blob:",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(scored_template, tmp_path):
    if not shutil.which("chromium"):
        pytest.fail(
            "chromium is not installed (`make test` installs it; or: apt-get install chromium)"
        )
    db, models = scored_template
    shutil.copy(db, tmp_path / "transactions.db")
    shutil.copytree(models, tmp_path / "modeling")
    conn = store.open_database(tmp_path / "transactions.db")
    users.add_user(conn, "ravi", "supervisor", PASSWORD, "Ravi Kumar", actor="setup")
    conn.close()
    port = _free_port()
    env = {
        **os.environ,
        "SCHEMEWATCH_DB": str(tmp_path / "transactions.db"),
        "SCHEMEWATCH_MODEL_DIR": str(tmp_path / "modeling"),
        "SCHEMEWATCH_CREDENTIALS": str(tmp_path / "no-credentials.yaml"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    process = start_dashboard(port, env)
    yield f"http://localhost:{port}", tmp_path
    process.terminate()
    process.wait(timeout=30)


def test_auditor_journey_in_a_real_browser(server):
    from playwright.sync_api import expect, sync_playwright

    url, folder = server
    ARTIFACTS.mkdir(exist_ok=True)
    outside = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
        page.on("request", lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
        page.goto(url)
        expect(page.get_by_label("Username")).to_be_visible(timeout=60_000)
        assert page.locator("[data-testid=stMetric]").count() == 0
        page.screenshot(path=ARTIFACTS / "01-login.png")

        page.get_by_label("Username").fill("ravi")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Amount at risk").first).to_be_visible(timeout=60_000)
        expect(page.locator("[data-testid=stPlotlyChart]")).to_have_count(4, timeout=60_000)
        expect(page.locator("[data-testid=stDeckGlJsonChart]")).to_have_count(1, timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=ARTIFACTS / "02-overview.png", full_page=True)
        shown = int(page.locator("[data-testid=stMetricValue]").first.inner_text().replace(",", ""))

        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download the filtered transactions (CSV)").click()
        saved = folder / "download.csv"
        download.value.save_as(saved)
        rows = list(csv.DictReader(saved.open()))
        assert len(rows) == shown > 0
        assert {"transaction_id", "score", "is_alert", "disposition"} <= set(rows[0])

        page.get_by_role("link", name="Alerts").click()
        expect(page.get_by_text("Alert cases").first).to_be_visible(timeout=60_000)
        # The top case is open: its network picture (drawn in the browser, offline) and payments.
        expect(page.locator("[data-testid=stGraphVizChart]")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Alert on transaction").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Triage the case")).to_be_visible()
        page.get_by_text("false_positive").click()
        page.get_by_label("Note").fill(NOTE)
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("recorded in the audit log").first).to_be_visible(timeout=30_000)
        page.screenshot(path=ARTIFACTS / "03-alerts.png", full_page=True)
        _case_report(browser, page, folder, outside)

        _write_backtest_and_enable_a_rule(page)
        _new_payments_and_a_monitor_tick(folder)
        page.wait_for_timeout(11_000)  # the queue's cached read lives 10 s
        page.get_by_role("link", name="Alerts").click()
        expect(page.get_by_text("raised by an auditors").first).to_be_visible(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "08-rule-alerts.png", full_page=True)

        page.get_by_role("link", name="Model").click()
        expect(page.get_by_text("Alert threshold").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=ARTIFACTS / "04-model.png", full_page=True)

        page.get_by_role("link", name="Audit log").click()
        expect(page.locator("[data-testid=stDataFrame]")).to_be_visible(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "05-audit-log.png", full_page=True)
        browser.close()

    assert outside == [], f"requests left localhost: {outside[:5]}"
    conn = sqlite3.connect(folder / "transactions.db")
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY entry_id")]
    assert "login" in actions and "download" in actions
    assert "case disposition" in actions and "case note" in actions
    assert {"rule added", "rule backtested", "rule enabled"} <= set(actions)
    reports = conn.execute(
        "SELECT details FROM audit_log WHERE action = 'download' AND target LIKE 'case %'"
    ).fetchall()
    assert sorted(json.loads(details)["format"] for (details,) in reports) == ["html", "pdf"]


def _case_report(browser, page, folder, outside) -> None:
    """Download the open case's printable report; check it; show it offline and print it."""
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download the case report (printable HTML)").click()
    saved = folder / "case-report.html"
    download.value.save_as(saved)
    report = saved.read_text(encoding="utf-8")
    case_id = re.search(r"<h1>Case (\d+): case report</h1>", report).group(1)
    assert download.value.suggested_filename == f"schemewatch-case-{case_id}.html"
    assert NOTE in report and "false positive" in report
    assert "Exported by ravi (Ravi Kumar, supervisor)" in report
    conn = sqlite3.connect(folder / "transactions.db")
    members = conn.execute(
        "SELECT transaction_id FROM alert_cases WHERE case_id = ?", (int(case_id),)
    ).fetchall()
    conn.close()
    assert members and all(f"<td>{t}</td>" in report for (t,) in members)
    viewer = browser.new_page(viewport={"width": 1200, "height": 1600})
    viewer.on("request", lambda r: outside.append(r.url))  # the report may load nothing at all
    viewer.set_content(report)
    viewer.screenshot(path=ARTIFACTS / "06-case-report.png", full_page=True)
    viewer.close()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download the case report (PDF)").click()
    assert download.value.suggested_filename == f"schemewatch-case-{case_id}.pdf"
    download.value.save_as(ARTIFACTS / "06-case-report.pdf")
    pdf = PdfReader(ARTIFACTS / "06-case-report.pdf")
    text = "".join(page.extract_text() for page in pdf.pages)
    assert f"Case {case_id}: case report" in text and "Exported by ravi (Ravi Kumar" in text


def _write_backtest_and_enable_a_rule(page) -> None:
    """On the Rules page: add the rule, backtest it, switch it on."""
    from playwright.sync_api import expect

    page.get_by_role("link", name="Rules").click()
    expect(page.get_by_text("Add a rule")).to_be_visible(timeout=60_000)
    page.get_by_label("Name", exact=True).fill(RULE[0])
    page.get_by_label("Name", exact=True).press("Tab")
    page.get_by_label("Expression").fill(RULE[1])
    page.get_by_label("Expression").press("Tab")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_text("Added rule").first).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Backtest", exact=True).click()
    expect(page.get_by_text("Backtested; the result is kept").first).to_be_visible(timeout=90_000)
    page.get_by_role("button", name="Switch on").click()
    expect(page.get_by_text("the monitor runs it on every new payment").first).to_be_visible(
        timeout=30_000
    )
    page.screenshot(path=ARTIFACTS / "07-rules.png", full_page=True)


def _new_payments_and_a_monitor_tick(folder) -> None:
    """New payments arrive (the live feed) and the monitor scores them with the rule on."""
    conn = store.open_database(folder / "transactions.db")
    LiveFeed(conn, anomaly_rate=0.0, seed=11, clock=today_at_ist(11)).tick(60)  # by post by day
    conn.close()
    monitor = Monitor(folder / "transactions.db", folder / "modeling")
    try:
        assert monitor.tick().scored == 60
    finally:
        monitor.conn.close()
    conn = sqlite3.connect(folder / "transactions.db")
    hits = conn.execute("SELECT COUNT(*) FROM rule_hits").fetchone()[0]
    conn.close()
    assert hits > 0
