"""Latency predictors on the shared GPU table: ours vs the one-hot ridge baseline, same rows.

For each latency column of `../shared/data/ofa_mbv3_gpu_latency.csv` (5,000 configs of the
ImageNet OFA-MobileNetV3 space, TITAN RTX and 2080 Ti at batch 1 and 32), fits `ofa-fit`'s
chosen predictor (`model=auto`) and the one-hot ridge baseline on 4,000 rows and scores both
on the other 1,000, under two splits:
  - `ours`:   `ofa-fit`'s own held-out split (`split_seed=0`, `numpy.random.default_rng`);
  - `readme`: the split the data README's baseline figures come from (0.78 / 0.93 / 0.60 /
    0.65): `numpy.random.RandomState(0).permutation`, the first 4,000 rows train.
Prints Kendall tau of both, their ratio, within-10% and the README's quoted baseline tau.

    .venv/bin/python bench/predictor_gpu_table.py [--splits ours readme] [--model auto]
        [--columns latency_ms_titan_rtx_b1 ...] [--out runs/bench/predictor_gpu_table]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from rich.table import Table

from app.shell import make_console
from ofa.io import atomic_write_csv, atomic_write_json
from predictors.fit import FitSettings, fit_predictor

TABLE = Path("../shared/data/ofa_mbv3_gpu_latency.csv")  # relative to the working directory (the repo)
README_BASELINE = {  # the data README's quoted one-hot ridge taus
    "latency_ms_titan_rtx_b1": 0.78,
    "latency_ms_titan_rtx_b32": 0.93,
    "latency_ms_2080ti_b1": 0.60,
    "latency_ms_2080ti_b32": 0.65,
}


def readme_split(table: Path, folder: Path, n_train: int = 4000) -> tuple[Path, Path]:
    """Write the README's split (RandomState(0) permutation, training rows first) as two CSVs."""
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    order = np.random.RandomState(0).permutation(len(rows))
    train, test = folder / "readme_train.csv", folder / "readme_test.csv"
    atomic_write_csv(train, [rows[i] for i in order[:n_train]], header)
    atomic_write_csv(test, [rows[i] for i in order[n_train:]], header)
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--columns", nargs="+", default=list(README_BASELINE))
    parser.add_argument("--splits", nargs="+", choices=["ours", "readme"], default=["ours", "readme"])
    parser.add_argument("--model", default="auto", help="ofa-fit's model= (auto, ridge, gbt, mlp)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/predictor_gpu_table"))
    args = parser.parse_args()
    console = make_console()
    args.out.mkdir(parents=True, exist_ok=True)
    train_csv, test_csv = readme_split(args.table, args.out) if "readme" in args.splits else (None, None)

    rows = []
    for column in args.columns:
        for split in args.splits:
            kwargs = {"test_table": test_csv} if split == "readme" else {"split_seed": 0, "test_fraction": 0.2}
            result = fit_predictor(
                train_csv if split == "readme" else args.table,
                column,
                args.out / f"{column}-{split}",
                FitSettings(model=args.model, plot=False, **kwargs),
                space="ofa_mbv3_w10",
            )
            m, b = result.metrics, result.metrics["baseline_onehot_ridge"]
            rows.append(
                {
                    "column": column,
                    "split": split,
                    "chosen": m["model"],
                    "tau": m["kendall_tau"],
                    "baseline_tau": b["kendall_tau"],
                    "ratio": m["kendall_tau"] / b["kendall_tau"],
                    "readme_baseline_tau": README_BASELINE.get(column),
                    "within_10pct": m["within_10pct"],
                    "baseline_within_10pct": b["within_10pct"],
                    "mape": m["mape"],
                }
            )
            console.print(f"{column} ({split} split): tau {m['kendall_tau']:.3f} vs baseline {b['kendall_tau']:.3f}")

    table = Table(title="Held-out Kendall tau, 4,000 training / 1,000 held-out rows")
    names = ("column (latency_ms_)", "split", "chosen", "ours", "baseline", "ours/baseline", "README baseline")
    names += ("within 10%", "baseline w10%")
    for name in names:
        table.add_column(name, justify="left" if name in (names[0], "split", "chosen") else "right")
    for r in rows:
        quoted = r["readme_baseline_tau"]
        table.add_row(
            r["column"].removeprefix("latency_ms_"),
            r["split"],
            r["chosen"],
            f"{r['tau']:.3f}",
            f"{r['baseline_tau']:.3f}",
            f"{r['ratio']:.3f}",
            "" if quoted is None else f"{quoted:.2f}",
            f"{r['within_10pct']:.3f}",
            f"{r['baseline_within_10pct']:.3f}",
        )
    console.print(table)
    console.print(f"written: {atomic_write_json(args.out / 'summary.json', rows)}")


if __name__ == "__main__":
    main()
