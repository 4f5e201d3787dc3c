"""A newcomer's first minutes (issue 13): `git clone` to a logged-in overview with `make demo`.

Clones this repository's HEAD into a new folder, runs `make demo` there with no pip cache
(`PIP_NO_CACHE_DIR=1`, so every package is downloaded as on a new machine), reads the demo
account's password from its output, signs in with a real browser (Debian's chromium through
Playwright) and times: the dashboard answering, the overview drawn, and the Model page showing
the evaluation table that `make demo` computes in the background. Then stops the demo and counts
TensorFlow start-up lines in its output (there should be none).

Run: .venv/bin/python bench/bench_newcomer.py [--port 8601] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_UP_LINES = ("oneDNN custom operations", "absl::InitializeLog")


def wait_for_line(log: Path, text: str, process: subprocess.Popen, seconds: float = 1800) -> str:
    """The demo's output once it contains `text`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        output = log.read_text()
        if text in output:
            return output
        if process.poll() is not None:
            sys.exit(f"make demo ended early:\n{output[-3000:]}")
        time.sleep(1)
    sys.exit(f"make demo did not print {text!r} in {seconds:.0f} s")


def sign_in_and_time(url: str, password: str, started: float) -> tuple[float, float]:
    """Seconds from `started` to the overview drawn and to the Model page's evaluation table."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(url)
        expect(page.get_by_label("Username")).to_be_visible(timeout=120_000)
        page.get_by_label("Username").fill("demo")
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Amount at risk").first).to_be_visible(timeout=120_000)
        expect(page.locator("[data-testid=stPlotlyChart]").first).to_be_visible(timeout=120_000)
        overview = time.time() - started
        page.get_by_role("link", name="Model").click()
        table = page.get_by_text("Evaluation against the generator's ground truth")
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                expect(table).to_be_visible(timeout=5_000)
                break
            except AssertionError:
                page.reload()
                page.wait_for_timeout(3_000)
        evaluation = time.time() - started
        browser.close()
    return overview, evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8601)
    parser.add_argument("--keep", type=Path, help="Clone here and keep it (default: temporary).")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="schemewatch-newcomer-")) / "clone"
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    started = time.time()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    log = folder.parent / "make-demo.log"
    with log.open("w") as output:
        demo = subprocess.Popen(
            ["make", "demo", f"PORT={args.port}"],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        text = wait_for_line(log, "Dashboard on http", demo)
        answering = time.time() - started
        password = re.search(r"Password \(shown only now\): (\S+)", text).group(1)
        overview, evaluation = sign_in_and_time(f"http://localhost:{args.port}", password, started)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=120)
    noise = sum(any(s in line for s in START_UP_LINES) for line in log.read_text().splitlines())
    print(f"from git clone: dashboard answering {answering:.0f} s")
    print(f"from git clone: logged in, overview drawn {overview:.0f} s")
    print(f"from git clone: Model page with the evaluation table {evaluation:.0f} s")
    print(f"TensorFlow start-up lines in the demo's output: {noise}")
    if not args.keep:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
