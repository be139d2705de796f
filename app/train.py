"""`ofa-train`: every phase of a schedule in one resumable run (conf/train.yaml).

Builds the pieces from the config (data, supernet, schedule, module, callbacks, logger,
trainer) and hands them to `ofa.training.train.train_supernet`. Re-running the same command
resumes from `<run_dir>/checkpoints/last.ckpt`.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from app.loggers import make_logger
from app.seeding import seeded
from app.shell import hydra_command, make_console, torch_threads
from ofa.checkpoint import load_supernet
from ofa.data.datamodule import ImageDataModule
from ofa.networks import OFAMobileNetV3
from ofa.training.module import OptimConfig, SupernetModule
from ofa.training.schedule import Schedule
from ofa.training.train import CHECKPOINTS, TrainResult, check_data_fits_supernet, resume_point, train_supernet


def build_module(cfg: DictConfig, supernet: OFAMobileNetV3) -> SupernetModule:
    """The LightningModule of `cfg` (schedule, optimiser, validation panel, KD teacher)."""
    schedule = Schedule.from_config(OmegaConf.to_container(cfg.schedule, resolve=True), cfg.get("epochs_per_phase"))
    teacher = None
    if cfg.kd.teacher:
        teacher_net, _ = load_supernet(cfg.kd.teacher, supernet.space)
        teacher = teacher_net.extract_subnet(teacher_net.space.largest())
    return SupernetModule(
        supernet,
        schedule,
        OptimConfig(**cfg.optim),
        seed=cfg.seed,
        bn_calibration_images=cfg.validation.bn_calibration_images,
        panel_random=cfg.validation.panel_random,
        teacher=teacher,
        channels_last=cfg.get("channels_last", True),
    )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """conf/callbacks/: checkpoint callbacks get `<run_dir>/checkpoints` as their folder."""
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        if node is None:
            continue
        extra = {"dirpath": str(run_dir / CHECKPOINTS)} if "dirpath" in node and not node.dirpath else {}
        callbacks.append(instantiate(node, **extra))
    return callbacks


def train(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    """The `ofa-train` job on a composed `conf/train.yaml` (the pipeline and tests call this)."""
    run_dir = Path(run_dir)
    with torch_threads(cfg.get("threads")), seeded(cfg.seed):
        supernet: OFAMobileNetV3 = hydra.utils.instantiate(cfg.supernet)
        module = build_module(cfg, supernet)  # refuses a bad schedule before any data is read
        dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=cfg.seed)
        check_data_fits_supernet(dm, supernet)
        last, notes = resume_point(run_dir) if cfg.resume else (None, [])  # an unreadable one: refused here
        logger = make_logger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True))
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer,
            max_epochs=module.schedule.total_epochs,
            logger=logger,
            default_root_dir=str(run_dir),
            callbacks=build_callbacks(cfg, run_dir),
        )
        if last is not None and trainer.is_global_zero:
            for note in notes or [f"resuming from {last}"]:
                print(note)  # plain: a path must not be wrapped
        return train_supernet(module, dm, trainer, run_dir, resume_from=last)


def results_table(result: TrainResult, supernet_space_name: str) -> Table:
    table = Table(title=f"validation accuracy after training ({supernet_space_name}, BN recalibrated)")
    table.add_column("sub-network")
    table.add_column("accuracy", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key.removeprefix("val/acc_"), f"{100 * value:.2f}%")
    return table


def _is_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


@hydra_command("train")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = train(cfg, run_dir)
    if _is_main_process():
        console = make_console()
        console.print(results_table(result, cfg.supernet.get("preset", "custom")))
        console.print(f"supernet: {run_dir / 'supernet.safetensors'} (step {result.global_step})")


if __name__ == "__main__":
    main()
