"""How far a perfect model would take the measurement loop on NAS-Bench-201 (issue 17).

The loop (`search/loop.py`) believes two fitted models: extra-trees on measured accuracy and
a cost model on measured latency. This bench runs the same loop, same seeds and queries, with
one or both of them replaced by the table's true values (`loop_search(..., reveal=...)`;
every answer is still a cell paid for through the oracle), and prints the mean regret per
latency column (budgets at the 10th/25th/50th percentile). What separates the fitted arm from
an arm with a known metric is what that model costs the loop. Last, per budget, how many
cells would answer it within 0.2 and 0.03 points of the exact optimum: where that is one or
two, the goal asks the loop to measure that very cell.

The `class` arm tells the loop, instead of each cell's accuracy, the mean accuracy of the cells
that compute the same function (and the training noise within them): a model without error
at that level, blind to which cell of a class trained luckily. What separates it from the
fitted arm is the model's error; what separates it from `accuracy` is the table's noise. A cell
that no other computes like (4,246 of 15,625, the optima of both phones' p50 budgets among them)
is its own class: there the arm is told the cell's own value.

    .venv/bin/python bench/loop_ceiling.py [--queries 100 300] [--seeds 5] [--first-seed 0]
        [--columns latency_ms_gold_6226 latency_ms_pixel3] [--arms fitted latency accuracy both class unscaled]
        [--calibration] [--held-out]

`--held-out` runs the loop on latency columns of twelve devices no rule of the loop was tuned on
(`bench/data/README.md`: HELP's measurements of the same cells; the accuracies stay the table's),
by default 1080ti_1, titanxp_1, gold_6240, silver_4114, eyeriss, samsung_a50, 2080ti_32,
titan_rtx_256, silver_4210r, fpga, pixel2 and essential_ph_1; `--columns` picks others of its 22.

`--calibration` adds, per column and budget over the fitted arm's runs, how its latency model
(refitted on every cell a run measured) sees the unmeasured cells near the limit (0.8-1.25 x)
within a point of the optimum's accuracy: the share that meets the budget against the mean
chance it gives them; and the chance it gives the budget's optimum where a run left it
unmeasured. A change of latency model shows there over five seeds, where telling two loop rules
apart by regret takes 40.

The `unscaled` arm is the fitted arm without the realized-gain discount (`search/realized.py`:
each candidate's expected gain scaled by what the run's earlier picks of its band realized; it
acts from three picks per budget and round, above 100 queries, so the two arms agree at Q <= 100);
with both arms, their paired per-seed difference is printed.

Each arm's per-seed means (over the columns) are printed too, so that two commits can be
compared seed by seed: five seeds do not tell two rules apart, paired differences over 10-20
can.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from app.shell import make_console
from search import nb201
from search.benchmarks.table import ArchTable, TableOracle, load_table, loop_search, percentile_budgets, score
from search.cost_belief import fit_cost
from search.loop import LoopSettings

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_accuracy_latency.csv"
COLUMNS = ("latency_ms_gold_6226", "latency_ms_titan_rtx_1", "latency_ms_pixel3", "latency_ms_raspi4")
# Latencies of the same 15,625 cells on 22 more devices (HELP's NAS-Bench-201 measurements;
# bench/data/README.md): devices the loop's rules were never tuned on. `--held-out` runs these 12.
HELD_OUT_TABLE = Path(__file__).resolve().parent / "data" / "nb201_help_latency.csv.gz"
HELD_OUT_COLUMNS = tuple(
    f"latency_ms_{d}"
    for d in ("1080ti_1", "titanxp_1", "gold_6240", "silver_4114", "eyeriss", "samsung_a50",
              "2080ti_32", "titan_rtx_256", "silver_4210r", "fpga", "pixel2", "essential_ph_1")
)  # fmt: skip
# arm -> the metrics the loop is told. "class": told each cell's class mean accuracy (below).
ARMS = {
    "fitted": (),
    "latency": ("latency",),
    "accuracy": ("accuracy",),
    "both": ("accuracy", "latency"),
    "class": ("accuracy",),
    "unscaled": (),  # fitted, without the realized-gain discount (LoopSettings.realized=False)
}


def class_means(table: ArchTable, accuracy: str) -> tuple[ArchTable, float]:
    """The table with each cell's accuracy replaced by the mean over the cells that compute the
    same function (`nb201.function_keys`), and the pooled standard deviation within those
    classes (the training noise). Told these, the loop has a model without error at the level
    of what a cell computes, blind to which cell of a class trained luckily."""
    rows = np.stack([table.space.row_of(c) for c in table.archs])
    keys = np.unique(nb201.function_keys(rows), return_inverse=True)[1]
    acc = table.values[accuracy]
    means = np.bincount(keys, acc) / np.bincount(keys)
    dof = len(acc) - keys.max() - 1
    noise = float(np.sqrt(np.sum((acc - means[keys]) ** 2) / dof))
    return replace(table, values={**table.values, accuracy: means[keys]}), noise


def with_columns(table: ArchTable, path: Path, columns: list[str]) -> ArchTable:
    """`table` with the latency `columns` of another (gzipped) file that lists the same cells by `arch`."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        have = [c for c in reader.fieldnames or () if c != "arch"]
        missing = [c for c in columns if c not in have]
        if missing:
            raise ValueError(f"--columns {missing[0]} is not in {path.name}; allowed: {', '.join(have)}")
        rows = {table.space.parse(row["arch"]): row for row in reader}
    added = {c: np.array([float(rows[a][c]) for a in table.archs]) for c in columns}
    return replace(table, values={**table.values, **added})


