"""LightningModule training the supernet through the phases of a schedule.

Manual optimisation: each step draws K sub-networks from the current phase, accumulates their
gradients and steps the optimiser once. The draw (and the batch resolution) comes from a
generator seeded by (seed, global step), so every DDP rank trains the same sub-networks and
a resumed run continues the same sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ofa.errors import check_int
from ofa.evaluation import count_correct, recalibrate_bn, resize
from ofa.networks import OFAMobileNetV3
from ofa.seeding import generator
from ofa.space import ArchConfig, MBV3Space
from ofa.training.schedule import Schedule

SAMPLER_STREAM = 0


@dataclass(frozen=True)
class OptimConfig:
    """SGD with Nesterov momentum (OFA's defaults); no weight decay on BN and biases."""

    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    subnet_losses: str = "sum"  # sum: OFA's and BigNAS's accumulation; mean: each loss divided by their number
    label_smoothing_on: str = "all"  # largest: BigNAS's regularise-the-largest-only (the rest learn from it)

    def __post_init__(self) -> None:
        ranges = {
            "momentum": (self.momentum, 0.0 <= _num(self.momentum) < 1.0, "a number in [0, 1)"),
            "weight_decay": (self.weight_decay, _num(self.weight_decay) >= 0.0, "a number >= 0"),
            "label_smoothing": (self.label_smoothing, 0.0 <= _num(self.label_smoothing) < 1.0, "a number in [0, 1)"),
            "grad_clip": (self.grad_clip, self.grad_clip is None or _num(self.grad_clip) > 0, "null or a number > 0"),
        }
        for name, (value, ok, allowed) in ranges.items():
            if not ok:
                raise ValueError(f"optim.{name} = {value!r} is not allowed; allowed: {allowed}")
        if self.subnet_losses not in ("mean", "sum"):
            raise ValueError(f"optim.subnet_losses = {self.subnet_losses!r} is not allowed; allowed: mean, sum")
        if self.label_smoothing_on not in ("largest", "all"):
            raise ValueError(
                f"optim.label_smoothing_on = {self.label_smoothing_on!r} is not allowed; allowed: largest, all"
            )

    def smoothing(self, is_largest: bool) -> float:
        """Label smoothing of one sub-network's cross-entropy."""
        return self.label_smoothing if is_largest or self.label_smoothing_on == "all" else 0.0


def _num(value: object) -> float:
    """A number as a float; NaN (which fails every range test) for anything else."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else float("nan")  # type: ignore[arg-type]


def check_validation_settings(bn_calibration_images: object, panel_random: object) -> None:
    """The validation panel's counts, before any training step."""
    check_int("validation.bn_calibration_images", bn_calibration_images, 1)
    check_int("validation.panel_random", panel_random, 0)


def validation_panel(space: MBV3Space, n_random: int, seed: int = 0) -> dict[str, ArchConfig]:
    """Fixed sub-networks validated every epoch: extremes at both extreme resolutions and a
    few fixed random ones (the same for every run with the same panel seed)."""
    lo, hi = min(space.resolutions), max(space.resolutions)
    panel = {
        "max": space.largest(hi),
        "min": space.smallest(lo),
        "max_rmin": space.largest(lo),
        "min_rmax": space.smallest(hi),
    }
    g = torch.Generator().manual_seed(seed)
    panel.update({f"rand{i}": space.sample(g) for i in range(n_random)})
    return panel


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distillation loss: cross entropy to the teacher's softened distribution, scaled by T^2."""
    t = temperature
    soft = F.softmax(target_logits / t, dim=1)
    return -(soft * F.log_softmax(logits / t, dim=1)).sum(1).mean() * t * t


class SupernetModule(L.LightningModule):
    def __init__(
        self,
        supernet: OFAMobileNetV3,
        schedule: Schedule,
        optim: OptimConfig | None = None,
        seed: int = 0,
        bn_calibration_images: int = 500,
        panel_random: int = 2,
        teacher: nn.Module | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        schedule.validate_against(supernet.space)
        # Channels-last is the fast layout of convolutions on CPUs (oneDNN) and GPUs (cuDNN): on
        # the default space it makes a training step 2-3x faster than NCHW (bench/train_step.py).
        # The batch is converted by `resize`; the values computed are the same.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.supernet = supernet.to(memory_format=self.memory_format)
        if teacher is not None:
            teacher = teacher.to(memory_format=self.memory_format)
        self.schedule = schedule
        self.optim = optim or OptimConfig()
        self.seed = seed
        check_validation_settings(bn_calibration_images, panel_random)
        self.bn_calibration_images = bn_calibration_images
        self.panel = validation_panel(supernet.space, panel_random)
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []  # not a submodule
        self.phases_started: set[int] = set()
        self._val_counts: dict[str, list[int]] = {}
        self._val_nets: dict[str, nn.Module] = {}

    # --- optimiser and phases ------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.supernet.named_parameters():
            (no_decay if p.ndim <= 1 or ".transforms." in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        first_lr = self.schedule.phases[0].lr
        return torch.optim.SGD(groups, lr=first_lr, momentum=self.optim.momentum, nesterov=self.optim.nesterov)

    @property
    def phase_index(self) -> int:
        return self.schedule.phase_index(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        index = self.phase_index
        if index in self.phases_started:
            return
        phase = self.schedule.phases[index]
        if phase.reorganize is not None:
            self.supernet.reorganize_channels(phase.reorganize)
        if self.phases_started:  # a new phase starts with fresh momentum, as OFA's per-phase optimiser
            self.optimizers().optimizer.state.clear()
        self.phases_started.add(index)
        self.print(
            f"phase {index + 1}/{len(self.schedule.phases)}: {phase.name} "
            f"({phase.epochs} epoch{'s' if phase.epochs != 1 else ''}; "
            f"each step trains {phase.step_summary})"
        )

    def on_fit_start(self) -> None:
        if self._teacher:
            self._teacher[0].to(self.device)

    # --- training ----------------------------------------------------------------------
    def sample_step(self, step: int) -> tuple[int, list[ArchConfig]]:
        """Resolution and sub-networks of training step `step` (the same on every rank)."""
        phase = self.schedule.phases[self.phase_index]
        space = phase.space(self.supernet.space)
        g = generator(self.seed, step, SAMPLER_STREAM)
        r = space.resolutions[int(torch.randint(len(space.resolutions), (1,), generator=g))]
        archs = [space.largest(r), space.smallest(r)] if phase.sandwich else []
        archs += [space.sample(g, r=r) for _ in range(phase.random_subnets)]
        return r, archs or [space.largest(r)]

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        index = self.phase_index
        phase = self.schedule.phases[index]
        steps_per_epoch = max(int(self.trainer.num_training_batches), 1)
        position = self.current_epoch - self.schedule.start_epoch(index) + batch_idx / steps_per_epoch
        lr = self.schedule.lr(index, position)
        opt = self.optimizers()
        for group in opt.param_groups:
            group["lr"] = lr

        r, archs = self.sample_step(self.global_step)
        x = resize(x, r)
        largest = self.supernet.space.largest(r)
        kd_ratio = self.schedule.kd_ratio_of(index)
        # Distil when the step trains anything but the largest: from the separate teacher if
        # given, else in place from the largest sub-network's (detached) output.
        distil = kd_ratio > 0 and (bool(self._teacher) or any(a != largest for a in archs))
        target = None
        if distil and self._teacher:
            with torch.no_grad():
                target = self._teacher[0](x)
        elif distil and archs[0] != largest:
            with torch.no_grad():
                self.supernet.set_active_subnet(largest)
                target = self.supernet(x)
        ramp = min(1.0, position / phase.subnet_loss_ramp_epochs) if phase.subnet_loss_ramp_epochs else 1.0

        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=x.device)
        for arch in archs:
            self.supernet.set_active_subnet(arch)
            logits = self.supernet(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.optim.smoothing(arch == largest))
            inplace_teacher = distil and not self._teacher and arch == largest
            if target is not None and not inplace_teacher:
                loss = loss + kd_ratio * soft_cross_entropy(logits, target, self.schedule.kd_temperature)
            elif inplace_teacher and target is None:
                target = logits.detach()
            weight = 1.0 if arch == largest else ramp
            share = 1.0 / len(archs) if self.optim.subnet_losses == "mean" else 1.0
            self.manual_backward(loss * weight * share)
            total = total + loss.detach() / len(archs)
        if self.optim.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.log_dict(
            {"train/loss": total, "train/lr": lr, "train/phase": float(index), "train/resolution": float(r)},
            prog_bar=False,
            on_step=True,
            on_epoch=False,
        )
        self.log("loss", total, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return total

    # --- validation --------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        """Extract each panel sub-network and recalibrate its BN (on the copy: the supernet's
        statistics stay as training left them)."""
        dm = self.trainer.datamodule
        images = dm.calibration_images(self.bn_calibration_images).to(self.device)
        self._val_nets = {}
        for name, arch in self.panel.items():
            net = self.supernet.extract_subnet(arch).to(self.device, memory_format=self.memory_format)
            self._val_nets[name] = recalibrate_bn(net, images, arch.r)
        self._val_counts = {name: [0, 0] for name in self.panel}

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        for name, net in self._val_nets.items():
            correct, total = count_correct(net, [batch], self.panel[name].r)
            self._val_counts[name][0] += correct
            self._val_counts[name][1] += total

    def on_validation_epoch_end(self) -> None:
        for name, (correct, total) in self._val_counts.items():
            counts = torch.tensor([correct, total], dtype=torch.float64, device=self.device)
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            acc = float(counts[0] / counts[1]) if counts[1] > 0 else 0.0
            self.log(f"val/acc_{name}", acc, prog_bar=name in ("max", "min"), sync_dist=False)
        self._val_nets = {}

    # --- checkpoint state beyond weights and optimiser -------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ofa"] = {
            "phases_started": sorted(self.phases_started),
            "space_fingerprint": self.supernet.space.fingerprint(),
            "schedule": self.schedule.name,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ofa", {})
        fingerprint = state.get("space_fingerprint")
        if fingerprint is not None and fingerprint != self.supernet.space.fingerprint():
            raise ValueError(
                f"checkpoint belongs to space {fingerprint}, this supernet is {self.supernet.space.fingerprint()}"
            )
        self.phases_started = set(state.get("phases_started", []))
