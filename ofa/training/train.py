"""`ofa-train`: every phase of a schedule in one resumable run.

Writes into the run folder: `checkpoints/` (Lightning checkpoints: `last.ckpt`, one per phase
end, loaded with weights_only=True), `supernet.safetensors` (the trained supernet with its
space, for every later command), `metrics.json`, and the logger's files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from app.shell import hydra_command, make_console
from ofa.checkpoint import load_supernet, save_supernet
from ofa.data.datamodule import ImageDataModule
from ofa.io import atomic_write_json
from ofa.networks import OFAMobileNetV3
from ofa.training.callbacks import PhaseEndCheckpoint, RankSyncCheck
from ofa.training.loggers import make_logger
from ofa.training.module import OptimConfig, SupernetModule
from ofa.training.schedule import Schedule

# Checkpoints are taken after the optimiser step on purpose (weights and step agree).
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    global_step: int
    rank_digests: list[str]


def check_data_fits_supernet(dm: ImageDataModule, supernet: OFAMobileNetV3) -> None:
    dm.setup()
    space = supernet.space
    channels = dm.train_set[0][0].shape[0]
    if dm.num_classes != space.num_classes:
        raise ValueError(
            f"supernet has num_classes = {space.num_classes} but dataset {dm.name} has {dm.num_classes}; "
            f"set +supernet.num_classes={dm.num_classes}"
        )
    if channels != space.in_channels:
        raise ValueError(
            f"supernet has in_channels = {space.in_channels} but dataset {dm.name} images have {channels}; "
            f"set +supernet.in_channels={channels}"
        )


def train(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    run_dir = Path(run_dir)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=cfg.seed)
    supernet: OFAMobileNetV3 = hydra.utils.instantiate(cfg.supernet)
    check_data_fits_supernet(dm, supernet)
    schedule = Schedule.from_config(OmegaConf.to_container(cfg.schedule, resolve=True), cfg.get("epochs_per_phase"))
    teacher = None
    if cfg.kd.teacher:
        teacher_net, _ = load_supernet(cfg.kd.teacher, supernet.space)
        teacher = teacher_net.extract_subnet(teacher_net.space.largest())
    module = SupernetModule(
        supernet,
        schedule,
        OptimConfig(**cfg.optim),
        seed=cfg.seed,
        bn_calibration_images=cfg.validation.bn_calibration_images,
        panel_random=cfg.validation.panel_random,
        teacher=teacher,
    )

    ckpt_dir = run_dir / "checkpoints"
    periodic = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=cfg.checkpoint.every_n_train_steps,
    )
    sync = RankSyncCheck()
    logger = make_logger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_epochs=schedule.total_epochs,
        logger=logger,
        default_root_dir=str(run_dir),
        callbacks=[periodic, PhaseEndCheckpoint(ckpt_dir), sync],
    )
    last = ckpt_dir / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from and trainer.is_global_zero:
        print(f"resuming from {last}")
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    result = TrainResult(run_dir, metrics, trainer.global_step, sync.digests)
    if trainer.is_global_zero:
        info = {
            "schedule": schedule.name,
            "phases": [p.name for p in schedule.phases],
            "epochs": schedule.total_epochs,
            "global_step": trainer.global_step,
            "seed": cfg.seed,
            "data": dm.name,
            "metrics": metrics,
        }
        save_supernet(run_dir / "supernet.safetensors", supernet, info)
        atomic_write_json(run_dir / "metrics.json", {**info, "rank_param_digests": sync.digests})
    return result


def results_table(result: TrainResult, supernet_space_name: str) -> Table:
    table = Table(title=f"validation accuracy after training ({supernet_space_name}, BN recalibrated)")
    table.add_column("sub-network")
    table.add_column("accuracy", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key.removeprefix("val/acc_"), f"{100 * value:.2f}%")
    return table


@hydra_command("train")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = train(cfg, run_dir)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        console = make_console()
        console.print(results_table(result, cfg.supernet.get("preset", "custom")))
        console.print(f"supernet: {run_dir / 'supernet.safetensors'} (step {result.global_step})")


if __name__ == "__main__":
    main()