def load_columns(ap: argparse.ArgumentParser, args: argparse.Namespace, defaults: Sequence[str]) -> ArchTable:
    """The table with `args.accuracy` and `args.columns` (set to `defaults`, or with `--held-out`
    to `HELD_OUT_COLUMNS`, where none are given); a column the held-out file lacks ends in `ap.error`."""
    args.columns = args.columns or list(HELD_OUT_COLUMNS if args.held_out else defaults)
    if not args.held_out:
        return load_table(args.table, [args.accuracy, *args.columns])
    try:
        return with_columns(load_table(args.table, [args.accuracy]), HELD_OUT_TABLE, args.columns)
    except ValueError as bad:
        ap.error(str(bad))


def regrets(
    table: ArchTable, accuracy: str, column: str, queries: int, seed: int, arm: str, classes: tuple[ArchTable, float]
) -> list[float]:
    """Regret per budget of one loop run; `classes`: `class_means(table, accuracy)`, what the
    class arm is told. The oracle always reveals the table's own values."""
    return run_arm(table, accuracy, column, queries, seed, arm, classes)[0]


def run_arm(
    table: ArchTable, accuracy: str, column: str, queries: int, seed: int, arm: str, classes: tuple[ArchTable, float]
) -> tuple[list[float], np.ndarray]:
    """`regrets` and the indices (in `table.archs`) of the cells the run measured."""
    budgets = percentile_budgets(table.values[column], (10, 25, 50))
    oracle = TableOracle(table, accuracy, column, queries)
    told, noise = classes if arm == "class" else (table, None)
    settings = LoopSettings(queries, seed=seed, noise=noise, realized=arm != "unscaled")
    result = loop_search(told, oracle, budgets, settings, reveal=ARMS[arm])
    index = {key: i for i, key in enumerate(table.archs)}
    measured = np.array([index[e.key] for e in result.evaluations])
    return [b.regret for b in score(table, accuracy, column, result, budgets).budgets], measured


