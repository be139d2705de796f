"""`ofa-eval-subnets`: validation accuracy of sampled sub-networks of a trained supernet
(conf/eval_subnets.yaml); the accuracy predictor's training table."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console

from app.progress import progress_bars
from app.shell import hydra_command, make_console
from ofa.checkpoint import check_trained_on, load_supernet, resolve_checkpoint
from ofa.data.datamodule import ImageDataModule
from ofa.training.eval_subnets import check_eval_settings, eval_archs, evaluate_subnets


def run(cfg: DictConfig, console: Console | None = None) -> tuple[Path, list[dict]]:
    """The job on a composed config: (the table's path, its rows)."""
    console = console or make_console()
    check_eval_settings(cfg.n_subnets, cfg.bn_calibration_images)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    supernet, meta = load_supernet(checkpoint)
    check_trained_on(meta, str(cfg.data.name), bool(cfg.allow_other_data))
    data_seed = meta["info"].get("seed", 0) if cfg.data_seed is None else cfg.data_seed
    dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=data_seed)
    output = Path(cfg.output) if cfg.output else checkpoint.parent / "accuracy.csv"
    archs = eval_archs(supernet.space, cfg.n_subnets, cfg.seed)
    with progress_bars(console, "evaluating sub-networks", "validation batches") as (on_progress, on_batch):
        rows = evaluate_subnets(supernet, dm, archs, output, cfg.bn_calibration_images, on_progress, on_batch)
    return output, rows


@hydra_command("eval_subnets")
def main(cfg: DictConfig) -> None:
    console = make_console()
    output, rows = run(cfg, console)
    accs = sorted(float(r["acc"]) for r in rows)
    console.print(
        f"{len(rows)} sub-networks in {output}: accuracy {100 * accs[0]:.2f}% .. {100 * accs[-1]:.2f}% "
        f"(median {100 * accs[len(accs) // 2]:.2f}%)"
    )


if __name__ == "__main__":
    main()
