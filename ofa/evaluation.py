"""Evaluate a (static) sub-network: resize to its resolution, recalibrate BN, measure accuracy.

BN statistics of a sub-network differ from the supernet's (the supernet's were accumulated
while other sub-networks ran), so a sub-network is evaluated after recomputing them on
training images. Doing this on the extracted copy leaves the supernet's statistics untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

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
    """Replace every BN's running statistics with the exact mean/variance over `images`
    (cumulative average over batches), then return the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), batch_size):
        model(resize(images[start : start + batch_size], resolution))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()


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
