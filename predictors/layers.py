"""The layers of OFA's latency lookup table: every distinct layer shape of a space, each with a
module that computes it on its own and that module's input shape."""

from __future__ import annotations

import torch
from torch import nn

from ofa.networks import MobileNetV3, OFAMobileNetV3, layer_costs
from ofa.networks.costs import LayerCost
from ofa.networks.mobilenet_v3 import block_specs
from ofa.space import ArchConfig, MBV3Space

Layer = tuple[LayerCost, nn.Module, tuple[int, ...]]


class _Pooled(nn.Sequential):
    """final_expand followed by the global pool that the network applies after it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).mean((2, 3), keepdim=True)


def network_layers(net: MobileNetV3, batch_size: int) -> list[Layer]:
    """The layers of a static sub-network as `layer_costs` lists them, each with a module that
    computes it on its own and that module's input shape (worked out without running the net)."""
    space, arch = net.space, net.arch
    w = space.widths

    def strided(side: int, stride: int) -> int:
        return (side - 1) // stride + 1

    side = strided(arch.r, space.stem_stride)
    shapes = [(batch_size, space.in_channels, arch.r, arch.r), (batch_size, w["stem"], side, side)]
    for spec in block_specs(space, arch):
        shapes.append((batch_size, spec["in_channels"], side, side))
        side = strided(side, spec["stride"])
    shapes += [
        (batch_size, w["stages"][-1], side, side),
        (batch_size, w["final_expand"], 1, 1),
        (batch_size, w["feature_mix"], 1, 1),
    ]
    modules = [
        net.stem,
        net.first_block,
        *net.blocks,
        _Pooled(net.final_expand),
        net.feature_mix,
        nn.Sequential(nn.Flatten(1), net.classifier),
    ]
    costs = layer_costs(space, arch)
    if not len(costs) == len(modules) == len(shapes):
        raise RuntimeError(f"layer_costs lists {len(costs)} layers but the network has {len(modules)}")
    return list(zip(costs, modules, shapes))


def covering_archs(space: MBV3Space) -> list[ArchConfig]:
    """Archs whose layers hold every distinct layer shape of the space: the full-depth uniform
    arch for each (kernel, expand, resolution). A block's shape depends on its stage, on whether
    it opens the stage, and on (kernel, expand, resolution), all of which these cover."""
    return [
        space.uniform(k, e, space.max_depth, r)
        for r in space.resolutions
        for k in space.kernel_sizes
        for e in space.expand_ratios
    ]


def lut_layers(supernet: OFAMobileNetV3, batch_size: int) -> dict[str, Layer]:
    """Every distinct layer shape of the supernet's space with a module and input shape."""
    out: dict[str, Layer] = {}
    for arch in covering_archs(supernet.space):
        net = supernet.extract_subnet(arch).eval()
        for cost, module, shape in network_layers(net, batch_size):
            out.setdefault(cost.shape, (cost, module, shape))
    return out
