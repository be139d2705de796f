"""Evaluate a (static) sub-network: resize to its resolution, recalibrate BN, measure accuracy.

BN statistics of a sub-network differ from the supernet's (the supernet's were accumulated
while other sub-networks ran), so a sub-network is evaluated after recomputing them on
training images. Doing this on the extracted copy leaves the supernet's statistics untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from ofa.arch import ArchConfig


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a batch to `resolution` x `resolution` (antialiased when shrinking), channels-last:
    on CPUs the depthwise convolutions' backward runs 2-10x faster in that layout."""
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        shrinking = resolution < x.shape[-1]
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrinking)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, resolution: int, batch_size: int = 256) -> nn.Module:
    """Set every BN's running statistics as OFA's `set_running_statistics` does, then return the
    model in eval mode.

    Each batch is normalised with its own mean and biased variance (as in training); a BN's
    running mean and variance become the averages of these per-batch values weighted by batch
    size (not PyTorch's cumulative average, which stores the unbiased variance and weighs every
    batch alike). A BN that sees no batch keeps its statistics; an elastic BN that runs fewer
    channels sets only those.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
    saved = {bn: (bn.running_mean.clone(), bn.running_var.clone()) for bn in bns}
    sums: dict[nn.Module, list] = {}
    hooks = [bn.register_forward_pre_hook(functools.partial(_use_batch_statistics, sums=sums)) for bn in bns]
    model.eval()  # BN then normalises with its running buffers, which the hook sets to the batch's statistics
    try:
        for start in range(0, len(images), batch_size):
            model(resize(images[start : start + batch_size], resolution))
    finally:
        for hook in hooks:
            hook.remove()
        for bn, (mean, var) in saved.items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    for bn, (count, mean_sum, var_sum) in sums.items():
        channels = mean_sum.shape[0]
        bn.running_mean[:channels] = mean_sum / count
        bn.running_var[:channels] = var_sum / count
    return model


def _use_batch_statistics(bn: _BatchNorm, inputs: tuple[torch.Tensor, ...], sums: dict) -> None:
    """Forward pre-hook: put the batch's mean and biased variance (two passes, as the reference:
    PyTorch's fused training kernel sums channels-last inputs with ~1e-5 relative error) in the
    running buffers the eval-mode BN is about to use, and add them, weighted by the batch size,
    to `sums[bn]` = [count, mean sum, variance sum]."""
    x = inputs[0]
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    shape = [1, -1] + [1] * (x.dim() - 2)
    var = (x - mean.view(shape)).square_().mean(dim=dims)  # one temporary the size of x
    channels, n = mean.shape[0], x.shape[0]
    bn.running_mean[:channels] = mean
    bn.running_var[:channels] = var
    if bn not in sums:
        sums[bn] = [n, mean * n, var * n]
    else:
        entry = sums[bn]
        entry[0], entry[1], entry[2] = entry[0] + n, entry[1] + mean * n, entry[2] + var * n


@torch.no_grad()
def count_correct(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], resolution: int
) -> tuple[int, int]:
    """(correct, total) of `model` in eval mode over normalised batches resized to `resolution`."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        pred = model(resize(x, resolution)).argmax(1)
        correct += int((pred == y).sum())
        total += len(y)
    return correct, total


def subnet_accuracy(
    supernet: nn.Module,
    arch: ArchConfig,
    calibration_images: torch.Tensor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[nn.Module, float]:
    """A sub-network of `supernet` (an `OFAMobileNetV3`) extracted, its BN recalibrated on
    `calibration_images`, and its accuracy over the normalised validation `batches`."""
    net = supernet.extract_subnet(arch).to(memory_format=torch.channels_last)  # the fast layout (see resize)
    net = recalibrate_bn(net, calibration_images, arch.r)
    correct, total = count_correct(net, batches, arch.r)
    return net, correct / total
