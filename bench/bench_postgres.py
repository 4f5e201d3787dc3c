"""Benchmark PostgreSQL as the store (issue 10): every stage at 1,000,000 rows, one table.

On a throwaway cluster of our own (or a server the user started: `--url`):
1. generate into PostgreSQL and train on it, each a whole command under `/usr/bin/time`
   (bench_scale's `timed`: wall time and peak RSS);
2. backfill (`monitor.py --once --quiet`) on a fresh copy of the generated database with one
   worker, then on another fresh copy with two workers started together (wall time from the
   start of both to the end of both); after each, every row must be scored exactly once: as many
   scores as transactions, and the daily summary's transactions add up to the same number;
3. the overview's cold and warm render (bench_dashboard's AppTest approach) on the scored copy;
4. the live insert-to-score p50/p95 with the simulator at 500 tx/s (bench_detection's approach)
   on the scored copy;
5. `schemewatch copy` of a SQLite database of the same size (made by generate_database.py) into
   a new PostgreSQL database, the whole command timed.
Copies are made with `CREATE DATABASE ... TEMPLATE`, which needs nobody connected to the
template: every stage that touches the generated database runs in a child process that has
ended. The 1-minute load average is noted next to each figure (the machine may be shared).

Goals: backfill >= 60,000 rows/s with 2 workers and >= 1.6 x one worker; overview <= 1.5 s cold,
<= 0.3 s warm; live p95 <= 1 s at 500 tx/s; copy of 1,000,000 rows <= 60 s.
Run: .venv/bin/python bench/bench_postgres.py [--rows 1000000] [--live-seconds 30] [--url URL]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale  # noqa: E402


class Server:
    """Where the benchmark makes its databases: a throwaway cluster, or the server at `url`."""

    def __init__(self, url: str | None = None):
        self.cluster = None
        if url is None:
            from schemewatch.throwaway_postgres import ThrowawayCluster

            self.cluster = ThrowawayCluster().start()
            url = self.cluster.url()
        self.admin_url = url
        self.made: list[str] = []

    def url(self, name: str) -> str:
        return urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))

    def create(self, template: str | None = None) -> tuple[str, str]:
        """A new database (a copy of `template`, by name, if given): its name and URL."""
        import psycopg
        from psycopg import sql

        name = f"swbench_{uuid.uuid4().hex[:10]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)
        self.made.append(name)
        return name, self.url(name)

    def drop(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)
        self.made.remove(name)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()  # the whole cluster goes with its folder
            return
        for name in list(self.made):
            self.drop(name)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def timed_together(*commands: tuple) -> tuple[float, list[float]]:
    """Start the commands at once under /usr/bin/time: (wall seconds until all ended, peak MBs)."""
    started = time.perf_counter()
    processes = []
    for args in commands:
        command = ["/usr/bin/time", "-f", bench_scale.TIME_FORMAT, sys.executable, *map(str, args)]
        print("$", " ".join(command[3:]), "&", flush=True)
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate() for process in processes]
    seconds = time.perf_counter() - started
    peaks = []
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        found = re.findall(r"^([\d.]+) s (\d+) KB$", stderr, re.MULTILINE)
        if process.returncode != 0 or not found:
            raise RuntimeError(f"a worker failed:\n{stderr[-2000:]}")
        peaks.append(int(found[-1][1]) / 1024)
    print(f"  {seconds:.1f} s, peaks {', '.join(f'{p:,.0f} MB' for p in peaks)}", flush=True)
    return seconds, peaks


def exactly_once(url: str) -> str:
    """'yes' when every transaction has one score and the daily summary counts each once."""
    from schemewatch import store

    conn = store.connect(url)
    try:
        transactions = conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        scores = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        summed = conn.execute(
            "SELECT COALESCE(SUM(transactions), 0) FROM daily_summary"
        ).fetchone()[0]
    finally:
        conn.close()
    verdict = (
        "yes"
        if transactions == scores == summed
        else f"NO: {transactions:,} transactions, {scores:,} scores, {summed:,} in the summary"
    )
    print(f"  exactly once: {verdict}", flush=True)
    return verdict


def monitor_args(url: str, models: Path) -> tuple:
    return ("monitor.py", "--once", "--quiet", "--db", url, "--model-dir", models)


def measure(server: Server, folder: Path, rows: int, live_seconds: float, lines: list) -> None:
    """Run every stage, adding one dict per line of the table to `lines` as it goes."""
    import bench_dashboard
    import bench_detection

    models = folder / "modeling"

    def line(stage: str, figure: str, peak: str, goal: str = "", met: bool | None = None):
        lines.append(dict(stage=stage, figure=figure, peak=peak, goal=goal, met=met, load=at))

    at = load()
    generated, generated_url = server.create()
    seconds, peak, _ = bench_scale.timed(
        "generate_database.py", "--transactions", rows, "--seed", "1", "--db", generated_url,
        "--quiet",
    )  # fmt: skip
    line(f"generate {rows:,} rows into PostgreSQL", f"{seconds:.1f} s", f"{peak:,.0f} MB")

    at = load()
    seconds, peak, _ = bench_scale.timed("train.py", "--db", generated_url, "--model-dir", models)
    line("train", f"{seconds:.1f} s", f"{peak:,.0f} MB")

    at = load()
    single, single_url = server.create(template=generated)
    one_seconds, peak, _ = bench_scale.timed(*monitor_args(single_url, models))
    checked = exactly_once(single_url)
    server.drop(single)
    line(
        "backfill, 1 worker (`monitor.py --once`)",
        f"{one_seconds:.1f} s = {rows / one_seconds:,.0f} rows/s; exactly once: {checked}",
        f"{peak:,.0f} MB",
    )

    at = load()
    scored, scored_url = server.create(template=generated)
    seconds, peaks = timed_together(*[monitor_args(scored_url, models)] * 2)
    checked = exactly_once(scored_url)
    rate, speedup = rows / seconds, one_seconds / seconds
    line(
        "backfill, 2 workers together",
        f"{seconds:.1f} s = {rate:,.0f} rows/s = {speedup:.2f} x 1 worker; exactly once: {checked}",
        " + ".join(f"{p:,.0f}" for p in peaks) + " MB",
        ">= 60,000 rows/s, >= 1.6 x",
        rate >= 60_000 and speedup >= 1.6 and checked == "yes",
    )

    at = load()
    bench_dashboard.ensure_account(scored_url)
    cold, warm = bench_dashboard.render_times(scored_url, models, folder / "credentials.yaml")
    line(
        "overview render cold / warm (median of 5)",
        f"{cold:.2f} s / {warm:.2f} s",
        "",
        "<= 1.5 s / <= 0.3 s",
        cold <= 1.5 and warm <= 0.3,
    )

    at = load()
    p50, p95 = bench_detection.bench_live(
        scored_url, models, live_seconds, rate=500, ready=bench_scale.wait_until_watching
    )
    line(
        f"live insert-to-score p50 / p95 at 500 tx/s ({live_seconds:.0f} s)",
        f"{p50:.3f} s / {p95:.3f} s",
        "",
        "p95 <= 1 s",
        p95 <= 1,
    )

    at = load()
    sqlite_db = folder / "copy-source.db"
    seconds, peak, _ = bench_scale.timed(
        "generate_database.py", "--transactions", rows, "--seed", "1", "--db", sqlite_db,
        "--quiet",
    )  # fmt: skip
    line(
        f"(generate {rows:,} rows into SQLite, for the copy)", f"{seconds:.1f} s", f"{peak:,.0f} MB"
    )

    at = load()
    _, target_url = server.create()
    seconds, peak, _ = bench_scale.timed(
        "-m", "schemewatch", "copy", "--quiet", "--from", sqlite_db, "--to", target_url
    )
    line(
        f"copy {rows:,}-row SQLite -> new PostgreSQL database",
        f"{seconds:.1f} s",
        f"{peak:,.0f} MB",
        "<= 60 s" if rows == 1_000_000 else f"<= {60 * rows / 1_000_000:.0f} s (pro rata)",
        seconds <= 60 * rows / 1_000_000,
    )


def table(lines: list[dict]) -> str:
    out = [
        "| stage | figure | peak RSS | load (1 min) | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in lines:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        out.append(
            f"| {r['stage']} | {r['figure']} | {r['peak']} | {r['load']} | {r['goal']} | {met} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live-seconds", type=float, default=30)
    parser.add_argument(
        "--url",
        default=None,
        help="A PostgreSQL server to use (a URL allowed to create databases); default: a "
        "throwaway cluster of our own. Databases made here are dropped at the end.",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="schemewatch-pg-bench-"))
    server = Server(args.url)
    lines: list[dict] = []
    try:
        measure(server, folder, args.rows, args.live_seconds, lines)
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
        # On a failure, the stages measured before it.
        print(f"\nPostgreSQL benchmark, {args.rows:,} rows, {os.cpu_count()} CPUs:")
        print(table(lines), flush=True)


if __name__ == "__main__":
    main()
