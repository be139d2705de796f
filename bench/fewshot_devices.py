"""A new device from ten measurements: the transferred latency predictor (predictors.transfer)
against the baselines, leaving one device column of a table out at a time.

For each table and each device column: the other columns are the sources (each replaced by
out-of-fold predictions of a model fitted on its whole column, as a profiled device's predictor
would say; computed once per table), N cells of the left-out column are revealed through
`ofa-fewshot-bench`'s counting oracle, every cell is predicted and scored against the true
column (Spearman's rho and Kendall's tau), mean over seeds. Arms:

- transfer: ours, the N cells chosen by `choose_measurements` (D-optimal on the sources'
  predictions and compact features);
- transfer, random cells: ours fitted on N random cells (what the choice of cells adds);
- no sources: the one-device fallback (ridge mixture on the compact features alone, its own
  D-optimal cells): what the sources add;
- (a) one-hot ridge: a one-device ridge (alpha 1, raw target) on one-hot features, on the same
  N cells as ours;
- (b) source log ridge: ridge (alpha 1) of the log target on the sources' measured
  log-latencies, N random cells (the issue's reference arm);
- ceiling: the left-out column's own predictor fitted on all its other cells (5-fold,
  out-of-fold), i.e. a full profile of the device. A column whose ceiling is low is noisy:
  what it repeats, no predictor can beat (the OFA table's batch-1 and 2080 Ti columns).

Then, on NAS-Bench-201, devices of a kind not among the sources: each phone-class device from
the Xeon and the TITAN RTX alone (the TITAN RTX, the one accelerator, is left out above already).

    .venv/bin/python bench/fewshot_devices.py [--n 10 20] [--seeds 5] [--tables nb201 ofa]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

from app.fewshot_bench import FewshotTable, read_fewshot_table, run_fewshot, smoothed_sources
from predictors.models.base import Standardizer, huber_ridge

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = {
    "nb201": (
        SHARED / "nb201_accuracy_latency.csv",
        ["latency_ms_gold_6226", "latency_ms_titan_rtx_1", "latency_ms_pixel3", "latency_ms_raspi4"],
    ),
    "ofa": (
        SHARED / "ofa_mbv3_gpu_latency.csv",
        ["latency_ms_titan_rtx_b1", "latency_ms_titan_rtx_b32", "latency_ms_2080ti_b1", "latency_ms_2080ti_b32"],
    ),
}
ARMS = ("transfer", "transfer, random cells", "no sources", "(a) one-hot ridge", "(b) source log ridge", "ceiling")
UNSEEN_KINDS = (  # (table, left-out column, sources): no device of the left-out one's kind among the sources
    ("nb201", "latency_ms_pixel3", ("latency_ms_gold_6226", "latency_ms_titan_rtx_1")),
    ("nb201", "latency_ms_raspi4", ("latency_ms_gold_6226", "latency_ms_titan_rtx_1")),
)


def ridge_all(X: np.ndarray, y: np.ndarray, rows: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Ridge (standardised on the fitted rows, unpenalised intercept) fitted on `rows`, predicting every row."""
    scaler = Standardizer.fit(X[rows])
    coef, intercept = huber_ridge(scaler(X[rows]), y[rows], alpha, robust=False)
    return scaler(X) @ coef + intercept


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(stats.spearmanr(pred, truth).statistic), float(stats.kendalltau(pred, truth).statistic)


def one_seed(table: FewshotTable, smooth: np.ndarray, target: str, sources: list[str], n: int, seed: int) -> dict:
    """Every arm's (rho, tau) for one left-out column, its sources, N and seed."""
    names = list(table.columns)
    S = smooth[:, [names.index(c) for c in sources]]
    truth = table.columns[target]
    ours = run_fewshot(table, sources, target, n, seed, "transfer", S)
    rand = run_fewshot(table, sources, target, n, seed, "random", S)
    alone = run_fewshot(table, [], target, n, seed, "transfer", S[:, :0])
    assert ours.spent == rand.spent == alone.spent == n
    onehot = ridge_all(table.onehot, truth, ours.measured)
    random_rows = np.random.default_rng(seed).choice(len(table), n, replace=False)
    logs = np.log(np.column_stack([table.columns[c] for c in sources]))
    source_log = ridge_all(logs, np.log(truth), random_rows)
    return {
        ARMS[0]: (ours.spearman, ours.kendall),
        ARMS[1]: (rand.spearman, rand.kendall),
        ARMS[2]: (alone.spearman, alone.kendall),
        ARMS[3]: scores(onehot, truth),
        ARMS[4]: scores(source_log, truth),
        ARMS[5]: scores(smooth[:, names.index(target)], truth),
    }


def mean_cell(pairs: list[tuple[float, float]]) -> str:
    return f"{statistics.mean(p[0] for p in pairs):.3f} / {statistics.mean(p[1] for p in pairs):.3f}"


def short(column: str) -> str:
    return column.removeprefix("latency_ms_")


def add_rows(out: Table, name: str, table: FewshotTable, smooth: np.ndarray, jobs: list, args) -> None:
    """One row per (left-out column, its sources, N): every arm's mean rho / tau over the seeds."""
    for target, sources, label in jobs:
        for n in args.n:
            runs = [one_seed(table, smooth, target, list(sources), n, seed) for seed in range(args.seeds)]
            worst = min(r[ARMS[0]][0] for r in runs)
            cells = [mean_cell([r[arm] for r in runs]) for arm in ARMS]
            out.add_row(name, short(target), label, str(n), cells[0], f"{worst:.3f}", *cells[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 20], help="measurements of the left-out device")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = ap.parse_args()
    console = Console(width=170)  # one line per row in logs too
    out = Table(title=f"left-out device: Spearman / Kendall tau over all cells, mean of {args.seeds} seeds")
    for col in ("table", "left out", "sources", "N", ARMS[0], "min ρ", *ARMS[1:]):
        out.add_column(col, justify="left" if col in ("table", "left out", "sources") else "right")
    for name in args.tables:
        path, columns = TABLES[name]
        t0 = time.perf_counter()
        table = read_fewshot_table(path, columns)
        smooth = smoothed_sources(table, columns)
        console.print(f"{name}: {len(table)} rows, sources' predictors fitted in {time.perf_counter() - t0:.0f} s")
        jobs = [(c, [s for s in columns if s != c], "the other 3") for c in columns]
        jobs += [(c, list(s), " + ".join(map(short, s))) for t, c, s in UNSEEN_KINDS if t == name]
        add_rows(out, name, table, smooth, jobs, args)
    console.print(out)


if __name__ == "__main__":
    main()
