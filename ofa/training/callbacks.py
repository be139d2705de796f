"""Callbacks: a checkpoint at every phase end, and a check that DDP ranks sample the same
sub-networks and end with the same weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ofa.errors import UserError


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
    """Every DDP rank must train the same sub-networks on the same schedule. Before each step the
    ranks compare a digest of the sub-networks they sampled, and at the end a digest of their
    parameters (kept in `digests`); a difference stops the run with one line (a sampler that is
    not seeded from the step, or ranks started with different seeds, would train nonsense)."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size < 2:
            return
        r, archs = pl_module.sample_step(trainer.global_step)
        digest = hashlib.sha256(f"{r}:{[a.key() for a in archs]}".encode()).hexdigest()[:15]
        gathered = pl_module.all_gather(torch.tensor([int(digest, 16)], dtype=torch.int64, device=pl_module.device))
        check_ranks_agree(
            [f"{int(v):015x}" for v in gathered.flatten().tolist()], f"sub-networks of step {trainer.global_step}"
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        digest = parameter_digest(pl_module.supernet)
        code = torch.tensor([int(digest, 16) >> 1], dtype=torch.int64, device=pl_module.device)
        gathered = pl_module.all_gather(code)
        self.digests = [f"{int(v):015x}" for v in gathered.flatten().tolist()]
        check_ranks_agree(self.digests, "parameters at the end of training")


def check_ranks_agree(digests: list[str], what: str) -> None:
    """One line (`UserError`) when the ranks' digests of `what` differ."""
    if len(set(digests)) > 1:
        shown = ", ".join(f"rank {i}: {d}" for i, d in enumerate(digests))
        raise UserError(f"DDP ranks disagree on the {what} ({shown}); stopping: start every rank with the same seed")