def cost_calibration(
    table: ArchTable, accuracy: str, column: str, cost_features: np.ndarray, measured: np.ndarray, seed: int
) -> np.ndarray:
    """Per budget, how the loop's latency model fitted on `measured` (every cell a run measured,
    as its next round would) sees the cells that matter: the unmeasured cells within 0.8-1.25 x
    the limit and within a point of the optimum's accuracy. Rows (cells, cells that meet the
    budget, summed P(meets), 1 if the optimum went unmeasured else 0, its P(meets) if so); where
    the two sums part, the chance of meeting is misjudged where the search looks. The optimum's
    own chance is what a lottery budget turns on: titan's p10 optimum, given 0.04-0.32, is found
    in 5 of 5 seeds once floored at 0.5 (`bench/README.md#loop_ceilingpy`, stop 37)."""
    lat, acc = table.values[column], table.values[accuracy]
    belief = fit_cost(cost_features, measured, lat[measured], seed)
    unmeasured = np.ones(len(lat), dtype=bool)
    unmeasured[measured] = False
    out = []
    for budget in percentile_budgets(lat, (10, 25, 50)):
        limit = budget.limits()["latency"]
        p_meets = belief.p_meets(limit)
        optimum = int(np.argmax(np.where(lat <= limit, acc, -np.inf)))
        near = unmeasured & (lat > 0.8 * limit) & (lat < 1.25 * limit) & (acc >= acc[optimum] - 1.0)
        missed = bool(unmeasured[optimum])
        out.append((near.sum(), (lat[near] <= limit).sum(), p_meets[near].sum(), missed, p_meets[optimum] * missed))
    return np.array(out, dtype=float)


def acceptable(table, accuracy: str, column: str, tolerances: tuple[float, ...]) -> list[list[int]]:
    """Per budget and tolerance: how many cells meet the budget within `tol` points of its
    exact optimum, i.e. how many answers would score a regret <= tol."""
    acc, lat = table.values[accuracy], table.values[column]
    out = []
    for budget in percentile_budgets(lat, (10, 25, 50)):
        feasible = acc[lat <= budget.limits()["latency"]]
        out.append([int(np.sum(feasible >= feasible.max() - tol)) for tol in tolerances])
    return out


def cell(per_seed: list[float]) -> str:
    """Mean ± standard error over seeds."""
    if len(per_seed) == 1:
        return f"{per_seed[0]:.3f}"
    return f"{statistics.mean(per_seed):.3f} ± {statistics.stdev(per_seed) / len(per_seed) ** 0.5:.3f}"


def print_calibration(
    console: Console, calibration: dict[tuple[int, str], np.ndarray], queries: list[int], columns: list[str], span: str
) -> None:
    """One table per Q of `cost_calibration`'s sums over seeds: share that meets vs mean P, and
    the optimum's mean P(meets) over the runs that left it unmeasured."""
    for q in queries:
        title = (
            f"Q = {q}, {span}: near each limit, share that meets it vs mean P(meets) from the latency model"
            " (cells); the optimum's mean P(meets) where unmeasured (runs)"
        )
        near = Table(title=title)
        near.add_column("column")
        for name in ("p10", "p25", "p50"):
            near.add_column(name, justify="right")
        for column in columns:
            sums = calibration[(q, column)]
            near.add_row(column, *[_calibration_cell(*row) for row in sums])
        console.print(near)


