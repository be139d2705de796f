"""Training the supernet through every phase of a schedule in one resumable `Trainer.fit`.

The library half of `ofa-train` (the command, which builds these pieces from conf/, is
app/train.py). Writes into the run folder: `checkpoints/` (Lightning checkpoints: `last.ckpt`,
one per phase end, loaded with weights_only=True), `supernet.safetensors` (the trained supernet
with its space, for every later command) and `metrics.json`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L

from ofa.checkpoint import save_supernet
from ofa.data.datamodule import ImageDataModule
from ofa.errors import UserError
from ofa.io import atomic_write_json
from ofa.networks import OFAMobileNetV3
from ofa.training.callbacks import RankSyncCheck
from ofa.training.module import SupernetModule

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    global_step: int
    rank_digests: list[str]


def check_data_fits_supernet(dm: ImageDataModule, supernet: OFAMobileNetV3) -> None:
    """One-line errors when the dataset's classes or channels differ from the supernet's."""
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


def unreadable(checkpoint: Path) -> str | None:
    """Why a Lightning checkpoint (a zip archive, as torch.save writes) cannot be read, or None.
    Every member's CRC is checked, so a truncated or overwritten file is caught before Lightning
    loads it halfway."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"member {bad} fails its CRC check" if bad else None


def resume_point(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The checkpoint a resumed run continues from, and a line for each one skipped: `last.ckpt`,
    or when it is unreadable the newest readable phase-end checkpoint. Refuses (one line) when
    checkpoints exist and none is readable: starting over would overwrite them."""
    folder = Path(run_dir) / CHECKPOINTS
    last = folder / "last.ckpt"
    phases = sorted(folder.glob("phase*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = ([last] if last.is_file() else []) + phases
    notes = []
    for candidate in candidates:
        reason = unreadable(candidate)
        if reason is None:
            if notes:
                notes.append(f"resuming from {candidate} instead (the newest readable checkpoint)")
            return candidate, notes
        notes.append(f"{candidate} is unreadable ({reason})")
    if candidates:
        raise UserError(f"{notes[0]} and no other checkpoint in {folder} is readable; move the folder aside "
                        "to start over, or set resume=false")  # fmt: skip
    return None, []


def train_supernet(
    module: SupernetModule,
    dm: ImageDataModule,
    trainer: L.Trainer,
    run_dir: str | Path,
    resume_from: Path | None = None,
) -> TrainResult:
    """Fit `module` on `dm` with `trainer` (continuing from the Lightning checkpoint `resume_from`
    when given, e.g. `resume_point(run_dir)`), then save the supernet and `metrics.json` on
    rank zero."""
    run_dir = Path(run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    sync = next((c for c in trainer.callbacks if isinstance(c, RankSyncCheck)), None)
    digests = sync.digests if sync is not None else []
    schedule = module.schedule
    summary = {
        "schedule": schedule.name,
        "phases": [p.name for p in schedule.phases],
        "epochs": schedule.total_epochs,
        "global_step": trainer.global_step,
        "seed": module.seed,
        "data": dm.name,
        "metrics": metrics,
    }
    if trainer.is_global_zero:
        save_supernet(run_dir / "supernet.safetensors", module.supernet, summary)
        atomic_write_json(run_dir / "metrics.json", {**summary, "rank_param_digests": digests})
    return TrainResult(run_dir, metrics, trainer.global_step, digests)
