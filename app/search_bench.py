"""`ofa-search-bench`: the table benchmark as a Hydra command (config `conf/search_bench.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from app.shell import hydra_command, make_console
from search.benchmarks.table import run_table_benchmark


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


def bench(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or make_console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"searching ({cfg.sampler})", total=int(cfg.n_trials))
        summary = run_table_benchmark(
            cfg.table,
            cfg.accuracy,
            cfg.latency,
            int(cfg.n_trials),
            int(cfg.seed),
            out=Path(cfg.out),
            sampler=str(cfg.sampler),
            population_size=int(cfg.population_size),
            budget_percentiles=[float(q) for q in cfg.budget_percentiles],
            storage=cfg.storage,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console.print(summary_table(summary))
    console.print(
        f"mean regret {summary['mean_regret']:.3f} points, exact optimum found for "
        f"{100 * summary['exact_found_share']:.0f}% of budgets; front of {summary['front_size']} cells; "
        f"{summary['n_optuna_trials']} Optuna trials; {summary['evaluations_per_s']:.0f} evaluations/s"
    )
    console.print(f"written: {Path(cfg.out) / 'front.csv'}, evaluated.csv, summary.json, front.png")
    return summary


@hydra_command("search_bench")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
