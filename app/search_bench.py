"""`ofa-search-bench`: the table benchmark as a Hydra command (config `conf/search_bench.yaml`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from app.progress import progress_bar
from app.shell import hydra_command, make_console, quiet_optuna
from ofa.errors import check_int
from search.benchmarks.table import TableBenchmark, run_table_benchmark
from search.loop import LoopSettings, RoundReport
from search.problem import SAMPLERS, SearchSettings


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(
        title=(
            f"{summary['sampler']} on {Path(summary['table']).name}: {summary['accuracy']} vs {summary['latency']}, "
            f"{summary['n_evaluations']} evaluations, HV ratio {summary['hypervolume_ratio']:.4f}"
        )
    )
    for col in ("budget", "latency <=", "exact best", "found", "regret", "exact found", "found arch"):
        table.add_column(col, justify="left" if col in ("budget", "found arch") else "right", overflow="fold")
    for b in summary["budgets"]:
        table.add_row(
            b["name"],
            f"{b['limit']:.3f}",
            f"{b['exact_accuracy']:.3f}",
            "-" if b["found_accuracy"] is None else f"{b['found_accuracy']:.3f}",
            f"{b['regret']:.3f}",
            "yes" if b["exact_found"] else "no",
            b["found_arch"] or "-",
        )
    return table


def round_printer(console: Console) -> Callable[[RoundReport], None]:
    """One line per round of the measurement loop: measured so far, best per budget."""

    def show(r: RoundReport) -> None:
        best = ", ".join(f"{name} {'-' if b is None else f'{b[1]:.2f}'}" for name, b in r.best.items())
        console.print(f"round {r.round}: {r.measured} measured (+{r.picked}); best measured per budget: {best}")

    return show


def bench(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or make_console()
    queries = cfg.get("queries")
    check_int("queries", queries, 1, none_ok=True)
    sampler = cfg.sampler or ("loop" if queries else "refined")
    if sampler == "loop" and not queries:
        raise ValueError("sampler = 'loop' needs queries=<Q> (the number of cells it may measure)")
    if sampler not in ("loop", *SAMPLERS):
        raise ValueError(f"sampler = {sampler!r} is not allowed; allowed: loop, {', '.join(SAMPLERS)}")
    direct = "refined" if sampler == "loop" else sampler
    settings = SearchSettings(int(cfg.n_trials), int(cfg.population_size), int(cfg.seed),
                              sampler=direct, storage=cfg.storage)  # fmt: skip
    loop_cfg = cfg.get("loop") or {}
    loop = None
    if sampler == "loop":
        loop = LoopSettings(int(queries), loop_cfg.get("initial"), loop_cfg.get("per_budget"), seed=int(cfg.seed),
                            realized=loop_cfg.get("realized", True))  # fmt: skip
    spec = TableBenchmark(
        cfg.table, cfg.accuracy, cfg.latency, settings, tuple(float(q) for q in cfg.budget_percentiles),
        queries=int(queries) if queries else None, loop=loop,
    )  # fmt: skip
    with quiet_optuna(), progress_bar(console, f"searching ({sampler})") as on_progress:
        summary = run_table_benchmark(spec, out=Path(cfg.out), progress=on_progress, on_round=round_printer(console))
    console.print(summary_table(summary))
    console.print(
        f"mean regret {summary['mean_regret']:.3f} points, exact optimum found for "
        f"{100 * summary['exact_found_share']:.0f}% of budgets; front of {summary['front_size']} cells; "
        + (
            f"{summary['stopped']}"
            if sampler == "loop"
            else f"{summary['n_optuna_trials']} Optuna trials; {summary['evaluations_per_s']:.0f} evaluations/s"
        )
    )
    extra = ", queries.csv" if queries else ""
    console.print(f"written: {Path(cfg.out) / 'front.csv'}, evaluated.csv, summary.json, front.png{extra}")
    return summary


@hydra_command("search_bench")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