def _calibration_cell(n: float, met: float, p: float, missed: float, p_optimum: float) -> str:
    """One budget's `cost_calibration` sums as 'share vs mean P (cells)' over 'optimum P (runs)'."""
    band = f"{met / max(n, 1):.2f} vs {p / max(n, 1):.2f} ({n:.0f})"
    optimum = f"optimum {p_optimum / missed:.2f} ({missed:.0f})" if missed else "optimum measured in every run"
    return f"{band}\n{optimum}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("--accuracy", default="cifar10_acc")
    ap.add_argument("--columns", nargs="+", help=f"default: {' '.join(COLUMNS)}")
    held = "latency columns of devices the loop was not tuned on (bench/data; default the 12 of HELD_OUT_COLUMNS)"
    ap.add_argument("--held-out", action="store_true", help=held)
    ap.add_argument("--queries", nargs="+", type=int, default=[100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    what = "after the fitted arm's runs, how its latency model sees the cells near each limit"
    ap.add_argument("--calibration", action="store_true", help=what)
    args = ap.parse_args()
    if args.seeds < 1 or args.first_seed < 0:
        bad = f"--seeds {args.seeds} --first-seed {args.first_seed}"
        ap.error(f"{bad} is not allowed; allowed: --seeds >= 1, --first-seed >= 0")
    if args.calibration and "fitted" not in args.arms:
        ap.error(f"--calibration with --arms {' '.join(args.arms)} is not allowed; allowed: --arms including fitted")
    console = make_console()
    table = load_columns(ap, args, COLUMNS)
    classes = class_means(table, args.accuracy)  # what the class arm is told, computed once
    # results[(arm, Q, column)] = per-seed mean regret over the budgets; per_budget: the same per budget
    results: dict[tuple[str, int, str], list[float]] = {}
    per_budget: dict[tuple[str, int, str], np.ndarray] = {}
    calibration: dict[tuple[int, str], np.ndarray] = {}  # (Q, column) -> summed over seeds
    # The loop's cost features, as `loop_search` builds them for each run: only --calibration needs them here.
    rows = np.stack([table.space.row_of(c) for c in table.archs]) if args.calibration else None
    cost_features = None if rows is None else nb201.cost_features(rows)
    t0 = time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    span = f"seeds {seeds[0]}-{seeds[-1]}"
    total = len(args.arms) * len(args.queries) * len(args.columns) * len(seeds)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loop runs", total=total)
        for q in args.queries:
            for column in args.columns:
                for arm in args.arms:
                    done = [run_arm(table, args.accuracy, column, q, s, arm, classes) for s in seeds]
                    runs = [r for r, _ in done]
                    if args.calibration and arm == "fitted":
                        calibration[(q, column)] = sum(
                            cost_calibration(table, args.accuracy, column, cost_features, m, s)
                            for (_, m), s in zip(done, seeds)
                        )
                    results[(arm, q, column)] = [float(np.mean(r)) for r in runs]
                    per_budget[(arm, q, column)] = np.mean(runs, axis=0)
                    progress.advance(task, args.seeds)
    for q in args.queries:
        title = f"mean regret (points) at Q = {q}, {span}: mean ± s.e.; per budget p10 / p25 / p50"
        out = Table(title=title)
        out.add_column("column")
        for arm in args.arms:
            label = {"fitted": arm, "class": "class means known", "unscaled": "fitted, gains unscaled"}
            out.add_column(label.get(arm, f"{arm} known"), justify="right")
        for column in args.columns:
            out.add_row(
                column,
                *[
                    f"{cell(results[(a, q, column)])}\n" + " / ".join(f"{v:.2f}" for v in per_budget[(a, q, column)])
                    for a in args.arms
                ],
            )
        overall = [
            [float(np.mean([results[(a, q, c)][s] for c in args.columns])) for s in range(args.seeds)]
            for a in args.arms
        ]
        out.add_row("all columns", *[cell(v) for v in overall])
        console.print(out)
        for arm, per_seed in zip(args.arms, overall):
            console.print(f"Q = {q}, {arm}: per-seed means, {span}: {[round(v, 3) for v in per_seed]}")
        if {"fitted", "unscaled"} <= set(args.arms):
            print_paired(console, q, dict(zip(args.arms, overall)))
    if args.calibration:
        print_calibration(console, calibration, args.queries, args.columns, span)
    needles = Table(title="cells whose regret would be <= 0.20 / <= 0.03 points (of 15,625), per budget")
    needles.add_column("column")
    for name in ("p10", "p25", "p50"):
        needles.add_column(name, justify="right")
    for column in args.columns:
        needles.add_row(column, *[f"{a} / {b}" for a, b in acceptable(table, args.accuracy, column, (0.2, 0.03))])
    console.print(needles)
    console.print(f"{total} loop runs in {time.perf_counter() - t0:.0f} s")


def print_paired(console: Console, queries: int, overall: dict[str, list[float]]) -> None:
    """The realized-gain discount's effect, seed by seed (same seeds, same cells at the start)."""
    d = np.array(overall["fitted"]) - np.array(overall["unscaled"])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    console.print(
        f"Q = {queries}, fitted - unscaled (the realized-gain discount): {d.mean():+.3f} ± {se:.3f} per seed; "
        f"better in {(d < 0).sum()}, worse in {(d > 0).sum()} of {len(d)} seeds"
    )


if __name__ == "__main__":
    main()
