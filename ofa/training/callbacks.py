"""Callbacks: a checkpoint at every phase end, and a check that DDP ranks hold the same weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch


class PhaseEndCheckpoint(L.Callback):
    """Save `phase<i>-<name>.ckpt` when the last epoch of each phase ends."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = pl_module.schedule
        index = schedule.phase_index(trainer.current_epoch)
        if trainer.current_epoch + 1 == schedule.start_epoch(index + 1):
            name = schedule.phases[index].name
            trainer.save_checkpoint(self.dirpath / f"phase{index + 1}-{name}.ckpt", weights_only=False)


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter. (BN running statistics are left out: each rank
    accumulates them over its own batches, and every evaluation recalibrates them anyway.)"""
    h = hashlib.sha256()
    for name, tensor in module.named_parameters():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class RankSyncCheck(L.Callback):
    """At the end of training, gather each rank's parameter digest (kept in `digests`).

    Every rank must train the same sub-networks on the same schedule; differing digests mean
    the ranks diverged (e.g. a sampler that is not seeded from the step)."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        digest = parameter_digest(pl_module.supernet)
        code = torch.tensor([int(digest, 16) >> 1], dtype=torch.int64, device=pl_module.device)
        gathered = pl_module.all_gather(code)
        self.digests = [f"{int(v):015x}" for v in gathered.flatten().tolist()]
