"""Benchmark: generate and store N transactions (default 1,000,000); prints rows/s.

Goal (issue 2): 1,000,000 transactions generated and stored in <= 20 s on 2 cores.
Run: .venv/bin/python bench/bench_generator.py [--transactions N] [--repeat K]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from schemewatch import generator, store


def one_run(transactions: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        conn = store.open_database(Path(folder) / "bench.db")
        started = time.perf_counter()
        summary = generator.generate(conn, transactions=transactions, seed=seed)
        elapsed = time.perf_counter() - started
        conn.close()
    assert summary.transactions == transactions
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times = [one_run(args.transactions, seed) for seed in range(1, args.repeat + 1)]
    best, median = min(times), statistics.median(times)
    print(
        f"generator: {args.transactions:,} transactions stored; "
        f"median {median:.2f} s ({args.transactions / median:,.0f} rows/s), "
        f"best {best:.2f} s ({args.transactions / best:,.0f} rows/s) over {len(times)} runs; "
        f"goal <= 20 s: {'met' if median <= 20 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
