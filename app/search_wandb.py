"""`ofa-search wandb.enabled=true`: the per-budget table, the evaluated set as a scatter and the
Pareto plot in a W&B run (offline unless the user is logged in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.loggers import wandb_logged_in
from app.search_report import BudgetRow

MODES = ("auto", "online", "offline")


def log_search(wandb_cfg: Any, config: dict[str, Any], out: Path, rows: list[BudgetRow], result: Any) -> None:
    import wandb

    mode = wandb_cfg.mode
    if mode not in MODES:
        raise ValueError(f"wandb.mode = {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    mode = ("online" if wandb_logged_in() else "offline") if mode == "auto" else mode
    run = wandb.init(project=wandb_cfg.project, dir=str(out), mode=mode, job_type="search", config=config)
    try:
        cols = ["budget", "arch", "acc_pred", "acc_meas", "latency_ms_pred", "latency_ms_meas", "macs"]
        table = wandb.Table(columns=cols)
        for r in rows:
            if r.ok:
                table.add_data(r.budget, r.arch, r.predicted.get("acc"), r.measured.get("acc"),
                               r.predicted.get("latency_ms"), r.measured.get("latency_ms"), r.macs)  # fmt: skip
        points = [[e.values["latency_ms"], e.values["acc"]] for e in result.evaluations]
        evaluated = wandb.Table(columns=["latency_ms", "acc"], data=points)
        scatter = wandb.plot.scatter(evaluated, "latency_ms", "acc", title="predicted latency vs accuracy")
        pareto = wandb.Image(str(out / "pareto.png"))
        run.log({"search/choices": table, "search/evaluated": scatter, "search/pareto": pareto})
    finally:
        run.finish()
