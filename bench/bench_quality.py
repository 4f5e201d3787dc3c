"""Benchmark detection quality: generate, train and evaluate on fresh databases, one per seed.

Goals (issue 8), on every seed: PR-AUC >= 0.92 (mean >= 0.95), every typology's recall at a 1%
alert budget >= 0.85, precision at the model's own threshold >= 0.9, ahead of Isolation Forest.
Features and hyperparameters are chosen on seeds 1-3; seeds 4 and 5 are the untouched check.
Run: .venv/bin/python bench/bench_quality.py [--seeds 1 2 3 4 5] [--transactions 300000]
     .venv/bin/python bench/bench_quality.py --large   (one seed, 1,000,000 rows)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from schemewatch import evaluation, generator, modeling, store  # noqa: E402
from schemewatch.payments import TYPOLOGIES  # noqa: E402

GOALS = {"pr_auc": 0.92, "mean_pr_auc": 0.95, "typology_recall": 0.85, "precision": 0.9}
SHORT = {
    "over_entitlement": "over",
    "duplicate_instalment": "dupl",
    "off_cycle": "offc",
    "burst": "burst",
    "shared_account_ring": "ring",
    "agent_collusion": "agent",
    "payment_after_death": "death",
    "geo_mismatch": "geo",
    "ghost_beneficiary": "ghost",
}


def run_seed(folder: Path, seed: int, transactions: int) -> dict:
    """Generate, train and evaluate one seed; the figures the table shows."""
    db, models = folder / f"seed{seed}.db", folder / f"models{seed}"
    started = time.perf_counter()
    conn = store.open_database(db)
    generator.generate(conn, transactions=transactions, seed=seed)
    conn.close()
    modeling.train(db, models)
    report = evaluation.evaluate(db, models)
    autoencoder, forest = report["models"]["autoencoder"], report["models"]["isolation_forest"]
    return {
        "seed": seed,
        "pr_auc": autoencoder["pr_auc"],
        "roc_auc": autoencoder["roc_auc"],
        "precision": autoencoder["precision"],
        "recall": autoencoder["recall"],
        "recall_1pct": autoencoder["recall_at_budget"]["0.01"],
        "typology": {
            name: autoencoder["per_typology"].get(name, {}).get("recall_at_1pct", float("nan"))
            for name in TYPOLOGIES
        },
        "forest_pr_auc": forest["pr_auc"],
        "seconds": time.perf_counter() - started,
    }


def header() -> str:
    """Column titles of the per-seed table."""
    columns = ["seed", "PR-AUC", "ROC-AUC", "prec@thr", "rec@thr", "rec@1%"]
    columns += [SHORT[t] for t in TYPOLOGIES] + ["IF PR-AUC", "seconds"]
    return " ".join(f"{c:>8}" for c in columns)


def line(label: str, row: dict) -> str:
    """One row of the per-seed table."""
    values = [row["pr_auc"], row["roc_auc"], row["precision"], row["recall"], row["recall_1pct"]]
    values += [row["typology"][t] for t in TYPOLOGIES] + [row["forest_pr_auc"]]
    cells = [f"{label:>8}"] + [f"{v:>8.3f}" for v in values] + [f"{row['seconds']:>8.0f}"]
    return " ".join(cells)


def summary(rows: list[dict], reduce) -> dict:
    """Mean or min over seeds, column by column."""
    keys = ("pr_auc", "roc_auc", "precision", "recall", "recall_1pct", "forest_pr_auc", "seconds")
    out = {k: float(reduce([r[k] for r in rows])) for k in keys}
    out["typology"] = {t: float(reduce([r["typology"][t] for r in rows])) for t in TYPOLOGIES}
    return out


def verdict(rows: list[dict]) -> list[str]:
    """Which goals every seed met, in plain words."""
    lowest = summary(rows, np.min)
    mean = summary(rows, np.mean)
    weakest = min(lowest["typology"], key=lowest["typology"].get)
    checks = [
        ("PR-AUC >= 0.92 on every seed", lowest["pr_auc"] >= GOALS["pr_auc"]),
        ("mean PR-AUC >= 0.95", mean["pr_auc"] >= GOALS["mean_pr_auc"]),
        (
            f"every typology's recall at 1% >= 0.85 (weakest: {weakest} "
            f"{lowest['typology'][weakest]:.3f})",
            lowest["typology"][weakest] >= GOALS["typology_recall"],
        ),
        ("precision at threshold >= 0.9", lowest["precision"] >= GOALS["precision"]),
        (
            "ahead of Isolation Forest on every seed",
            all(r["pr_auc"] > r["forest_pr_auc"] for r in rows),
        ),
    ]
    return [f"  {'met    ' if ok else 'NOT met'}  {text}" for text, ok in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--transactions", type=int, default=300_000)
    parser.add_argument(
        "--large", action="store_true", help="One seed (the first), 1,000,000 rows."
    )
    parser.add_argument("--keep", type=Path, default=None, help="Keep databases and models here.")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.large else args.seeds
    transactions = 1_000_000 if args.large else args.transactions
    folder = args.keep or Path(tempfile.mkdtemp(prefix="schemewatch-quality-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{transactions:,} transactions per seed; seeds {seeds}", flush=True)
    print(header(), flush=True)
    rows = []
    try:
        for seed in seeds:
            rows.append(run_seed(folder, seed, transactions))
            print(line(str(seed), rows[-1]), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if len(rows) > 1:
        print(line("mean", summary(rows, np.mean)))
        print(line("min", summary(rows, np.min)))
    print("\n".join(verdict(rows)))


if __name__ == "__main__":
    main()
