"""End to end in a real headless browser (Debian's chromium driven by Playwright).

Logs in, checks the overview's charts and map, downloads the CSV and checks its rows, triages an
alert, and asserts that no request left localhost. Screenshots go to test-artifacts/.
"""

import csv
import os
import shutil
import socket
import sqlite3

import pytest
from conftest import ROOT

from schemewatch import store, users
from schemewatch.demo import start_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "a long enough secret"
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
        pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
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
        expect(page.locator("[data-testid=stDeckGlJsonChart]")).to_have_count(1)
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
        page.get_by_label("Note").fill("Checked with the block office: a second muster roll.")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("recorded in the audit log").first).to_be_visible(timeout=30_000)
        page.screenshot(path=ARTIFACTS / "03-alerts.png", full_page=True)

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
