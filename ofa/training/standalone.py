"""Train one sub-network architecture alone, from scratch (the baseline a supernet is judged by)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import count_correct, resize
from ofa.networks import MobileNetV3
from ofa.space import ArchConfig, MBV3Space
from ofa.training.module import OptimConfig


class StandaloneModule(L.LightningModule):
    """A static `MobileNetV3` trained with the supernet's recipe: SGD-Nesterov, linear warm-up
    then cosine, label smoothing, at the architecture's own resolution."""

    def __init__(
        self,
        space: MBV3Space,
        arch: ArchConfig,
        lr: float,
        epochs: int,
        warmup_epochs: float = 1.0,
        optim: OptimConfig | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.arch = space.validate(arch)
        self.net = MobileNetV3(space, arch, dropout)
        self.lr, self.epochs, self.warmup_epochs = lr, epochs, warmup_epochs
        self.optim = optim or OptimConfig()
        _init_like_supernet(self.net)
        self.net.to(memory_format=torch.channels_last)  # the supernet's training layout (the fast one)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(resize(x, self.arch.r)), y, label_smoothing=self.optim.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        correct, total = count_correct(self.net, [batch], self.arch.r)
        self.log("val/acc", correct / total, batch_size=total, prog_bar=True)

    def configure_optimizers(self):
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            momentum=self.optim.momentum,
            nesterov=self.optim.nesterov,
        )
        steps = self.trainer.estimated_stepping_batches
        warmup = self.warmup_epochs / self.epochs * steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(steps - warmup, 1))))

        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"},
        }


@torch.no_grad()
def _init_like_supernet(net: torch.nn.Module) -> None:
    """The supernet's initialisation (He fan-out convs, BN (1, 0), uniform linear, zero biases)."""
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_out = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
            torch.nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            bound = 1.0 / m.weight.shape[1] ** 0.5
            torch.nn.init.uniform_(m.weight, -bound, bound)
            torch.nn.init.zeros_(m.bias)


def train_standalone(
    space: MBV3Space,
    arch: ArchConfig,
    dm: ImageDataModule,
    epochs: int,
    lr: float,
    seed: int = 0,
    limit_train_batches: int | float = 1.0,
) -> float:
    """Validation accuracy of `arch` trained alone for `epochs` epochs."""
    # Weights and dropout draw from torch's generator: seeded here, and restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = StandaloneModule(space, arch, lr, epochs)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_train_batches=limit_train_batches,
            check_val_every_n_epoch=epochs,
            enable_progress_bar=False,
        )
        trainer.fit(module, datamodule=dm)
    return float(trainer.callback_metrics["val/acc"])
