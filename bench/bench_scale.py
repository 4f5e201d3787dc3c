"""Benchmark scale on one machine (issue 12): every stage as a whole command, per database size.

For each size: generate, train and backfill (`monitor.py --once`) run as subprocesses wrapped in
`/usr/bin/time -f "%e s %M KB"` (wall time and peak RSS of the whole command); then the
overview's cold and warm render (bench_dashboard's AppTest approach) and the live
insert-to-score p95 with the simulator at 500 tx/s (bench_detection's approach) on that database.
Prints one table at the end.

Goals: generate 1M <= 15 s, 10M <= 150 s, peak <= 2 GB; train 10M <= 180 s, peak <= 3 GB;
backfill >= 100,000 rows/s, peak <= 3 GB; live p95 <= 1 s at 500 tx/s.
Run: .venv/bin/python bench/bench_scale.py --rows 1000000 3000000 [--live-seconds 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

TIME_FORMAT = "%e s %M KB"


def timed(*args: str | Path) -> tuple[float, float, str]:
    """Run a whole command under /usr/bin/time: (seconds, peak RSS in MB, its output)."""
    command = ["/usr/bin/time", "-f", TIME_FORMAT, sys.executable, *map(str, args)]
    print("$", " ".join(command[3:]), flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    found = re.findall(r"^([\d.]+) s (\d+) KB$", result.stderr, re.MULTILINE)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"{args[0]} failed:\n{result.stderr[-2000:]}")
    seconds, kilobytes = found[-1]
    print(f"  {seconds} s, peak {int(kilobytes) / 1024:,.0f} MB", flush=True)
    return float(seconds), int(kilobytes) / 1024, result.stdout + result.stderr


def wait_until_watching(monitor: subprocess.Popen, timeout: float = 900) -> None:
    """Until the live monitor has loaded its model and history and says it is watching."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = monitor.stderr.readline()
        if not line:
            raise RuntimeError("the monitor stopped before it was ready")
        if "watching" in line:
            # Keep reading its reports, or a full pipe would stall the monitor.
            threading.Thread(target=monitor.stderr.read, daemon=True).start()
            return
    raise RuntimeError("the monitor was not ready in time")


def overview(db, models: Path, folder: Path) -> tuple[float, float]:
    """The overview's cold and warm render, signed in as the benchmark's account."""
    import bench_dashboard

    bench_dashboard.ensure_account(db)
    credentials = folder / "credentials.yaml"  # none: accounts live in the database
    return bench_dashboard.render_times(db, models, credentials)


def one_size(folder: Path, rows: int, live_seconds: float) -> dict:
    import bench_detection

    db, models = folder / f"scale-{rows}.db", folder / f"modeling-{rows}"
    saved = folder / f"results-{rows}.json"
    # Stages already measured in this folder (--keep) are not run again.
    figures = json.loads(saved.read_text()) if saved.exists() else {"rows": rows}
    stages = {
        "generate": lambda: timed(
            "generate_database.py", "--transactions", rows, "--seed", "1", "--db", db, "--quiet"
        )[:2],
        "train": lambda: timed("train.py", "--db", db, "--model-dir", models)[:2],
        "backfill": lambda: timed(
            "monitor.py", "--once", "--quiet", "--db", db, "--model-dir", models
        )[:2],
        "overview": lambda: overview(db, models, folder),
        "live": lambda: bench_detection.bench_live(
            db, models, live_seconds, rate=500, ready=wait_until_watching
        ),
    }
    for stage, measure in stages.items():
        if stage not in figures:
            figures[stage] = measure()
            saved.write_text(json.dumps(figures))
    return figures


def table(results: list[dict]) -> str:
    head = (
        "| rows | generate | train | backfill (`--once`) | overview cold / warm "
        "| live p50 / p95 at 500 tx/s |\n|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        backfill_s, backfill_mb = r["backfill"]
        lines.append(
            f"| {r['rows']:,} "
            f"| {r['generate'][0]:.1f} s, {r['generate'][1]:,.0f} MB "
            f"| {r['train'][0]:.1f} s, {r['train'][1]:,.0f} MB "
            f"| {backfill_s:.1f} s = {r['rows'] / backfill_s:,.0f} rows/s, {backfill_mb:,.0f} MB "
            f"| {r['overview'][0]:.2f} s / {r['overview'][1]:.2f} s "
            f"| {r['live'][0]:.3f} s / {r['live'][1]:.3f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--live-seconds", type=float, default=30)
    parser.add_argument("--keep", type=Path, default=None, help="Keep databases and models here.")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="schemewatch-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for rows in args.rows:
            results.append(one_size(folder, rows, args.live_seconds))
            print(table(results), flush=True)
            if not args.keep:
                for leftover in folder.glob(f"scale-{rows}.db*"):
                    leftover.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(table(results))


if __name__ == "__main__":
    main()
