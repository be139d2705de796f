"""Search quality per evaluation on NAS-Bench-201: our sampler vs Optuna's NSGA-II vs random,
and (`--samplers loop ...`) the measurement loop, which answers only with cells it paid a
query for; the direct samplers' n_trials evaluations are the same number of queries.

For each latency column, each evaluation budget (n_trials distinct cells) and each seed,
runs the three samplers on the same table (CIFAR-10 accuracy against the column's latency)
and scores them against the exact answers known by enumerating all 15,625 cells:
hypervolume ratio of the found front, and for latency budgets at the 10th, 25th and 50th
percentile the regret (exact best accuracy under the budget minus the best found, points)
and the share of (budget, seed) pairs where the exact optimum was found.

    .venv/bin/python bench/search_nb201.py [--trials 100 300 1000] [--seeds 5]
        [--columns latency_ms_gold_6226 latency_ms_pixel3] [--samplers refined nsga2 random]
    .venv/bin/python bench/search_nb201.py --samplers loop refined random --trials 50 100 200 300 \
        --seeds 5 --columns latency_ms_gold_6226 latency_ms_titan_rtx_1 latency_ms_pixel3 latency_ms_raspi4
    .venv/bin/python bench/search_nb201.py --held-out --samplers refined random --trials 100 300

`--held-out` runs on the latency columns of twelve devices no rule of the loop was tuned on
(`bench/data/README.md`; `loop_ceiling.py --held-out` runs the loop on the same columns);
`--columns` then picks others of its 22.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from loop_ceiling import load_columns
from rich.progress import Progress
from rich.table import Table

from app.shell import make_console, quiet_optuna
from search.benchmarks.table import TableOracle, loop_search, percentile_budgets, score, table_search
from search.loop import LoopSettings
from search.problem import SearchSettings

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_accuracy_latency.csv"
DEFAULT_COLUMNS = ("latency_ms_gold_6226", "latency_ms_pixel3")


def spread(values: list[float], fmt: str = ".3f") -> str:
    """mean ± std (min-max) of a list."""
    if len(values) == 1:
        return format(values[0], fmt)
    m, s = statistics.mean(values), statistics.stdev(values)
    return f"{m:{fmt}} ± {s:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def one_run(table, args: argparse.Namespace, column: str, settings: SearchSettings, budgets, loop: bool) -> dict:
    """One search and its scores (`loop`: the measurement loop behind an oracle of n_trials queries)."""
    t0 = time.perf_counter()
    if loop:
        oracle = TableOracle(table, args.accuracy, column, settings.n_trials)
        res = loop_search(table, oracle, budgets, LoopSettings(settings.n_trials, seed=settings.seed))
    else:
        res = table_search(table, args.accuracy, column, settings, budgets)
    wall = time.perf_counter() - t0
    sc = score(table, args.accuracy, column, res, budgets)
    return {
        "column": column, "n_trials": settings.n_trials, "seed": settings.seed,
        "sampler": "loop" if loop else settings.sampler,
        "evaluations": res.n_evaluations, "optuna_trials": res.n_trials,
        "hv_ratio": sc.hypervolume_ratio, "mean_regret": sc.mean_regret,
        "regrets": [b.regret for b in sc.budgets],
        "hits": [b.exact_found for b in sc.budgets], "wall_s": wall,
    }  # fmt: skip


def all_runs(table, args: argparse.Namespace, console) -> list[dict]:
    runs = []
    total = len(args.columns) * len(args.trials) * args.seeds * len(args.samplers)
    with quiet_optuna(), Progress(console=console, transient=True) as progress:
        task = progress.add_task("searching", total=total)
        for column in args.columns:
            budgets = percentile_budgets(table.values[column], args.percentiles)
            for n in args.trials:
                for seed in range(args.seeds):
                    for sampler in args.samplers:
                        direct = "refined" if sampler == "loop" else sampler
                        settings = SearchSettings(n, args.population, seed, sampler=direct)
                        runs.append(one_run(table, args, column, settings, budgets, loop=sampler == "loop"))
                        progress.advance(task)
    return runs


def summary(args: argparse.Namespace, runs: list[dict]) -> Table:
    out = Table(title=f"NAS-Bench-201 {args.accuracy}: {args.seeds} seeds, budgets at p{args.percentiles} latency")
    for col in (
        "latency column",
        "evals",
        "sampler",
        "HV ratio",
        "mean regret (points)",
        "exact found",
        "per budget regret",
        "evals/s",
    ):
        out.add_column(col, justify="right" if col not in ("latency column", "sampler") else "left")
    for column in args.columns:
        for n in args.trials:
            for sampler in args.samplers:
                rs = [r for r in runs if r["column"] == column and r["n_trials"] == n and r["sampler"] == sampler]
                hits = [h for r in rs for h in r["hits"]]
                per_budget = np.mean([r["regrets"] for r in rs], axis=0)
                out.add_row(
                    column.removeprefix("latency_ms_"), str(n), sampler,
                    spread([r["hv_ratio"] for r in rs], ".4f"),
                    spread([r["mean_regret"] for r in rs]),
                    f"{100 * np.mean(hits):.0f}% ({sum(hits)}/{len(hits)})",
                    " / ".join(f"{v:.3f}" for v in per_budget),
                    f"{np.median([r['evaluations'] / r['wall_s'] for r in rs]):.0f}",
                )  # fmt: skip
        out.add_section()
    if len(args.columns) > 1:
        for n in args.trials:
            for sampler in args.samplers:
                rs = [r for r in runs if r["n_trials"] == n and r["sampler"] == sampler]
                seeds = sorted({r["seed"] for r in rs})
                per_seed = [float(np.mean([r["mean_regret"] for r in rs if r["seed"] == s])) for s in seeds]
                hits = [h for r in rs for h in r["hits"]]
                out.add_row(f"all {len(args.columns)} columns", str(n), sampler, "", spread(per_seed),
                            f"{100 * np.mean(hits):.0f}% ({sum(hits)}/{len(hits)})", "", "")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--accuracy", default="cifar10_acc")
    parser.add_argument("--columns", nargs="+", help="default: gold_6226 and pixel3; with --held-out its twelve")
    parser.add_argument("--held-out", action="store_true", help="devices the loop was not tuned on (bench/data)")
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=["refined", "nsga2", "random"],
        help="refined, nsga2, random (direct) and loop (search.loop, n_trials = queries)",
    )
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--percentiles", type=float, nargs="+", default=[10, 25, 50])
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()

    console = make_console()
    table = load_columns(parser, args, DEFAULT_COLUMNS)
    runs = all_runs(table, args, console)
    console.print(summary(args, runs))
    console.print("regret: exact best accuracy under the budget minus the best found (mean over budgets, then seeds);")
    console.print("every sampler gets the same number of distinct evaluations; wall times are on a shared CPU.")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
