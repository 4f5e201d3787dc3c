"""Run the demo: the dashboard, the monitor and the live feed together; Ctrl-C stops all three.

`python -m schemewatch.demo --db transactions.db --model-dir modeling --port 8501 --rate 20`
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dashboard_command(port: int) -> list[str]:
    """`streamlit run dashboard.py` on localhost only, with no usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "dashboard.py"),
        "--server.port",
        str(port),
        "--server.address",
        "localhost",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def wait_for_dashboard(url: str, seconds: float = 60) -> None:
    """Block until the dashboard answers its health check (or the time runs out)."""
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard at {url} did not start within {seconds:.0f} s")


def start_dashboard(port: int, env: dict, seconds: float = 60) -> subprocess.Popen:
    """Start a quiet dashboard server and return it once it answers."""
    server = subprocess.Popen(
        dashboard_command(port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_dashboard(f"http://localhost:{port}", seconds)
    except TimeoutError:
        server.terminate()
        raise
    return server


def commands(args) -> dict[str, list[str]]:
    """The three processes the demo runs."""
    python = sys.executable
    return {
        "dashboard": dashboard_command(args.port),
        "monitor": [
            python,
            str(ROOT / "monitor.py"),
            "--db",
            args.db,
            "--model-dir",
            args.model_dir,
            "--quiet",
        ],
        "live feed": [
            python,
            str(ROOT / "live_feed_simulator.py"),
            "--db",
            args.db,
            "--rate",
            str(args.rate),
        ],
    }


def start_evaluation(args, env: dict) -> subprocess.Popen | None:
    """Evaluate the current model against the ground truth in the background, once per model.

    It takes about as long as training, so the dashboard does not wait for it; the Model page
    shows the table once it is saved. None when there is nothing to do (already saved, no
    ground truth, no model).
    """
    from schemewatch import evaluation
    from schemewatch.errors import SchemewatchError

    try:
        if evaluation.why_not_evaluate(env["SCHEMEWATCH_DB"], Path(args.model_dir)) is not None:
            return None
    except SchemewatchError:
        return None
    print("Evaluating the model against the ground truth in the background.", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "schemewatch", "evaluate", "--if-needed", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        preexec_fn=_default_interrupt,
    )


def report_evaluation(process: subprocess.Popen | None) -> subprocess.Popen | None:
    """Say once when the background evaluation is done; None from then on."""
    if process is None or process.poll() is None:
        return process
    if process.returncode == 0:
        print("Evaluation saved: the Model page shows its table.", flush=True)
    return None


def stop(processes: dict[str, subprocess.Popen]) -> None:
    """Ask every process to stop, then make sure they have."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.time() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _absolute(db: str) -> str:
    """A SQLite path made absolute (the children run elsewhere); a postgresql:// URL as given."""
    if db.startswith(("postgresql://", "postgres://")):
        return db
    return str(Path(db).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="transactions.db")
    parser.add_argument("--model-dir", default="modeling")
    parser.add_argument(
        "--credentials",
        default="credentials.yaml",
        help="An old credentials file, moved into the database once (accounts live there).",
    )
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--rate", type=float, default=20)
    args = parser.parse_args()
    env = {
        **os.environ,
        "SCHEMEWATCH_DB": _absolute(args.db),
        "SCHEMEWATCH_MODEL_DIR": str(Path(args.model_dir).resolve()),
        "SCHEMEWATCH_CREDENTIALS": str(Path(args.credentials).resolve()),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    # Started in the background by a shell, we may inherit SIGINT ignored; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    quiet = {"dashboard": subprocess.DEVNULL}
    processes = {
        name: subprocess.Popen(
            command,
            env=env,
            stdout=quiet.get(name),
            stderr=quiet.get(name),
            preexec_fn=_default_interrupt,
        )
        for name, command in commands(args).items()
    }
    evaluation = start_evaluation(args, env)
    signal.signal(signal.SIGTERM, _interrupt)
    print(
        f"Dashboard on http://localhost:{args.port}; monitor and live feed running. "
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in processes.values()):
            evaluation = report_evaluation(evaluation)
            time.sleep(0.5)
        ended = [name for name, p in processes.items() if p.poll() is not None]
        print(f"{', '.join(ended)} stopped; stopping the rest.", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop({**processes, **({"evaluation": evaluation} if evaluation else {})})


if __name__ == "__main__":
    main()
