"""Benchmark the dashboard at scale: overview render time (cold and warm) and server memory.

Goals (issue 4), on 1,000,000 transactions: the overview renders in <= 1.5 s cold and <= 0.3 s
warm; the dashboard process stays <= 600 MB RSS.
- Render times: Streamlit's AppTest runs the overview script in-process for a logged-in user;
  "cold" clears every cache first, "warm" reruns within the cache TTL (median of 5 each).
- Memory: a real `streamlit run dashboard.py` server, a headless chromium logs in and opens every
  page; VmRSS of the server process is read afterwards.
Run: .venv/bin/python bench/bench_dashboard.py [--db DB --model-dir DIR] [--transactions N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark password"


def prepare(folder: Path, transactions: int) -> tuple[Path, Path]:
    from schemewatch import generator, modeling, store
    from schemewatch.monitor import Monitor

    db, models = folder / "bench.db", folder / "modeling"
    conn = store.open_database(db)
    generator.generate(conn, transactions=transactions, seed=1)
    conn.close()
    modeling.train(db, models)
    monitor = Monitor(db, models)
    while monitor.tick().pending:
        pass
    return db, models


def ensure_account(db) -> None:
    """The benchmark's admin account `bench` in the database (accounts live there), PASSWORD."""
    from schemewatch import store, users

    conn = store.open_database(db)
    try:
        users.add_user(conn, "bench", "admin", PASSWORD, actor="bench")
    except users.UserError:  # a reused database already has the account
        users.reset_password(conn, "bench", PASSWORD, actor="bench")
    finally:
        conn.close()


def render_times(db: Path, models: Path, credentials: Path) -> tuple[float, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ.update(
        SCHEMEWATCH_DB=str(db),
        SCHEMEWATCH_MODEL_DIR=str(models),
        SCHEMEWATCH_CREDENTIALS=str(credentials),
    )
    app = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    app.run()
    app.text_input[0].input("bench")
    app.text_input[1].input(PASSWORD)
    app.button[0].click()
    app.run()
    cold, warm = [], []
    for _ in range(5):
        st.cache_data.clear()
        started = time.perf_counter()
        app.run()
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        app.run()
        warm.append(time.perf_counter() - started)
    assert not app.exception, app.exception
    return statistics.median(cold), statistics.median(warm)


def server_rss(db: Path, models: Path, credentials: Path) -> float:
    from playwright.sync_api import sync_playwright

    from schemewatch.demo import start_dashboard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "SCHEMEWATCH_DB": str(db),
        "SCHEMEWATCH_MODEL_DIR": str(models),
        "SCHEMEWATCH_CREDENTIALS": str(credentials),
    }
    server = start_dashboard(port, env, 120)
    url = f"http://localhost:{port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(url)
            page.get_by_label("Username").fill("bench")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Amount at risk").first.wait_for(timeout=120_000)
            for name in ("Alerts", "Model", "Audit log", "Overview"):
                page.get_by_role("link", name=name).click()
                page.wait_for_timeout(4000)
            browser.close()
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None, help="Reuse a scored database.")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="schemewatch-dash-bench-"))
    try:
        if args.db:
            db, models = args.db, args.model_dir
        else:
            db, models = prepare(folder, args.transactions)
        credentials = folder / "credentials.yaml"  # none: accounts live in the database
        ensure_account(db)
        cold, warm = render_times(db, models, credentials)
        rss = server_rss(db, models, credentials)
        print(
            f"dashboard overview on {db.name}: cold {cold:.2f} s (goal <= 1.5: "
            f"{'met' if cold <= 1.5 else 'NOT met'}), warm {warm:.2f} s (goal <= 0.3: "
            f"{'met' if warm <= 0.3 else 'NOT met'}); server RSS after visiting every page "
            f"{rss:.0f} MB (goal <= 600: {'met' if rss <= 600 else 'NOT met'})",
            flush=True,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
